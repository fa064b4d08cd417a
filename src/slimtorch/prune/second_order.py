"""Second-order criteria: Optimal Brain Damage and Optimal Brain Surgeon.

- **OBD** (LeCun et al. 1990): saliency ``s_i = h_ii w_i^2 / 2`` with ``h_ii`` the diagonal of
  the loss Hessian, estimated either by the empirical Fisher ``E[(d log p(y|x) / dw_i)^2]``
  (per-sample gradients, :func:`fisher_diagonal`) or by Hutchinson's estimator
  ``E_z[z * (H z)]`` with Rademacher ``z`` (:func:`hutchinson_diagonal`).
- **OBS** (Hassibi & Stork 1993), layer-wise as in Optimal Brain Compression (Frantar & Alistarh
  2022): for a row ``w`` of a layer with input columns ``X`` the loss ``||w X - w' X||^2`` has
  Hessian ``H = 2 X X^T / n``; removing weight ``q`` costs ``w_q^2 / (2 [H^-1]_qq)`` and the
  other weights move by ``-w_q / [H^-1]_qq * H^-1[:, q]``. :func:`obs_prune` removes weights
  greedily, row by row, the same number per row. Hessians and the damped inverse (Cholesky, as
  GPTQ) come from ``slimtorch.quantize.calibration``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from slimtorch.errors import ConfigError
from slimtorch.prune.masks import num_pruned
from slimtorch.prune.obs import Batches, first_batches, layer_hessians
from slimtorch.quantize.calibration import damped_inverse

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


def obs_prune_row(w: Tensor, hinv: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Greedy OBS on one row: remove ``count`` weights, compensating with the others.

    Args:
        w: ``[d]`` float64 row.
        hinv: ``[d, d]`` inverse Hessian (copied, not changed).
        count: weights to remove.

    Returns:
        (updated row ``[d]`` with zeros where removed, kept mask ``[d]``).
    """
    w, hi = w.clone(), hinv.clone()
    kept = torch.ones(w.shape[0], dtype=torch.bool)
    for _ in range(count):
        diag = torch.diagonal(hi)
        cost = torch.where(kept, w**2 / (2 * diag), torch.inf)  # loss increase per removal
        q = int(cost.argmin())  # ties -> lowest index
        col = hi[:, q].clone()  # [d]
        w.sub_(col * (w[q] / diag[q]))
        kept[q] = False
        w[~kept] = 0.0  # removed weights stay exactly zero
        hi.sub_(torch.outer(col, col) / col[q])  # H^-1 of the remaining weights (Schur)
    return w, kept


def obs_prune(
    weight: Tensor, hessian: Tensor, sparsity: float, damp: float = OBS_DAMP
) -> tuple[Tensor, Tensor]:
    """Remove ``sparsity`` of a layer's weights with OBS and compensate with the others.

    Every row loses the same number of weights (``num_pruned(R * d, sparsity)`` spread evenly,
    the first rows taking the remainder), so the layer's sparsity is exact.

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
    hinv = damped_inverse(hessian.double(), damp)  # dead inputs get a unit diagonal
    total = num_pruned(rows * d, sparsity)
    new_w = torch.zeros(rows, d, dtype=torch.float64)
    kept = torch.ones(rows, d, dtype=torch.bool)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny per-step ops: threading overhead dominates (10x slower)
    try:
        for r in range(rows):
            count = total // rows + (1 if r < total % rows else 0)
            new_w[r], kept[r] = obs_prune_row(weight[r].detach().double(), hinv, count)
    finally:
        torch.set_num_threads(threads)
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
    hessians = layer_hessians(model, list(sparsities), batches, limit)
    masks = {}
    for name, sparsity in sparsities.items():
        layer = modules[name]
        flat = layer.weight.detach().reshape(layer.weight.shape[0], -1)  # [out, d]
        new_w, kept = obs_prune(flat, hessians[name].hessian(), sparsity, damp)
        with torch.no_grad():
            layer.weight.copy_(new_w.reshape(layer.weight.shape))
        masks[name] = kept.reshape(layer.weight.shape)
    return masks
