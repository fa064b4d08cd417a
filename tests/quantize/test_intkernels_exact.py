"""The float-summed integer kernels equal the integer unfold/matmul oracle, bit for bit.

Every product of an int32 activation and an int8 weight is an integer, and so is every
partial sum; float32 holds them exactly below 2**24 and float64 below 2**53, so torch's float
kernels must give the int32 oracle's accumulators exactly -- including at the float32 edge,
where the dtype switches to float64.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch.quantize.intkernels import (
    FLOAT32_EXACT,
    conv2d_int,
    conv2d_int_unfold,
    exact_float_dtype,
    linear_int,
    linear_int_matmul,
)


def _ints(shape: tuple[int, ...], low: int, high: int, seed: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high + 1, shape, generator=g, dtype=torch.int64).to(dtype)


@settings(max_examples=40, deadline=None)
@given(
    c=st.integers(1, 40),
    o=st.integers(1, 8),
    k=st.sampled_from([1, 3, 5]),
    stride=st.integers(1, 2),
    pad=st.integers(0, 2),
    groups=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_conv_equals_the_unfold_oracle(c, o, k, stride, pad, groups, seed) -> None:
    c, o = c * groups, o * groups
    x = _ints((2, c, 7, 7), -255, 255, seed, torch.int32)
    w = _ints((o, c // groups, k, k), -127, 127, seed + 1, torch.int8)
    b = _ints((o,), -(2**20), 2**20, seed + 2, torch.int32)
    args = ((stride, stride), (pad, pad), groups)
    assert torch.equal(conv2d_int(x, w, b, *args), conv2d_int_unfold(x, w, b, *args))


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 3000), seed=st.integers(0, 2**16))
def test_linear_equals_the_matmul_oracle(k, seed) -> None:
    x = _ints((3, k), -255, 255, seed, torch.int32)
    w = _ints((4, k), -127, 127, seed + 1, torch.int8)
    b = _ints((4,), -(2**20), 2**20, seed + 2, torch.int32)
    assert torch.equal(linear_int(x, w, b), linear_int_matmul(x, w, b))


def test_worst_case_sums_at_the_float32_edge_switch_to_float64() -> None:
    k = FLOAT32_EXACT // (255 * 127) + 1  # k * 255 * 127 just above 2**24
    x, w = torch.full((1, k), 255, dtype=torch.int32), torch.full((1, k), 127, dtype=torch.int8)
    assert exact_float_dtype(k - 1, x, w) == torch.float32
    assert exact_float_dtype(k, x, w) == torch.float64
    assert int(linear_int(x, w, None)) == k * 255 * 127 == int(linear_int_matmul(x, w, None))
    odd = x.clone()
    odd[0, 0] = 254  # an odd total: float32 would round it
    assert torch.equal(linear_int(odd, w, None), linear_int_matmul(odd, w, None))
