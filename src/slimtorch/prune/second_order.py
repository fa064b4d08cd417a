"""Second-order criteria: Optimal Brain Damage and Optimal Brain Surgeon.

- **OBD** (LeCun et al. 1990): saliency ``s_i = h_ii w_i^2 / 2`` with ``h_ii`` the diagonal of
  the loss Hessian, estimated either by the empirical Fisher ``E[(d log p(y|x) / dw_i)^2]``
  (per-sample gradients, :func:`fisher_diagonal`) or by Hutchinson's estimator
  ``E_z[z * (H z)]`` with Rademacher ``z`` (:func:`hutchinson_diagonal`).
- **OBS** (Hassibi & Stork 1993), layer-wise as in Optimal Brain Compression (Frantar & Alistarh
  2022): for a row ``w`` of a layer with input columns ``X`` the loss ``||w X - w' X||^2`` has
  Hessian ``H = 2 X X^T / n``; removing weight ``q`` costs ``w_q^2 / (2 [H^-1]_qq)`` and the
  other weights move by ``-w_q / [H^-1]_qq * H^-1[:, q]``. :func:`obs_prune` removes weights
  greedily, row by row, choosing how many per row by a global ordering of the costs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from slimtorch.errors import ConfigError
from slimtorch.prune.masks import keep_top
from slimtorch.prune.obs import Batches, InputGram, first_batches, forward_hooks, run_batches

OBS_DAMP = 0.01  # dampening, as a fraction of the mean Hessian diagonal (GPTQ/OBC's percdamp)
OBS_MAX_INPUTS = 2048  # a full d x d inverse Hessian per row is only practical for small d
HUTCHINSON_SAMPLES = 8  # Rademacher probes per calibration batch


def obd_scores(weight: Tensor, hessian_diagonal: Tensor) -> Tensor:
    """OBD saliency ``h_ii * w_i^2 / 2`` (element scores of the weight's shape).

    Example:
        >>> obd_scores(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 4.0])).tolist()
        [2.0, 2.0]
    """
    return 0.5 * hessian_diagonal * weight.detach() ** 2


def fisher_diagonal(
    model: nn.Module, layers: dict[str, nn.Module], batches: Batches, limit: int | None = None
) -> dict[str, Tensor]:
    """Empirical Fisher diagonal of each layer's weight: the mean over samples of the squared
    per-sample gradient of the cross-entropy at the true label (model in eval mode).

    Returns:
        name -> tensor of the weight's shape.
    """
    names = {f"{name}.weight": name for name in layers}
    params = dict(model.named_parameters())
    fixed = {k: v.detach() for k, v in params.items() if k not in names}
    buffers = dict(model.named_buffers())

    def sample_loss(chosen: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        state = {**fixed, **chosen, **buffers}
        out = functional_call(model, state, (x.unsqueeze(0),))  # [1, classes]
        return F.cross_entropy(out, y.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    totals = {k: torch.zeros_like(params[k]) for k in names}
    was_training, n = model.training, 0
    model.eval()
    try:
        for x, y in first_batches(batches, limit):
            grads = per_sample({k: params[k].detach() for k in names}, x, y)
            for k in names:
                totals[k] += grads[k].pow(2).sum(0)
            n += int(x.shape[0])
    finally:
        model.train(was_training)
    if n == 0:
        raise ConfigError("fisher: the calibration loader yielded no samples")
    return {names[k]: t / n for k, t in totals.items()}


def hutchinson_diagonal(
    model: nn.Module,
    layers: dict[str, nn.Module],
    batches: Batches,
    limit: int | None = None,
    samples: int = HUTCHINSON_SAMPLES,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Hutchinson estimate of the Hessian diagonal of the mean cross-entropy per batch,
    ``mean_z z * (H z)`` with Rademacher probes ``z`` (Hessian-vector products by double
    backward), averaged over batches.

    Returns:
        name -> tensor of the weight's shape.
    """
    weights = [layer.weight for layer in layers.values()]
    totals = [torch.zeros_like(w) for w in weights]
    gen = torch.Generator().manual_seed(seed)
    was_training, count = model.training, 0
    model.eval()
    try:
        for x, y in first_batches(batches, limit):
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, weights, create_graph=True)
            for _ in range(samples):
                zs = [torch.randint(0, 2, w.shape, generator=gen).to(w) * 2 - 1 for w in weights]
                hz = torch.autograd.grad(grads, weights, grad_outputs=zs, retain_graph=True)
                for t, z, h in zip(totals, zs, hz, strict=True):
                    t += z * h.detach()
                count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ConfigError("hutchinson: the calibration loader yielded no batches")
    return {name: t / count for name, t in zip(layers, totals, strict=True)}


def damped_inverse(hessian: Tensor, damp: float = OBS_DAMP) -> Tensor:
    """``(H + damp * mean(diag H) * I)^-1`` in float64 (dead inputs get a unit diagonal)."""
    h = hessian.double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    return torch.linalg.inv(h)


def _obs_steps(w: Tensor, hinv: Tensor, counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy OBS on every row at once: row ``r`` removes ``counts[r]`` weights.

    Args:
        w: ``[R, d]`` float64 rows.
        hinv: ``[d, d]`` inverse Hessian shared by all rows.
        counts: ``[R]`` removals per row.

    Returns:
        (updated rows ``[R, d]``, kept mask ``[R, d]``, cost of each step ``[R, d]``).
    """
    rows, d = w.shape
    w, hi = w.clone(), hinv.expand(rows, d, d).clone()  # [R, d], [R, d, d]
    kept = torch.ones(rows, d, dtype=torch.bool)
    costs = torch.zeros(rows, d, dtype=w.dtype)
    for step in range(int(counts.max()) if rows else 0):
        active = counts > step  # [R]
        diag = torch.diagonal(hi, dim1=1, dim2=2)  # [R, d]
        cost = torch.where(kept, w**2 / (2 * diag), torch.inf)  # [R, d]
        q = cost.argmin(dim=1)  # [R]; ties -> lowest index
        r = torch.arange(rows)
        costs[:, step] = cost[r, q]
        col = hi[r, :, q]  # [R, d]
        update = (w[r, q] / diag[r, q]).unsqueeze(1) * col  # [R, d]
        w = torch.where(active.unsqueeze(1), w - update, w)
        w[r[active], q[active]] = 0.0
        kept[r[active], q[active]] = False
        w = torch.where(kept, w, 0.0)  # removed weights stay exactly zero
        outer = col.unsqueeze(2) * hi[r, q, :].unsqueeze(1) / diag[r, q].view(-1, 1, 1)
        hi = torch.where(active.view(-1, 1, 1), hi - outer, hi)
    return w, kept, costs


def obs_prune(
    weight: Tensor, hessian: Tensor, sparsity: float, damp: float = OBS_DAMP
) -> tuple[Tensor, Tensor]:
    """Remove ``sparsity`` of a layer's weights with OBS and compensate with the others.

    Args:
        weight: ``[R, d]`` (rows are output units; reshape a conv weight to ``[out, -1]``).
        hessian: ``[d, d]`` layer-wise Hessian ``2 X X^T / n`` of the inputs.
        sparsity: fraction of all ``R * d`` weights to remove, in [0, 1).
        damp: dampening added to the diagonal, relative to its mean.

    Returns:
        (updated weight of ``weight``'s dtype with zeros where removed, kept mask).

    Example:
        >>> w, h = torch.tensor([[1.0, 0.1]]), torch.eye(2)
        >>> obs_prune(w, h, 0.5)[1].tolist()
        [[True, False]]
    """
    rows, d = weight.shape
    if hessian.shape != (d, d):
        raise ConfigError(f"OBS: Hessian {list(hessian.shape)} does not match weight [{rows}, {d}]")
    if d > OBS_MAX_INPUTS:
        raise ConfigError(f"OBS: {d} inputs per row exceeds the limit {OBS_MAX_INPUTS}")
    hinv = damped_inverse(hessian, damp)
    w = weight.detach().double()
    _, _, costs = _obs_steps(w, hinv, torch.full((rows,), d))
    monotone = costs.cummax(dim=1).values  # removals within a row are taken as a prefix
    removed = ~keep_top(monotone, sparsity)  # the globally cheapest removals
    new_w, kept, _ = _obs_steps(w, hinv, removed.sum(dim=1))
    return new_w.to(weight.dtype), kept


def obs_prune_layers(
    model: nn.Module,
    sparsities: dict[str, float],
    batches: Batches,
    limit: int | None = None,
    damp: float = OBS_DAMP,
) -> dict[str, Tensor]:
    """OBS on each named Linear/Conv2d layer (in place): Hessians from calibration inputs.

    Returns:
        name -> kept mask of the layer's weight shape.
    """
    modules = dict(model.named_modules())
    grams = {name: InputGram(modules[name]) for name in sparsities}
    with forward_hooks({modules[n]: g for n, g in grams.items()}):
        run_batches(model, batches, limit)
    masks = {}
    for name, sparsity in sparsities.items():
        layer = modules[name]
        flat = layer.weight.detach().reshape(layer.weight.shape[0], -1)  # [out, d]
        new_w, kept = obs_prune(flat, grams[name].hessian(), sparsity, damp)
        with torch.no_grad():
            layer.weight.copy_(new_w.reshape(layer.weight.shape))
        masks[name] = kept.reshape(layer.weight.shape)
    return masks
