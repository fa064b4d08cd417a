"""Pruning masks for every granularity: pure functions of a score tensor.

A *granularity* is data, not a flag (the types live in :mod:`slimtorch.core.granularity`,
shared with quantization). Each one partitions a weight tensor into equal-sized
groups that are kept or removed together:

- ``Element()``: every weight alone (fine-grained, Han et al. 2015).
- ``NM(n, m)``: in every block of ``m`` consecutive weights along the input dimension (dim 1:
  ``Linear.weight[out, in]`` and ``Conv2d.weight[out, in, kh, kw]``), keep ``n`` (the 2:4
  pattern of sparse tensor cores is ``NM(2, 4)``).
- ``Vector(axis)``: 1-D slices of the tensor along ``axis`` (``-1``: the rows of each
  ``kh x kw`` kernel, ``-2``: its columns; Mao et al. 2017).
- ``Kernel()``: each whole ``kh x kw`` kernel ``weight[o, i]`` (a 2-D weight has 1x1 kernels).
- ``PerChannel(axis)``: whole output filters (``axis=0``) or input channels (``axis=1``).

Scores are "higher = more important". A mask is a bool tensor of the weight's shape, ``True``
where a weight is kept. The number of removed groups is exactly ``round_half_up(sparsity *
groups)``; ties are broken deterministically: among equal scores the group with the lower
flat index is kept (and in a global ranking, the earlier tensor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from slimtorch.core.granularity import (
    NM,
    Element,
    Granularity,
    Kernel,
    Vector,
)
from slimtorch.errors import ConfigError

REDUCTIONS: tuple[str, ...] = ("sum", "mean", "max")


def num_pruned(groups: int, sparsity: float) -> int:
    """How many of ``groups`` a ``sparsity`` in [0, 1) removes: ``floor(s * groups + 0.5)``.

    Example:
        >>> num_pruned(10, 0.25), num_pruned(10, 0.35), num_pruned(7, 0.0)
        (3, 4, 0)
    """
    check_sparsity(sparsity)
    return min(groups, math.floor(sparsity * groups + 0.5))


def check_sparsity(sparsity: float, what: str = "sparsity") -> float:
    """Return ``sparsity`` if it is a number in [0, 1), else raise ConfigError."""
    ok = isinstance(sparsity, int | float) and not isinstance(sparsity, bool)
    if not (ok and math.isfinite(sparsity) and 0.0 <= sparsity < 1.0):
        raise ConfigError(f"{what} must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def _reduced_dims(ndim: int, g: Granularity) -> tuple[int, ...]:
    """The weight dimensions a granularity's groups span (empty: one weight per group)."""
    if isinstance(g, Element | NM):
        return ()
    if isinstance(g, Kernel):
        return tuple(range(2, ndim))
    if isinstance(g, Vector):
        axis = g.axis % ndim if -ndim <= g.axis < ndim else None
        if axis is None:
            raise ConfigError(f"vector axis {g.axis} is out of range for a {ndim}-D weight")
        return (axis,)
    if not -ndim <= g.axis < ndim:
        raise ConfigError(f"channel axis {g.axis} is out of range for a {ndim}-D weight")
    keep = g.axis % ndim
    return tuple(d for d in range(ndim) if d != keep)


def group_scores(scores: Tensor, granularity: Granularity, reduce: str = "sum") -> Tensor:
    """Aggregate element scores into one score per group.

    Args:
        scores: element scores of a weight's shape.
        granularity: the grouping (``NM`` has no groups to aggregate: scores come back as-is).
        reduce: ``"sum"``, ``"mean"`` or ``"max"`` over each group.

    Returns:
        The group scores: ``scores`` with the group's dimensions reduced away.

    Example:
        >>> from slimtorch.core.granularity import PerChannel
        >>> group_scores(torch.arange(6.0).reshape(2, 3), PerChannel(0)).tolist()
        [3.0, 12.0]
    """
    if reduce not in REDUCTIONS:
        raise ConfigError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    dims = _reduced_dims(scores.ndim, granularity)
    if not dims:
        return scores
    if reduce == "max":
        return scores.amax(dim=dims)
    return scores.sum(dim=dims) if reduce == "sum" else scores.mean(dim=dims)


def expand_group_mask(group_mask: Tensor, granularity: Granularity, shape: torch.Size) -> Tensor:
    """Broadcast a per-group mask back to the weight's ``shape``.

    Example:
        >>> from slimtorch.core.granularity import PerChannel
        >>> keep = torch.tensor([True, False])
        >>> expand_group_mask(keep, PerChannel(0), torch.Size([2, 2])).tolist()
        [[True, True], [False, False]]
    """
    dims = _reduced_dims(len(shape), granularity)
    mask = group_mask
    for d in sorted(dims):
        mask = mask.unsqueeze(d)
    return mask.expand(shape).clone()


def _check_scores(scores: Tensor) -> None:
    if torch.isnan(scores).any():
        raise ConfigError("pruning scores contain NaN")


def keep_top(scores: Tensor, sparsity: float) -> Tensor:
    """Keep all but the ``num_pruned(numel, sparsity)`` lowest scores (ties: lower index kept).

    Args:
        scores: any shape.
        sparsity: fraction of entries to remove, in [0, 1).

    Returns:
        A bool mask of ``scores``' shape.

    Example:
        >>> keep_top(torch.tensor([3.0, 1.0, 1.0, 0.5]), 0.5).tolist()  # tie: index 1 kept
        [True, True, False, False]
    """
    _check_scores(scores)
    flat = scores.reshape(-1)
    n_keep = flat.numel() - num_pruned(flat.numel(), sparsity)
    order = torch.sort(flat, descending=True, stable=True).indices  # ties keep index order
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[order[:n_keep]] = True
    return mask.reshape(scores.shape)


def nm_mask(scores: Tensor, n: int, m: int, dim: int = 1) -> Tensor:
    """Keep the ``n`` highest scores in every block of ``m`` consecutive entries along ``dim``.

    Args:
        scores: at least 2-D (``[out, in, ...]``); ``scores.shape[dim]`` divisible by ``m``.
        n: entries kept per block (``0 < n < m``).
        m: block length.
        dim: the input dimension (1 for ``Linear`` and ``Conv2d`` weights).

    Returns:
        A bool mask with exactly ``n`` True entries per block (ties: lower index kept).

    Example:
        >>> nm_mask(torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.0, 0.0, 5.0, 5.0]]), 2, 4).int().tolist()
        [[0, 1, 1, 0, 0, 0, 1, 1]]
    """
    NM(n, m)  # validates 0 < n < m
    _check_scores(scores)
    if scores.ndim < 2 or scores.shape[dim] % m:
        raise ConfigError(
            f"N:M sparsity ({n}:{m}) needs the input dimension to be a multiple of {m}; "
            f"the weight has shape {list(scores.shape)}"
        )
    moved = scores.movedim(dim, -1)  # [..., in]
    blocks = moved.reshape(*moved.shape[:-1], -1, m)  # [..., in/m, m]
    order = torch.sort(blocks, dim=-1, descending=True, stable=True).indices
    mask = torch.zeros_like(blocks, dtype=torch.bool)
    mask.scatter_(-1, order[..., :n], True)
    return mask.reshape(moved.shape).movedim(-1, dim)


def granular_mask(
    scores: Tensor, granularity: Granularity, sparsity: float = 0.0, reduce: str = "sum"
) -> Tensor:
    """The mask of one weight at ``granularity``: remove the lowest-scoring groups.

    Args:
        scores: element scores of the weight's shape (higher = more important).
        granularity: the grouping; for ``NM`` the sparsity is ``1 - n/m`` and ``sparsity`` is
            ignored.
        sparsity: fraction of groups to remove, in [0, 1).
        reduce: how element scores make a group score (``sum``, ``mean``, ``max``).

    Returns:
        A bool mask of the weight's shape.

    Example:
        >>> w = torch.tensor([[1.0, -2.0], [0.5, 0.1]])
        >>> from slimtorch.core.granularity import PerChannel
        >>> granular_mask(w.abs(), PerChannel(0), 0.5).tolist()
        [[True, True], [False, False]]
    """
    if isinstance(granularity, NM):
        return nm_mask(scores, granularity.n, granularity.m)
    groups = group_scores(scores, granularity, reduce)
    return expand_group_mask(keep_top(groups, sparsity), granularity, scores.shape)


def global_masks(
    scores: Sequence[Tensor], granularity: Granularity, sparsity: float, reduce: str = "sum"
) -> list[Tensor]:
    """One threshold across several weights: remove the lowest-scoring groups of all of them.

    Groups of different tensors compete on their group score, so ``reduce="mean"`` is the
    fair choice when group sizes differ between tensors.

    Args:
        scores: element scores, one tensor per weight.
        granularity: the grouping (``NM`` is per-block already and is refused).
        sparsity: fraction of all groups to remove, in [0, 1).
        reduce: ``sum``, ``mean`` or ``max``.

    Returns:
        One bool mask per weight.

    Example:
        >>> a, b = torch.tensor([4.0, 3.0]), torch.tensor([1.0, 2.0])
        >>> [m.tolist() for m in global_masks([a, b], Element(), 0.5)]
        [[True, True], [False, False]]
    """
    if isinstance(granularity, NM):
        raise ConfigError("a global threshold does not apply to N:M sparsity (fixed per block)")
    groups = [group_scores(s, granularity, reduce) for s in scores]
    flat = torch.cat([g.reshape(-1) for g in groups]) if groups else torch.zeros(0)
    keep = keep_top(flat, sparsity)
    masks, start = [], 0
    for s, g in zip(scores, groups, strict=True):
        part = keep[start : start + g.numel()].reshape(g.shape)
        masks.append(expand_group_mask(part, granularity, s.shape))
        start += g.numel()
    return masks


def sparsity_of(mask: Tensor) -> float:
    """Fraction of False entries of a mask (or of zeros of a weight).

    Example:
        >>> sparsity_of(torch.tensor([True, False, False, True]))
        0.5
    """
    return 1.0 - float((mask != 0).sum()) / max(1, mask.numel())
