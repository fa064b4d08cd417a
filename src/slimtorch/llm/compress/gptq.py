"""GPTQ (Frantar et al. 2022): quantize a linear layer column by column, pushing each column's
rounding error onto the columns not yet quantized through the inverse Hessian of the layer's
reconstruction loss ``||X W^T - X Q^T||^2`` (``H = 2 X^T X / n``).

The solve uses the upper Cholesky factor of the damped ``H^-1`` (one factorisation instead of
one inverse update per column) and lazy batch updates: errors are applied inside a block of
columns immediately and to the rest of the matrix once per block. ``act_order`` visits columns
by decreasing ``H`` diagonal; its group scales are then fixed from the original weight before
the solve so that groups stay contiguous columns ("static groups").

Example:
    >>> import torch
    >>> from slimtorch.llm.compress.config import GPTQConfig
    >>> torch.manual_seed(0) and None
    >>> x, w = torch.randn(256, 64), torch.randn(32, 64)
    >>> acc = HessianAccumulator(64); acc.add_batch(x)
    >>> q = gptq_quantize(w, acc.hessian(), GPTQConfig(bits=4, group_size=32))
    >>> q.shape
    torch.Size([32, 64])
"""

from __future__ import annotations

import torch

from slimtorch.llm.compress.config import GPTQConfig
from slimtorch.llm.compress.rtn import dequantize_codes, grouped, qparams, quantize_codes

CHOLESKY_RETRIES = 5  # each retry multiplies the damping by 10
Grid = tuple[torch.Tensor, torch.Tensor]  # (scale, minimum), each (out, groups, 1)


class HessianAccumulator:
    """Running ``H = 2/n * sum x x^T`` over the rows of the inputs seen so far.

    Args:
        columns: the layer's input features.

    Example:
        >>> acc = HessianAccumulator(2)
        >>> acc.add_batch(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        >>> acc.hessian()
        tensor([[1., 0.],
                [0., 1.]])
    """

    def __init__(self, columns: int) -> None:
        self.h = torch.zeros(columns, columns, dtype=torch.float32)
        self.n = 0

    def add_batch(self, x: torch.Tensor) -> None:
        """Add inputs of shape ``(..., columns)``."""
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        m = x.shape[0]
        self.h.mul_(self.n / (self.n + m))
        self.n += m
        x = x * (2.0 / self.n) ** 0.5
        self.h.addmm_(x.T, x)

    def hessian(self) -> torch.Tensor:
        """The accumulated Hessian."""
        return self.h


def damped_inverse_upper(h: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor ``U`` of ``(H + damp I)^-1`` (so ``U^T U`` is the inverse).

    Args:
        h: a symmetric positive semi-definite Hessian (dead columns already given a 1).
        percdamp: damping as a fraction of the mean diagonal.

    Returns:
        ``U``, upper triangular.

    Example:
        >>> u = damped_inverse_upper(torch.eye(2) * 4, 0.01)
        >>> torch.allclose(u.T @ u, torch.eye(2) / 4.04)
        True
    """
    damp = percdamp * float(torch.diag(h).mean())
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    for _ in range(CHOLESKY_RETRIES):
        lower, info = torch.linalg.cholesky_ex(h + damp * eye)
        if int(info) == 0:
            inv = torch.cholesky_inverse(lower)
            return torch.linalg.cholesky(inv, upper=True)
        damp *= 10
    raise torch.linalg.LinAlgError("Hessian is not positive definite even after damping")


def _prepare(w: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of W and H with dead input columns (zero Hessian diagonal) neutralised."""
    w, h = w.clone(), h.to(w.dtype).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    return w, h


class _Grid:
    """Per-column grid lookup: per-channel, static groups, or groups refreshed as reached."""

    def __init__(self, w: torch.Tensor, config: GPTQConfig, grid: Grid | None = None) -> None:
        self.c = config
        self.dynamic = config.group_size is not None and not config.act_order and grid is None
        self.scale = self.minimum = torch.empty(0)
        if grid is not None:
            self.scale, self.minimum = grid
        elif not self.dynamic:
            wg = grouped(w, config.group_size)  # (out, groups, gs)
            self.scale, self.minimum = qparams(wg, config.bits, config.symmetric)

    def params(self, orig_col: int, ahead: torch.Tensor | None) -> tuple:
        """``(scale, minimum)`` of shape ``(out,)`` for the column ``orig_col``."""
        if self.dynamic:
            if orig_col % self.c.group_size == 0:
                assert ahead is not None
                s, m = qparams(ahead[:, : self.c.group_size], self.c.bits, self.c.symmetric)
                self.scale, self.minimum = s[:, 0], m[:, 0]
            return self.scale, self.minimum
        g = 0 if self.c.group_size is None else orig_col // self.c.group_size
        return self.scale[:, g, 0], self.minimum[:, g, 0]


def _ahead(w, w1, err1, u, i1: int, i: int, group_size: int | None) -> torch.Tensor:
    """Current values of the next ``group_size`` columns from block-local column ``i``: those
    past the block get the block's pending (lazy) updates applied on the fly."""
    i2 = i1 + w1.shape[1]
    ahead = w1[:, i:]
    need = (group_size or 0) - ahead.shape[1]
    if need > 0 and i2 < w.shape[1]:
        end = min(i2 + need, w.shape[1])
        rest = w[:, i2:end] - err1[:, :i] @ u[i1 : i1 + i, i2:end]
        ahead = torch.cat([ahead, rest], dim=1)
    return ahead


def gptq_quantize(
    w: torch.Tensor, hessian: torch.Tensor, config: GPTQConfig, grid: Grid | None = None
) -> torch.Tensor:
    """Quantize ``w`` (``(out, in)``) with GPTQ; returns the dequantized weight.

    Args:
        w: the layer weight.
        hessian: ``2/n X^T X`` of the layer's inputs, ``(in, in)``.
        config: bits, grid, block size, damping and column order.
        grid: fixed ``(scale, minimum)`` per output row and group (``qparams`` layout, e.g.
            of a clipped weight); None derives them from ``w`` (refreshed per group as the
            solve reaches it, or static under act-order).

    Returns:
        The quantized-then-dequantized weight, same shape and dtype as ``w``.
    """
    c = config
    w, h = _prepare(w, hessian)
    n = w.shape[1]
    perm = torch.argsort(torch.diag(h), descending=True) if c.act_order else torch.arange(n)
    grid_ = _Grid(w, c, grid)
    w, h = w[:, perm], h[perm][:, perm]
    u = damped_inverse_upper(h, c.percdamp)
    q = torch.zeros_like(w)
    for i1 in range(0, n, c.block_size):
        i2 = min(i1 + c.block_size, n)
        w1, u1 = w[:, i1:i2].clone(), u[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        for i in range(i2 - i1):
            col = w1[:, i]
            ahead = _ahead(w, w1, err1, u, i1, i, config.group_size) if grid_.dynamic else None
            scale, minimum = grid_.params(int(perm[i1 + i]), ahead)
            qc = dequantize_codes(
                quantize_codes(col, scale, minimum, c.bits, c.symmetric), scale, minimum
            )
            q[:, i1 + i] = qc
            err = (col - qc) / u1[i, i]
            w1[:, i:] -= err[:, None] * u1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return q[:, torch.argsort(perm)]
