"""SparseGPT (Frantar & Alistarh 2023): prune a linear layer and update the surviving weights
to compensate, column block by column block, with the same damped inverse-Hessian Cholesky
factor as GPTQ.

Inside each block of columns the mask is chosen by the OBS saliency ``w^2 / [H^-1]_jj^2``
(unstructured: the lowest fraction of the whole block; N:M: the lowest ``M - N`` of every M
columns of a row, chosen when the solve reaches them), then each column's pruning error is
spread over the columns to its right.

Example:
    >>> import torch
    >>> from slimtorch.llm.compress.gptq import HessianAccumulator
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
from slimtorch.llm.compress.gptq import _prepare, damped_inverse_upper
from slimtorch.llm.compress.wanda import nm_mask, prune_lowest


def _block_mask(w1: torch.Tensor, d1: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Unstructured mask of one block: the lowest ``w^2 / d^2`` over the whole block."""
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
    w, h = _prepare(w, hessian)
    n = w.shape[1]
    u = damped_inverse_upper(h, c.percdamp)
    out = torch.zeros_like(w)
    for i1 in range(0, n, c.block_size):
        i2 = min(i1 + c.block_size, n)
        w1, u1 = w[:, i1:i2].clone(), u[i1:i2, i1:i2]
        d1 = torch.diag(u1)
        mask = _block_mask(w1, d1, c.sparsity) if c.nm is None else torch.zeros_like(w1, dtype=bool)
        err1 = torch.zeros_like(w1)
        for i in range(i2 - i1):
            if c.nm is not None and i % c.nm[1] == 0:
                m = c.nm[1]
                scores = w1[:, i : i + m].pow(2) / d1[i : i + m].pow(2)[None, :]
                mask[:, i : i + m] = nm_mask(scores, c.nm[0], m)
            col = w1[:, i]
            kept = col.masked_fill(mask[:, i], 0.0)
            out[:, i1 + i] = kept
            err = (col - kept) / u1[i, i]
            w1[:, i:] -= err[:, None] * u1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return out
