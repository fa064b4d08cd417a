"""Integer arithmetic for integer-only inference (Jacob et al., CVPR 2018).

- ``quantize_multiplier``: a real multiplier ``M > 0`` as ``M0 * 2**-rshift`` with ``M0`` a
  31-bit integer in ``[2**30, 2**31)`` (the paper's normalized fixed-point multiplier).
- ``requantize``: ``clamp(round(acc * M) + Z)`` computed as ``(acc * M0 + 2**(rshift-1)) >>
  rshift`` in int64: no float anywhere (ties round up, where ``torch.round`` rounds to even).
- ``conv2d_int`` / ``linear_int``: zero-point-subtracted int32 activations times int8 weights,
  accumulated in int32, plus an int32 bias. The products are summed by torch's float kernels
  when that is exact: every partial sum of integer products is an integer no larger than
  ``K * max|x| * max|w|``, which float32 holds exactly below ``2**24`` and float64 below
  ``2**53`` (``exact_float_dtype``); the integer unfold-and-matmul kernels
  (``conv2d_int_unfold``, ``linear_int_matmul``) are the oracle they are tested against and
  the path beyond those bounds.

Example:
    >>> import torch
    >>> m0, rshift = quantize_multiplier(torch.tensor([0.3], dtype=torch.float64))
    >>> requantize(torch.tensor([10, 100]), m0, rshift, zero_point=5, q_min=0, q_max=255).tolist()
    [8, 35]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from slimtorch.errors import ModelError

MULTIPLIER_BITS = 31  # M0 is a Q0.31 fixed-point number, as in gemmlowp
MAX_RIGHT_SHIFT = 62  # acc (< 2**31) * M0 (< 2**31) must stay inside int64


def quantize_multiplier(m: Tensor) -> tuple[Tensor, Tensor]:
    """Fixed-point form of positive multipliers: ``m ~= m0 * 2**-rshift``.

    Args:
        m: positive real multipliers (any shape), float64 for full precision.

    Returns:
        ``(m0, rshift)`` as int64 tensors of ``m``'s shape; ``2**30 <= m0 < 2**31``.

    Example:
        >>> quantize_multiplier(torch.tensor([0.75], dtype=torch.float64))
        (tensor([1610612736]), tensor([31]))
    """
    m = m.to(torch.float64)
    if not bool((m > 0).all()):
        raise ModelError("requantization multipliers must be positive")
    mantissa, exponent = torch.frexp(m)  # m = mantissa * 2**exponent, mantissa in [0.5, 1)
    m0 = torch.round(mantissa * 2**MULTIPLIER_BITS).to(torch.int64)
    carry = m0 == 2**MULTIPLIER_BITS
    m0 = torch.where(carry, m0 // 2, m0)
    rshift = MULTIPLIER_BITS - (exponent.to(torch.int64) + carry.to(torch.int64))
    if bool((rshift < 1).any()) or bool((rshift > MAX_RIGHT_SHIFT).any()):
        raise ModelError(
            f"requantization multiplier out of the fixed-point range: {m.min()}..{m.max()}"
        )
    return m0, rshift


def requantize(
    acc: Tensor, m0: Tensor, rshift: Tensor, zero_point: int, q_min: int, q_max: int
) -> Tensor:
    """``clamp(round(acc * M) + zero_point, q_min, q_max)`` in integer arithmetic.

    Args:
        acc: int32 accumulators.
        m0: fixed-point multipliers (broadcast against ``acc``).
        rshift: right shifts (broadcast against ``acc``).
        zero_point: output zero point.
        q_min: smallest output integer.
        q_max: largest output integer.

    Returns:
        int32 tensor of ``acc``'s shape.
    """
    prod = acc.to(torch.int64) * m0
    half = torch.bitwise_left_shift(torch.ones_like(rshift), rshift - 1)
    out = torch.bitwise_right_shift(prod + half, rshift) + zero_point
    return out.clamp_(q_min, q_max).to(torch.int32)


FLOAT32_EXACT = 2**24  # float32 holds every integer of magnitude <= 2**24 exactly
FLOAT64_EXACT = 2**53


def exact_float_dtype(k: int, x: Tensor, w: Tensor) -> torch.dtype | None:
    """The float dtype whose sums of ``k`` products of ``x`` and ``w`` values are exact
    integers (float32, else float64), or None when neither is.

    Example:
        >>> exact_float_dtype(288, torch.tensor([255]), torch.tensor([127]))
        torch.float32
    """
    if x.numel() == 0 or w.numel() == 0:
        return torch.float32
    bound = k * int(x.abs().max()) * int(w.abs().max())
    if bound < FLOAT32_EXACT:
        return torch.float32
    return torch.float64 if bound < FLOAT64_EXACT else None


def linear_int(x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ w.T + bias`` with int32 activations, int8 weights and int32 accumulation.

    Example:
        >>> x = torch.tensor([[1, -2]], dtype=torch.int32)
        >>> linear_int(x, torch.tensor([[3, 4]], dtype=torch.int8), torch.tensor([10])).tolist()
        [[5]]
    """
    dtype = exact_float_dtype(w.shape[1], x, w)
    if dtype is None:
        return linear_int_matmul(x, w, bias)
    acc = (x.to(dtype) @ w.to(dtype).T).to(torch.int32)  # exact: integers below 2**24 / 2**53
    return acc if bias is None else acc + bias.to(torch.int32)


def linear_int_matmul(x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """:func:`linear_int` by an int32 matrix product (the oracle; no bound on the sums)."""
    acc = x.to(torch.int32) @ w.to(torch.int32).T
    return acc if bias is None else acc + bias.to(torch.int32)


def conv2d_int(
    x: Tensor,
    w: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    groups: int = 1,
) -> Tensor:
    """2-D convolution of int32 activations (zero point already subtracted, so zero padding
    is real zero) with int8 weights: torch's float convolution where its sums are exact, else
    :func:`conv2d_int_unfold`.

    Example:
        >>> x = torch.ones(1, 1, 3, 3, dtype=torch.int32)
        >>> w = torch.ones(1, 1, 3, 3, dtype=torch.int8)
        >>> conv2d_int(x, w, None, (1, 1), (1, 1))[0, 0].tolist()
        [[4, 6, 4], [6, 9, 6], [4, 6, 4]]
    """
    dtype = exact_float_dtype(w[0].numel(), x, w)
    if dtype is None:
        return conv2d_int_unfold(x, w, bias, stride, padding, groups)
    acc = F.conv2d(x.to(dtype), w.to(dtype), None, tuple(stride), tuple(padding), 1, groups)
    acc = acc.to(torch.int32)  # exact: integer sums below 2**24 (float32) or 2**53 (float64)
    if bias is not None:
        acc = acc + bias.to(torch.int32).reshape(1, -1, 1, 1)
    return acc.contiguous()


def conv2d_int_unfold(
    x: Tensor,
    w: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    groups: int = 1,
) -> Tensor:
    """:func:`conv2d_int` by unfolding into an int32 matrix product (the oracle; no bound)."""
    n, _c, _, _ = x.shape
    o, c_per_group, kh, kw = w.shape
    x = F.pad(x.to(torch.int32), (padding[1], padding[1], padding[0], padding[0]))
    cols = x.unfold(2, kh, stride[0]).unfold(3, kw, stride[1])  # [N, C, OH, OW, kh, kw]
    oh, ow = cols.shape[2], cols.shape[3]
    cols = cols.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, groups, c_per_group * kh * kw)
    wg = w.to(torch.int32).reshape(groups, o // groups, c_per_group * kh * kw)
    outs = [cols[:, g] @ wg[g].T for g in range(groups)]
    acc = torch.cat(outs, dim=1).reshape(n, oh, ow, o).permute(0, 3, 1, 2)
    if bias is not None:
        acc = acc + bias.to(torch.int32).reshape(1, -1, 1, 1)
    return acc.contiguous()


def sum_pool_int(x: Tensor, kernel: int, stride: int) -> Tensor:
    """Sum over ``kernel x kernel`` windows (an average pool before dividing), exact in int.

    Example:
        >>> sum_pool_int(torch.arange(16, dtype=torch.int32).reshape(1, 1, 4, 4), 2, 2).tolist()
        [[[[10, 18], [42, 50]]]]
    """
    return (
        x.unfold(2, kernel, stride)
        .unfold(3, kernel, stride)
        .sum(dim=(-1, -2), dtype=torch.int64)
        .to(torch.int32)
    )


def max_pool_int(x: Tensor, kernel: int, stride: int, padding: int = 0) -> Tensor:
    """Max over windows of an integer tensor (padding with the dtype's minimum).

    Example:
        >>> max_pool_int(torch.arange(16, dtype=torch.int32).reshape(1, 1, 4, 4), 2, 2).tolist()
        [[[[5, 7], [13, 15]]]]
    """
    if padding:
        low = torch.iinfo(x.dtype).min
        x = F.pad(x, (padding,) * 4, value=low)
    return x.unfold(2, kernel, stride).unfold(3, kernel, stride).amax(dim=(-1, -2))
