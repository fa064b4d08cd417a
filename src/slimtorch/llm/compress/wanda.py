"""Pruning masks for LLM linears: magnitude and Wanda (Sun et al. 2023), unstructured or N:M.

Wanda scores each weight by ``|W_ij| * ||X_j||_2`` (its magnitude times the L2 norm of its
input feature over the calibration tokens) and removes the lowest scores *within each output
row*; magnitude pruning removes the smallest ``|W|`` over the whole layer. N:M keeps the N
highest scores in every M consecutive input columns of a row (2:4 and 4:8 are 50% sparse:
``slimtorch.prune.masks.nm_mask``); the input norms come from
``slimtorch.quantize.calibration.InputNormAccumulator``.

Example:
    >>> import torch
    >>> w = torch.tensor([[1.0, -3.0, 0.5, 2.0]])
    >>> magnitude_prune(w, MagnitudeConfig(nm=(2, 4)))
    tensor([[ 0., -3.,  0.,  2.]])
"""

from __future__ import annotations

import torch

from slimtorch.llm.compress.config import MagnitudeConfig, WandaConfig
from slimtorch.prune.masks import nm_mask
from slimtorch.quantize.calibration import InputNormAccumulator


def prune_lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean mask (True = pruned) of the ``count`` lowest scores along the last dimension.

    Args:
        scores: importance scores; a 1-D tensor is one pool, a 2-D one is one pool per row.
        count: how many to prune in each pool.

    Returns:
        The mask, same shape as ``scores``.

    Example:
        >>> prune_lowest(torch.tensor([[3.0, 1.0, 2.0]]), 1)
        tensor([[False,  True, False]])
    """
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if count > 0:
        idx = torch.topk(scores, count, dim=-1, largest=False).indices
        mask.scatter_(-1, idx, True)
    return mask


def _pruned(scores: torch.Tensor, sparsity: float, nm: tuple[int, int] | None, per_row: bool):
    """Positions to zero: the complement of N:M's kept entries, or the lowest scores."""
    if nm is not None:
        return ~nm_mask(scores, *nm)
    if per_row:
        return prune_lowest(scores, int(scores.shape[1] * sparsity))
    flat = prune_lowest(scores.reshape(-1), int(scores.numel() * sparsity))
    return flat.reshape(scores.shape)


def magnitude_prune(w: torch.Tensor, config: MagnitudeConfig) -> torch.Tensor:
    """Zero the smallest-magnitude weights of one layer (per layer, or N:M per row).

    Args:
        w: weight ``(out, in)``.
        config: sparsity or N:M pattern.

    Returns:
        The pruned weight.
    """
    return w.masked_fill(_pruned(w.abs(), config.sparsity, config.nm, per_row=False), 0.0)


def wanda_prune(w: torch.Tensor, input_norms: torch.Tensor, config: WandaConfig) -> torch.Tensor:
    """Zero the weights with the lowest ``|W| * ||X||`` in each output row (or N:M group).

    Args:
        w: weight ``(out, in)``.
        input_norms: ``||X_j||_2`` per input feature, ``(in,)``.
        config: sparsity or N:M pattern.

    Returns:
        The pruned weight.

    Example:
        >>> w = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
        >>> wanda_prune(w, torch.tensor([1.0, 9.0]), WandaConfig(sparsity=0.5))
        tensor([[0., 1.],
                [0., 1.]])
    """
    scores = w.abs() * input_norms.to(w.dtype)[None, :]
    return w.masked_fill(_pruned(scores, config.sparsity, config.nm, per_row=True), 0.0)


def wanda_observer(columns: int) -> InputNormAccumulator:
    """The statistics Wanda needs of a layer's inputs: ``||X_j||_2`` per input feature."""
    return InputNormAccumulator(columns)


def wanda_solve(
    w: torch.Tensor, observer: InputNormAccumulator, config: WandaConfig
) -> torch.Tensor:
    """:func:`wanda_prune` with the norms ``observer`` gathered.

    Example:
        >>> acc = wanda_observer(2); acc.add_batch(torch.tensor([[1.0, 9.0]]))
        >>> wanda_solve(torch.ones(1, 2), acc, WandaConfig(sparsity=0.5))
        tensor([[0., 1.]])
    """
    return wanda_prune(w, observer.norms(), config)
