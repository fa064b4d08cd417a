"""Round-to-nearest weight-only quantization onto a per-channel or per-group integer grid.

A weight ``W`` of shape ``(out, in)`` is cut into groups of ``group_size`` consecutive input
columns inside each output row (``None``: the whole row). Asymmetric grids store a scale and a
minimum per group (``w ~ scale * q + min``, ``q`` in ``[0, 2**bits - 1]``, as llama.cpp's Q4_1);
symmetric grids store a scale only (``q`` in ``[-2**(bits-1), 2**(bits-1) - 1]``).
Every function here is a pure tensor function; AWQ and GPTQ reuse them.

Example:
    >>> import torch
    >>> w = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    >>> fake_quantize(w, bits=2, group_size=None)
    tensor([[0., 1., 2., 3.]])
"""

from __future__ import annotations

import torch

from slimtorch.llm.compress.config import RTNConfig

SCALE_EPS = 1e-8  # smallest step, so constant groups do not divide by zero


def grouped(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """View ``(out, in)`` as ``(out, n_groups, group_size)``.

    When ``group_size`` does not divide ``in`` (SmolLM2's 576 columns in groups of 128), the
    last group is short: it is padded by repeating the row's last weight, which changes no
    group's minimum or maximum; ``ungrouped`` drops the padding again.

    Args:
        w: a 2-D weight.
        group_size: columns per group, or None for the whole row.

    Returns:
        The grouped tensor (a view when no padding is needed).

    Example:
        >>> grouped(torch.zeros(3, 8), 4).shape
        torch.Size([3, 2, 4])
        >>> grouped(torch.arange(3.0)[None], 2).tolist()
        [[[0.0, 1.0], [2.0, 2.0]]]
    """
    out_f, in_f = w.shape
    gs = in_f if group_size is None else group_size
    pad = -in_f % gs
    if pad:
        w = torch.cat([w, w[:, -1:].expand(out_f, pad)], dim=1)
    return w.reshape(out_f, -1, gs)


def ungrouped(wg: torch.Tensor, in_features: int) -> torch.Tensor:
    """Back to ``(out, in_features)`` from ``grouped``'s layout, padding dropped.

    Example:
        >>> ungrouped(grouped(torch.arange(3.0)[None], 2), 3).tolist()
        [[0.0, 1.0, 2.0]]
    """
    return wg.reshape(wg.shape[0], -1)[:, :in_features]


def qparams(
    wg: torch.Tensor, bits: int, symmetric: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and minimum of a min/max grid over the last dimension.

    Args:
        wg: weights, grouped along the last dimension.
        bits: grid bits.
        symmetric: symmetric signed grid (the minimum returned is zero).

    Returns:
        ``(scale, minimum)``, each with the last dimension kept as 1.

    Example:
        >>> s, m = qparams(torch.tensor([[-1.0, 2.0]]), bits=2)
        >>> s.item(), m.item()
        (1.0, -1.0)
    """
    if symmetric:
        qpos = 2 ** (bits - 1) - 1
        absmax = wg.abs().amax(dim=-1, keepdim=True)
        scale = (absmax / max(qpos, 1)).clamp(min=SCALE_EPS)
        return scale, torch.zeros_like(scale)
    lo = wg.amin(dim=-1, keepdim=True)
    hi = wg.amax(dim=-1, keepdim=True)
    scale = ((hi - lo) / (2**bits - 1)).clamp(min=SCALE_EPS)
    return scale, lo


def quantize_codes(
    w: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor, bits: int, symmetric: bool
) -> torch.Tensor:
    """Integer codes of ``w`` on a grid (broadcasting ``scale``/``minimum``).

    Args:
        w: weights.
        scale, minimum: the grid (see ``qparams``).
        bits: grid bits.
        symmetric: signed symmetric codes instead of unsigned ones.

    Returns:
        Codes as a float tensor of integers.

    Example:
        >>> quantize_codes(torch.tensor([0.4, 2.6]), torch.tensor(1.0), torch.tensor(0.0), 2, False)
        tensor([0., 3.])
    """
    if symmetric:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return torch.clamp(torch.round(w / scale), lo, hi)
    return torch.clamp(torch.round((w - minimum) / scale), 0, 2**bits - 1)


def dequantize_codes(q: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
    """``scale * q + minimum``.

    Example:
        >>> dequantize_codes(torch.tensor([0.0, 3.0]), torch.tensor(0.5), torch.tensor(-1.0))
        tensor([-1.0000,  0.5000])
    """
    return q * scale + minimum


def fake_quantize(
    w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool = False
) -> torch.Tensor:
    """Quantize then dequantize a 2-D weight onto its per-channel or per-group grid.

    Args:
        w: weight ``(out, in)``.
        bits: grid bits.
        group_size: columns per group, or None for per-channel.
        symmetric: symmetric grid.

    Returns:
        The dequantized weight, same shape and dtype.

    Example:
        >>> w = torch.randn(4, 64)
        >>> (fake_quantize(w, 8, 32) - w).abs().max().item() < 0.02
        True
    """
    wg = grouped(w, group_size)
    scale, minimum = qparams(wg, bits, symmetric)
    q = quantize_codes(wg, scale, minimum, bits, symmetric)
    return ungrouped(dequantize_codes(q, scale, minimum), w.shape[1])


def rtn_quantize(w: torch.Tensor, config: RTNConfig) -> torch.Tensor:
    """Round-to-nearest with a config (see ``fake_quantize``).

    Example:
        >>> rtn_quantize(torch.ones(2, 4), RTNConfig(bits=4, group_size=2)).shape
        torch.Size([2, 4])
    """
    return fake_quantize(w, config.bits, config.group_size, config.symmetric)


def output_error(w: torch.Tensor, w_hat: torch.Tensor, x: torch.Tensor) -> float:
    """Mean squared error of a linear layer's output: ``||x W^T - x W_hat^T||^2 / numel``.

    Args:
        w, w_hat: original and compressed weights ``(out, in)``.
        x: inputs ``(tokens, in)``.

    Returns:
        The mean squared output error.

    Example:
        >>> output_error(torch.eye(2), torch.zeros(2, 2), torch.ones(3, 2))
        1.0
    """
    diff = x @ (w - w_hat).T
    return float(diff.pow(2).mean())
