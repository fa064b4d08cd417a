"""AWQ's clipping search: per output row and group, shrink the quantization range where that
lowers the error of the group's partial output on sampled inputs.

``clip_mode="sym"`` is llm-awq's search: clamp to ``[-m, m]`` with ``m = max |w|`` shrunk in
``clip_grid`` steps down to ``1 - clip_max_shrink``. ``"asym"`` then refines the two ends
separately (first the maximum, then the minimum, each shrunk towards zero on the same grid),
which an asymmetric (scale + minimum) grid can use. Each step keeps the current range among its
candidates, so the error never rises.

Example:
    >>> import torch
    >>> from slimtorch.llm.compress.config import AWQConfig
    >>> w, x = torch.randn(4, 16), torch.randn(32, 16)
    >>> lo, hi = search_clip_range(w, x, AWQConfig(group_size=8, clip_mode="asym"))
    >>> lo.shape, bool((lo <= hi).all())
    (torch.Size([4, 2, 1]), True)
"""

from __future__ import annotations

import torch

from slimtorch.llm.compress.config import AWQConfig, RTNConfig
from slimtorch.quantize.granularity import grouped, ungrouped
from slimtorch.quantize.primitives import QParams, choose_qparams, fake_quantize

CLIP_ROW_BATCH = 256  # output rows searched at once (bounds the search's memory)


def _clip_error(xg, wb, ref, lo, hi, c: AWQConfig) -> torch.Tensor:
    """Partial-output MSE ``(b, g, 1)`` of each group of ``wb`` clamped to ``[lo, hi]``."""
    cand = torch.minimum(torch.maximum(wb, lo), hi)
    spec = RTNConfig(c.bits, None, c.symmetric).spec()  # per row of the (rows * groups, gs) view
    q = fake_quantize(cand.reshape(-1, cand.shape[-1]), spec)
    out = torch.einsum("ngs,bgs->bgn", xg, q.reshape(wb.shape))
    return (out - ref).pow(2).mean(dim=-1, keepdim=True)


def _search_rows(xg: torch.Tensor, wb: torch.Tensor, c: AWQConfig) -> tuple:
    """``(lo, hi)`` for one batch of grouped rows ``(b, g, gs)``."""
    ref = torch.einsum("ngs,bgs->bgn", xg, wb)
    steps = int(c.clip_max_shrink * c.clip_grid)
    org = wb.abs().amax(dim=-1, keepdim=True)
    lo, hi, best = -org, org.clone(), torch.full(org.shape, float("inf"))
    for i in range(steps):
        mx = org * (1 - i / c.clip_grid)
        err = _clip_error(xg, wb, ref, -mx, mx, c)
        better = err < best
        best, lo, hi = (
            torch.where(better, err, best),
            torch.where(better, -mx, lo),
            torch.where(better, mx, hi),
        )
    if c.clip_mode == "asym":
        hi0, lo0 = wb.amax(dim=-1, keepdim=True), wb.amin(dim=-1, keepdim=True)
        for i in range(steps):
            h = hi0 * (1 - i / c.clip_grid)
            err = _clip_error(xg, wb, ref, lo, h, c)
            better = err < best
            best, hi = torch.where(better, err, best), torch.where(better, h, hi)
        for i in range(steps):
            low = lo0 * (1 - i / c.clip_grid)
            err = _clip_error(xg, wb, ref, low, hi, c)
            better = err < best
            best, lo = torch.where(better, err, best), torch.where(better, low, lo)
    return lo, hi


def search_clip_range(w: torch.Tensor, x: torch.Tensor, config: AWQConfig) -> tuple:
    """Per output row and group, the clipping range with the lowest partial-output error.

    Args:
        w: weight ``(out, in)``.
        x: sampled inputs ``(tokens, in)``.
        config: grid, shrink range, clip mode and quantization settings.

    Returns:
        ``(lo, hi)``, each of shape ``(out, groups, 1)``.
    """
    c = config
    pad = -x.shape[1] % (c.group_size or x.shape[1])
    xg = grouped(torch.nn.functional.pad(x, (0, pad)), c.group_size)  # (n, g, gs), zero pad
    parts = [_search_rows(xg, wb, c) for wb in grouped(w, c.group_size).split(CLIP_ROW_BATCH)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def search_clip(w: torch.Tensor, x: torch.Tensor, config: AWQConfig) -> torch.Tensor:
    """llm-awq's symmetric search: ``max_val`` of shape ``(out, groups, 1)`` (``[-m, m]``)."""
    sym = AWQConfig(
        config.bits,
        config.group_size,
        config.symmetric,
        clip_grid=config.clip_grid,
        clip_max_shrink=config.clip_max_shrink,
    )
    return search_clip_range(w, x, sym)[1]


def clip_weight(
    w: torch.Tensor,
    max_val: torch.Tensor,
    group_size: int | None,
    min_val: torch.Tensor | None = None,
) -> torch.Tensor:
    """Clamp each group of ``w`` to ``[min_val, max_val]`` (``min_val`` defaults to
    ``-max_val``).

    Example:
        >>> clip_weight(torch.tensor([[3.0, -3.0]]), torch.tensor([[[1.0]]]), None)
        tensor([[ 1., -1.]])
    """
    wg = grouped(w, group_size)
    lo = -max_val if min_val is None else min_val
    return ungrouped(torch.minimum(torch.maximum(wg, lo), max_val), w.shape[1])


def clip_searched(w: torch.Tensor, x: torch.Tensor, config: AWQConfig) -> torch.Tensor:
    """``w`` clamped to the range ``search_clip_range`` picks on inputs ``x``."""
    lo, hi = search_clip_range(w, x, config)
    return clip_weight(w, hi, config.group_size, lo)


def clip_grid_params(w: torch.Tensor, x: torch.Tensor | None, config: AWQConfig) -> QParams:
    """The grid (scale and offset per row and group) that rounding uses: that of the weight
    clipped where the clipping search chose (``x`` its inputs), or of ``w`` when ``x`` is None.

    Example:
        >>> qp = clip_grid_params(torch.tensor([[0.0, 3.0]]), None, AWQConfig(2, None))
        >>> qp.scale.flatten().tolist(), qp.zero_point.flatten().tolist()
        ([1.0], [0.0])
    """
    if x is not None:
        w = clip_searched(w, x, config)
    return choose_qparams(w, config.rtn().spec())
