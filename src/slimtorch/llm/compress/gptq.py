"""GPTQ (Frantar et al. 2022): quantize a linear layer column by column, pushing each column's
rounding error onto the columns not yet quantized through the inverse Hessian of the layer's
reconstruction loss ``||X W^T - X Q^T||^2`` (``H = 2 X^T X / n``).

The statistics, the damped inverse (upper Cholesky factor of ``H^-1``: one factorisation
instead of one inverse update per column) and the column sweep with lazy batch updates are
``slimtorch.quantize.calibration``'s; this module is the rounding rule. ``act_order`` visits
columns by decreasing ``H`` diagonal; its group scales are then fixed from the original weight
before the solve so that groups stay contiguous columns ("static groups").

Example:
    >>> import torch
    >>> from slimtorch.llm.compress.config import GPTQConfig
    >>> from slimtorch.quantize.calibration import HessianAccumulator
    >>> torch.manual_seed(0) and None
    >>> x, w = torch.randn(256, 64), torch.randn(32, 64)
    >>> acc = HessianAccumulator(64); acc.add_batch(x)
    >>> q = gptq_quantize(w, acc.hessian(), GPTQConfig(bits=4, group_size=32))
    >>> q.shape
    torch.Size([32, 64])
"""

from __future__ import annotations

from dataclasses import replace

import torch

from slimtorch.llm.compress.config import GPTQConfig
from slimtorch.quantize.calibration import (
    HessianAccumulator,
    Sweep,
    damped_inverse_upper,
    neutralize_dead_inputs,
    solve_columns,
)
from slimtorch.quantize.primitives import (
    PerChannel,
    QParams,
    choose_qparams,
    dequantize_affine,
    quantize_affine,
)


class _Grid:
    """Per-column grid lookup: per-channel, static groups, or groups refreshed as reached."""

    def __init__(self, w: torch.Tensor, config: GPTQConfig, grid: QParams | None = None) -> None:
        self.spec = replace(config.rtn().spec(), granularity=PerChannel(0))
        self.group_size = config.group_size
        self.dynamic = config.group_size is not None and not config.act_order and grid is None
        self.scale = self.zero = torch.empty(0)
        if grid is None and not self.dynamic:
            grid = choose_qparams(w, config.rtn().spec())  # (out, groups)
        if grid is not None:
            self.scale, self.zero = grid.scale, grid.zero_point

    def params(self, orig_col: int, sweep: Sweep, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, offset)`` of shape ``(out,)`` for the column ``orig_col``."""
        if self.dynamic:
            assert self.group_size is not None
            if orig_col % self.group_size == 0:
                qp = choose_qparams(
                    sweep.ahead(i, self.group_size)[:, : self.group_size], self.spec
                )
                self.scale, self.zero = qp.scale[:, 0], qp.zero_point[:, 0]
            return self.scale, self.zero
        g = 0 if self.group_size is None else orig_col // self.group_size
        return self.scale[:, g], self.zero[:, g]


def gptq_quantize(
    w: torch.Tensor, hessian: torch.Tensor, config: GPTQConfig, grid: QParams | None = None
) -> torch.Tensor:
    """Quantize ``w`` (``(out, in)``) with GPTQ; returns the dequantized weight.

    Args:
        w: the layer weight.
        hessian: ``2/n X^T X`` of the layer's inputs, ``(in, in)``.
        config: bits, grid, block size, damping and column order.
        grid: fixed scales and offsets per output row and group (``choose_qparams`` of a
            weight on ``config.rtn().spec()``, e.g. a clipped one); None derives them from
            ``w`` (refreshed per group as the solve reaches it, or static under act-order).

    Returns:
        The quantized-then-dequantized weight, same shape and dtype as ``w``.
    """
    w, h = neutralize_dead_inputs(w, hessian)
    n = w.shape[1]
    perm = torch.argsort(torch.diag(h), descending=True) if config.act_order else torch.arange(n)
    grid_ = _Grid(w, config, grid)
    w, h = w[:, perm], h[perm][:, perm]
    u = damped_inverse_upper(h, config.percdamp)

    def rule(sweep: Sweep, i: int) -> torch.Tensor:
        scale, zero = grid_.params(int(perm[sweep.start + i]), sweep, i)
        q = quantize_affine(sweep.block[:, i], scale, zero, grid_.spec)
        return dequantize_affine(q, scale, zero, grid_.spec)

    q = solve_columns(w, u, config.block_size, rule)
    return q[:, torch.argsort(perm)]


def gptq_observer(columns: int) -> HessianAccumulator:
    """The statistics GPTQ needs of a layer's inputs: ``H = 2 X^T X / n`` (float32)."""
    return HessianAccumulator(columns)


def gptq_solve(w: torch.Tensor, observer: HessianAccumulator, config: GPTQConfig) -> torch.Tensor:
    """:func:`gptq_quantize` with the Hessian ``observer`` gathered."""
    return gptq_quantize(w, observer.hessian(), config)
