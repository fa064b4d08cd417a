"""Calibrate, then solve: the statistics and second-order kit shared by ``prune/`` (OBS) and
``llm/compress/`` (GPTQ, SparseGPT, AWQ, Wanda).

- **Observers** gather statistics of a layer's inputs batch by batch (``add_batch(x)`` with
  ``x`` of shape ``(..., columns)``): :class:`HessianAccumulator` (``H = 2 X^T X / n``, the
  Hessian of a linear layer's reconstruction loss ``||X W^T - X W'^T||^2 / n``),
  :class:`InputNormAccumulator` (``||X_j||_2``, Wanda) and :class:`AbsMeanAccumulator`
  (mean ``|x_j|``, AWQ's activation scale).
- :func:`damped_inverse` / :func:`damped_inverse_upper`: ``(H + damp I)^-1`` through a
  Cholesky factorisation, ``damp`` a fraction of the mean diagonal, raised tenfold while the
  factorisation fails (dead inputs, ``H_jj = 0``, get a unit diagonal first).
- :func:`solve_columns`: the column sweep of Optimal Brain Compression / GPTQ / SparseGPT
  (Frantar et al. 2022, 2023): visit the columns in order, let a rule choose each column's new
  value (rounded, or pruned), and push the error onto the columns not yet visited through the
  upper Cholesky factor ``U`` of ``H^-1``, with lazy batch updates per block of columns.

Example:
    >>> import torch
    >>> acc = HessianAccumulator(2)
    >>> acc.add_batch(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    >>> acc.hessian()
    tensor([[1., 0.],
            [0., 1.]])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

CHOLESKY_RETRIES = 5  # each retry multiplies the damping by 10


class Observer(Protocol):
    """Anything that accumulates statistics of inputs ``(..., columns)``, batch by batch."""

    def add_batch(self, x: Tensor) -> None:
        """Take one batch of inputs into account."""


class HessianAccumulator:
    """Running ``H = 2/n * sum x x^T`` over the rows of the inputs seen so far (IST-DASLab
    GPTQ's running update: the old sum is rescaled, so ``H`` stays an average).

    Args:
        columns: the layer's input features.
        dtype: accumulation dtype (float32 as GPTQ; float64 for OBS on small layers).

    Example:
        >>> acc = HessianAccumulator(1)
        >>> acc.add_batch(torch.tensor([[1.0], [3.0]])); acc.add_batch(torch.tensor([[2.0]]))
        >>> round(acc.hessian().item(), 4), acc.count  # 2/3 (1 + 9 + 4)
        (9.3333, 3)
    """

    def __init__(self, columns: int, dtype: torch.dtype = torch.float32) -> None:
        self.h = torch.zeros(columns, columns, dtype=dtype)
        self.count = 0

    def add_batch(self, x: Tensor) -> None:
        """Add inputs of shape ``(..., columns)``."""
        x = x.reshape(-1, x.shape[-1]).to(self.h.dtype)
        m = x.shape[0]
        self.h.mul_(self.count / (self.count + m))
        self.count += m
        x = x * (2.0 / self.count) ** 0.5
        self.h.addmm_(x.T, x)

    def hessian(self) -> Tensor:
        """The accumulated Hessian ``(columns, columns)`` (zeros before any batch)."""
        return self.h

    def gram(self) -> Tensor:
        """The Gram matrix ``X^T X = H n / 2`` of the inputs seen (least-squares problems)."""
        return self.h * (self.count / 2)


class InputNormAccumulator:
    """Running sum of squares of each input feature (``||X_j||_2^2`` over all tokens seen).

    Example:
        >>> acc = InputNormAccumulator(2); acc.add_batch(torch.tensor([[3.0, 0.0], [4.0, 1.0]]))
        >>> acc.norms()
        tensor([5., 1.])
    """

    def __init__(self, columns: int) -> None:
        self.sq = torch.zeros(columns, dtype=torch.float64)

    def add_batch(self, x: Tensor) -> None:
        """Add inputs of shape ``(..., columns)``."""
        x = x.reshape(-1, x.shape[-1]).to(torch.float64)
        self.sq += x.pow(2).sum(0)

    def norms(self) -> Tensor:
        """The L2 norm of each input feature (float32)."""
        return self.sq.sqrt().to(torch.float32)


class AbsMeanAccumulator:
    """Mean ``|x_j|`` of each input feature over every token seen (float32 sums).

    Example:
        >>> acc = AbsMeanAccumulator(); acc.add_batch(torch.tensor([[1.0, -3.0], [3.0, 1.0]]))
        >>> acc.mean()
        tensor([2., 2.])
    """

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0

    def add_batch(self, x: Tensor) -> None:
        """Add inputs of shape ``(..., columns)``."""
        x = x.reshape(-1, x.shape[-1]).abs().float()
        self.total = x.sum(0) if self.total is None else self.total + x.sum(0)
        self.count += x.shape[0]

    def mean(self) -> Tensor:
        """Mean absolute value per feature ``(columns,)``."""
        if self.total is None:
            raise ValueError("AbsMeanAccumulator: no batch was added")
        return self.total / self.count


def damped_inverse(h: Tensor, percdamp: float) -> Tensor:
    """``(H + damp I)^-1`` with ``damp = percdamp * mean(diag H)``, by Cholesky factorisation.

    Dead inputs (``H_jj = 0``) get ``H_jj = 1`` first; while the factorisation fails the
    damping is multiplied by 10 (at most ``CHOLESKY_RETRIES`` tries).

    Args:
        h: a symmetric positive semi-definite Hessian (not modified).
        percdamp: damping as a fraction of the mean diagonal (>= 0).

    Returns:
        The inverse, in ``h``'s dtype.

    Example:
        >>> torch.allclose(damped_inverse(torch.eye(2) * 4, 0.01), torch.eye(2) / 4.04)
        True
    """
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    damp = percdamp * float(torch.diag(h).mean())
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    for _ in range(CHOLESKY_RETRIES):
        lower, info = torch.linalg.cholesky_ex(h + damp * eye)
        if int(info) == 0:
            return torch.cholesky_inverse(lower)
        damp *= 10
    raise torch.linalg.LinAlgError("Hessian is not positive definite even after damping")


def damped_inverse_upper(h: Tensor, percdamp: float) -> Tensor:
    """Upper Cholesky factor ``U`` of :func:`damped_inverse` (``U^T U = (H + damp I)^-1``).

    Example:
        >>> u = damped_inverse_upper(torch.eye(2) * 4, 0.01)
        >>> torch.allclose(u.T @ u, torch.eye(2) / 4.04)
        True
    """
    return torch.linalg.cholesky(damped_inverse(h, percdamp), upper=True)


def neutralize_dead_inputs(w: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """Copies of ``W`` ``(out, in)`` and ``H`` with dead inputs (zero Hessian diagonal) given a
    unit diagonal and zero weights (they never reach the output).

    Example:
        >>> w, h = neutralize_dead_inputs(torch.ones(1, 2), torch.diag(torch.tensor([2.0, 0.0])))
        >>> w.tolist(), torch.diag(h).tolist()
        ([[1.0, 0.0]], [2.0, 1.0])
    """
    w, h = w.clone(), h.to(w.dtype).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    return w, h


@dataclass
class Sweep:
    """What a column rule may read while :func:`solve_columns` visits a block of columns.

    Attributes:
        w: the whole weight ``(out, n)``; columns past the block lack the block's pending
            (lazy) updates.
        u: upper Cholesky factor of the damped ``H^-1``.
        start: index of the block's first column.
        block: the block's columns ``(out, b)``, updated up to the current column.
        err: the scaled errors ``(out, b)`` of the block's columns visited so far.
    """

    w: Tensor
    u: Tensor
    start: int
    block: Tensor
    err: Tensor

    def ahead(self, i: int, width: int) -> Tensor:
        """Current values of the next ``width`` columns from block column ``i``: those past
        the block get the block's pending updates applied on the fly.

        Example:
            >>> s = Sweep(torch.ones(1, 4), torch.eye(4), 0, torch.ones(1, 2), torch.zeros(1, 2))
            >>> s.ahead(1, 3).tolist()
            [[1.0, 1.0, 1.0]]
        """
        end_block = self.start + self.block.shape[1]
        ahead = self.block[:, i:]
        need = width - ahead.shape[1]
        if need > 0 and end_block < self.w.shape[1]:
            end = min(end_block + need, self.w.shape[1])
            rest = (
                self.w[:, end_block:end]
                - self.err[:, :i] @ self.u[self.start : self.start + i, end_block:end]
            )
            ahead = torch.cat([ahead, rest], dim=1)
        return ahead


ColumnRule = Callable[[Sweep, int], Tensor]


def solve_columns(w: Tensor, u: Tensor, block_size: int, rule: ColumnRule) -> Tensor:
    """Optimal Brain Compression's column sweep with lazy batch updates.

    For each column ``j`` in order: ``q_j = rule(sweep, i)`` (``i`` its index in the block),
    ``e = (w_j - q_j) / U_jj`` and ``w_k -= e U_jk`` for the later columns ``k`` of the block;
    the rest of the matrix gets the block's errors at once when the block ends.

    Args:
        w: the weight ``(out, n)``, dead inputs neutralised (overwritten).
        u: upper Cholesky factor of the damped inverse Hessian ``(n, n)``.
        block_size: columns per lazy batch update.
        rule: the new value ``(out,)`` of block column ``i``; it may read the :class:`Sweep`
            (``sweep.block[:, i]`` is the column's current value) but not change it.

    Returns:
        The new weight ``(out, n)``.

    Example:
        >>> w = torch.tensor([[1.0, 2.0]])
        >>> solve_columns(w.clone(), torch.eye(2), 2, lambda s, i: s.block[:, i].round())
        tensor([[1., 2.]])
    """
    n = w.shape[1]
    out = torch.zeros_like(w)
    for i1 in range(0, n, block_size):
        i2 = min(i1 + block_size, n)
        w1, u1 = w[:, i1:i2].clone(), u[i1:i2, i1:i2]
        sweep = Sweep(w, u, i1, w1, torch.zeros_like(w1))
        for i in range(i2 - i1):
            col = w1[:, i]
            new = rule(sweep, i)
            out[:, i1 + i] = new
            err = (col - new) / u1[i, i]
            w1[:, i:] -= err[:, None] * u1[i, i:][None, :]
            sweep.err[:, i] = err
        w[:, i2:] -= sweep.err @ u[i1:i2, i2:]
    return out
