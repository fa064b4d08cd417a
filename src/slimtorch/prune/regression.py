"""Regression-based channel pruning (He et al. 2017; ThiNet, Luo et al. 2017).

A layer ``Y = W X`` (``X``: input columns, im2col for a conv) is a sum of per-input-channel
contributions ``Z_c = W_c X_c``. Pruning keeps the channels ``S`` that best reconstruct ``Y``:

- ``lasso`` (He et al. 2017): ``min_b ||Y - sum_c b_c Z_c||^2 + alpha |b|_1``; the channels
  are those active on the LARS-LASSO path when ``n_keep`` of them first become nonzero
  (largest ``|b|`` first);
- ``greedy`` (ThiNet): grow the removed set ``T`` one channel at a time, each time adding the
  channel that least increases ``||sum_{c in T} Z_c||^2``.

then solves least squares for the kept weights: ``W_S' = argmin ||Y - W_S' X_S||^2``.

Everything is computed from the input Gram matrix ``M = X X^T`` (``[C k, C k]``, ``k`` = kernel
positions): ``<Z_c, Z_c'> = sum(W_c^T W_c' * M[c, c'])`` and ``W_S' = W M[:, S] M[S, S]^-1``,
so no ``[out * samples, C]`` design matrix is ever built.
"""

from __future__ import annotations

import torch
from sklearn.linear_model import lars_path_gram
from torch import Tensor, nn

from slimtorch.errors import ConfigError
from slimtorch.prune.masks import num_pruned
from slimtorch.prune.obs import Batches, layer_hessians

METHODS: tuple[str, ...] = ("lasso", "greedy")
LSTSQ_RIDGE = 1e-8  # relative ridge on M[S, S] so dead inputs do not make it singular


def contribution_gram(weight: Tensor, gram: Tensor, channels: int) -> Tensor:
    """``G[c, c'] = <Z_c, Z_c'>`` for ``weight [out, C*k]`` and input Gram ``[C*k, C*k]``.

    Example:
        >>> w, m = torch.tensor([[1.0, 2.0]]), torch.eye(2)
        >>> contribution_gram(w, m, 2).tolist()
        [[1.0, 0.0], [0.0, 4.0]]
    """
    w = weight.double()
    k = w.shape[1] // channels
    prod = (w.T @ w) * gram.double()  # [C*k, C*k]
    return prod.reshape(channels, k, channels, k).sum(dim=(1, 3))  # [C, C]


def select_lasso(g: Tensor, n_keep: int, n_samples: int = 1) -> Tensor:
    """Channels active on the LASSO path when ``n_keep`` first become nonzero.

    Args:
        g: ``[C, C]`` contribution Gram (its row sums are ``<Z_c, Y>``).
        n_keep: channels to keep.
        n_samples: rows of the implicit design matrix (scales the path's alphas only).

    Returns:
        A bool mask ``[C]`` with exactly ``n_keep`` True.
    """
    gram = g.numpy()
    _, _, coefs = lars_path_gram(
        Xy=gram.sum(axis=1), Gram=gram, n_samples=n_samples, method="lasso"
    )
    coefs = torch.from_numpy(coefs).abs()  # [C, steps]
    nnz = (coefs > 0).sum(dim=0)
    reached = torch.nonzero(nnz >= n_keep)
    step = int(reached[0]) if len(reached) else coefs.shape[1] - 1
    # rank by |b| at that step, then by contribution energy, then by index (deterministic)
    energy = torch.diagonal(g)
    score = coefs[:, step] * (1 + energy.max()) + energy / (1 + energy.max())
    order = torch.sort(score, descending=True, stable=True).indices
    mask = torch.zeros(g.shape[0], dtype=torch.bool)
    mask[order[:n_keep]] = True
    return mask


def select_greedy(g: Tensor, n_keep: int) -> Tensor:
    """ThiNet: remove channels one by one, minimizing ``||sum_{c in T} Z_c||^2 = 1_T^T G 1_T``.

    Example:
        >>> select_greedy(torch.diag(torch.tensor([3.0, 1.0, 2.0])), 2).tolist()
        [True, False, True]
    """
    c = g.shape[0]
    removed = torch.zeros(c, dtype=torch.bool)
    for _ in range(c - n_keep):
        cross = g[:, removed].sum(dim=1)  # [C]: <Z_c, sum_T Z>
        increase = torch.diagonal(g) + 2 * cross
        increase[removed] = torch.inf
        removed[int(increase.argmin())] = True
    return ~removed


def least_squares_weights(weight: Tensor, gram: Tensor, keep_columns: Tensor) -> Tensor:
    """``argmin ||W X - W' X||^2`` over ``W'`` supported on ``keep_columns`` (zeros elsewhere).

    Args:
        weight: ``[out, d]``.
        gram: ``[d, d]`` input Gram ``X X^T``.
        keep_columns: bool ``[d]``.

    Returns:
        ``[out, d]`` in ``weight``'s dtype.
    """
    w, m = weight.double(), gram.double()
    s = keep_columns
    mss = m[s][:, s]
    ridge = LSTSQ_RIDGE * max(float(torch.diagonal(mss).mean()), 1e-30) if s.any() else 0.0
    solved = torch.linalg.solve(mss + ridge * torch.eye(mss.shape[0], dtype=m.dtype), m[s] @ w.T)
    out = torch.zeros_like(w)
    out[:, s] = solved.T
    return out.to(weight.dtype)


def regression_prune(
    weight: Tensor, gram: Tensor, sparsity: float, method: str = "lasso"
) -> tuple[Tensor, Tensor]:
    """Select a layer's input channels and refit the kept weights.

    Args:
        weight: ``[out, C, ...]`` (Linear or ungrouped Conv2d weight).
        gram: input Gram ``[C*k, C*k]`` in the order of ``weight.reshape(out, -1)``.
        sparsity: fraction of input channels to remove, in [0, 1); at least one is kept.
        method: ``"lasso"`` or ``"greedy"``.

    Returns:
        (new weight of ``weight``'s shape, kept mask of ``weight``'s shape).
    """
    if method not in METHODS:
        raise ConfigError(f"regression method must be one of {', '.join(METHODS)}, got {method!r}")
    channels = weight.shape[1]
    n_keep = max(1, channels - num_pruned(channels, sparsity))
    flat = weight.detach().reshape(weight.shape[0], -1)  # [out, C*k]
    g = contribution_gram(flat, gram, channels)
    keep = select_lasso(g, n_keep) if method == "lasso" else select_greedy(g, n_keep)
    k = flat.shape[1] // channels
    keep_cols = keep.repeat_interleave(k)  # [C*k]
    new_w = least_squares_weights(flat, gram, keep_cols).reshape(weight.shape)
    mask = keep_cols.expand(flat.shape).reshape(weight.shape).clone()
    return new_w, mask


def regression_prune_layers(
    model: nn.Module,
    sparsities: dict[str, float],
    batches: Batches,
    limit: int | None = None,
    method: str = "lasso",
) -> dict[str, Tensor]:
    """Regression channel pruning of each named layer's input channels (in place).

    Returns:
        name -> kept mask of the layer's weight shape.
    """
    modules = dict(model.named_modules())
    hessians = layer_hessians(model, list(sparsities), batches, limit)
    masks = {}
    for name, sparsity in sparsities.items():
        layer, gram = modules[name], hessians[name].gram()
        new_w, masks[name] = regression_prune(layer.weight, gram, sparsity, method)
        with torch.no_grad():
            layer.weight.copy_(new_w)
    return masks
