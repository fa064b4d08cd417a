"""SparseGPT (Frantar & Alistarh 2023): prune a linear layer and update the surviving weights
to compensate, column block by column block, with the same damped inverse-Hessian Cholesky
factor and column sweep as GPTQ (``slimtorch.quantize.calibration``).

Inside each block of columns the mask is chosen by the OBS saliency ``w^2 / [H^-1]_jj^2``
(unstructured: the lowest fraction of the whole block; N:M: the lowest ``M - N`` of every M
columns of a row, chosen when the solve reaches them), then each column's pruning error is
spread over the columns to its right.

Example:
    >>> import torch
    >>> from slimtorch.quantize.calibration import HessianAccumulator
    >>> torch.manual_seed(0) and None
    >>> x, w = torch.randn(128, 16), torch.randn(4, 16)
    >>> acc = HessianAccumulator(16); acc.add_batch(x)
    >>> p = sparsegpt_prune(w, acc.hessian(), SparseGPTConfig(nm=(2, 4)))
    >>> int((p == 0).sum())
    32
"""

from __future__ import annotations

import torch

from slimtorch.errors import ConfigError
from slimtorch.llm.compress.config import SparseGPTConfig
from slimtorch.llm.compress.wanda import prune_lowest
from slimtorch.prune.masks import nm_mask
from slimtorch.quantize.calibration import (
    HessianAccumulator,
    Sweep,
    damped_inverse_upper,
    neutralize_dead_inputs,
    solve_columns,
)


def _block_pruned(w1: torch.Tensor, d1: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Unstructured pruned positions of one block: the lowest ``w^2 / d^2`` of the block."""
    scores = (w1.pow(2) / d1.pow(2)[None, :]).reshape(-1)
    return prune_lowest(scores, int(scores.numel() * sparsity)).reshape(w1.shape)


def sparsegpt_prune(
    w: torch.Tensor, hessian: torch.Tensor, config: SparseGPTConfig
) -> torch.Tensor:
    """Prune ``w`` (``(out, in)``) with SparseGPT; returns the pruned, updated weight.

    Args:
        w: the layer weight.
        hessian: ``2/n X^T X`` of the layer's inputs.
        config: sparsity or N:M, block size and damping.

    Returns:
        The new weight: exactly the requested zeros, the other weights updated.
    """
    c = config
    if c.nm is not None and c.block_size % c.nm[1]:
        raise ConfigError(f"block_size: {c.block_size} must be a multiple of M={c.nm[1]}")
    w, h = neutralize_dead_inputs(w, hessian)
    u = damped_inverse_upper(h, c.percdamp)
    pruned = torch.zeros(0, dtype=torch.bool)  # the current block's pruned positions

    def rule(sweep: Sweep, i: int) -> torch.Tensor:
        nonlocal pruned
        w1, j, b = sweep.block, sweep.start, sweep.block.shape[1]
        d1 = torch.diag(u[j : j + b, j : j + b])  # U's diagonal, SparseGPT's [H^-1]_jj
        if i == 0:
            pruned = torch.zeros_like(w1, dtype=torch.bool)
            if c.nm is None:
                pruned = _block_pruned(w1, d1, c.sparsity)
        if c.nm is not None and i % c.nm[1] == 0:
            m = c.nm[1]
            scores = w1[:, i : i + m].pow(2) / d1[i : i + m].pow(2)[None, :]
            pruned[:, i : i + m] = ~nm_mask(scores, c.nm[0], m)
        return w1[:, i].masked_fill(pruned[:, i], 0.0)

    return solve_columns(w, u, c.block_size, rule)


def sparsegpt_solve(
    w: torch.Tensor, observer: HessianAccumulator, config: SparseGPTConfig
) -> torch.Tensor:
    """:func:`sparsegpt_prune` with the Hessian ``observer`` gathered (see ``gptq_observer``)."""
    return sparsegpt_prune(w, observer.hessian(), config)
