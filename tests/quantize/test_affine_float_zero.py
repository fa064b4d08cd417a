"""The affine core's float zero-point domain (``r = S q + min``, the LLM grids) and ragged
groups, against a textbook group-by-group reference; the spec's new fields."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch.errors import ConfigError
from slimtorch.quantize.granularity import PerChannel, PerGroup, PerTensor
from slimtorch.quantize.primitives import (
    QuantSpec,
    choose_qparams,
    dequantize,
    dequantize_affine,
    fake_quantize,
    quantize,
    quantize_affine,
)

LLM_EPS = 1e-8


def _float_spec(bits, group, symmetric=False, dtype="float64"):
    gran = PerChannel(0) if group is None else PerGroup(group, ragged=True)
    return QuantSpec(bits, symmetric, symmetric, gran, dtype, zero_point_domain="float", eps=1e-8)


def _reference(w: torch.Tensor, bits: int, group: int | None, symmetric: bool) -> torch.Tensor:
    """Slice every row into groups (the last one may be short), apply the formulas in the
    input's dtype: llama.cpp Q4_1 style min/max grid, or the signed symmetric one."""
    out = torch.empty_like(w)
    gs = group or w.shape[1]
    for r in range(w.shape[0]):
        for g0 in range(0, w.shape[1], gs):
            v = w[r, g0 : g0 + gs]
            if symmetric:
                s = torch.clamp(v.abs().max() / (2 ** (bits - 1) - 1), min=LLM_EPS)
                q = torch.clamp(torch.round(v / s), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
                out[r, g0 : g0 + gs] = q * s
            else:
                lo = v.min()
                s = torch.clamp((v.max() - lo) / (2**bits - 1), min=LLM_EPS)
                q = torch.clamp(torch.round((v - lo) / s), 0, 2**bits - 1)
                out[r, g0 : g0 + gs] = q * s + lo
    return out


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    bits=st.sampled_from([2, 3, 4, 8]),
    group=st.sampled_from([None, 8, 12, 16, 100]),
    symmetric=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_float_domain_matches_group_by_group_reference_bit_for_bit(
    seed, bits, group, symmetric, dtype
):
    w = torch.randn(5, 40, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    w[1] = 0.5  # a constant row: the smallest step applies
    got = fake_quantize(w, _float_spec(bits, group, symmetric))
    assert got.dtype == dtype
    assert torch.equal(got, _reference(w, bits, group, symmetric))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([2, 3, 4, 8]))
def test_asymmetric_float_grid_is_within_half_a_step_and_keeps_the_extremes(seed, bits):
    w = torch.rand(4, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 1
    spec = _float_spec(bits, 8)
    qp = choose_qparams(w, spec)
    w_hat = fake_quantize(w, spec, qp)
    step = qp.scale.repeat_interleave(8, dim=1)
    assert bool(((w - w_hat).abs() <= step / 2 * (1 + 1e-12)).all())
    # the range is [min, max] of each group, not widened to 0: both ends are on the grid
    groups, groups_hat = w.reshape(4, 4, 8), w_hat.reshape(4, 4, 8)
    assert torch.equal(groups.amin(-1), groups_hat.amin(-1))
    assert torch.allclose(groups.amax(-1), groups_hat.amax(-1), rtol=1e-12, atol=0)


def test_ragged_group_is_quantized_on_its_own_values():
    w = torch.randn(3, 20, generator=torch.Generator().manual_seed(0))
    spec = _float_spec(4, 8, dtype="float32")
    qp = choose_qparams(w, spec)
    assert qp.scale.shape == (3, 3)  # 8 + 8 + a short group of 4
    pieces = [fake_quantize(w[:, i : i + 8], _float_spec(4, None)) for i in (0, 8, 16)]
    assert torch.equal(fake_quantize(w, spec), torch.cat(pieces, dim=1))
    assert quantize(w, qp, spec).shape == w.shape
    assert dequantize(quantize(w, qp, spec), qp, spec).shape == w.shape


@pytest.mark.parametrize("granularity", [PerTensor(), PerChannel(0), PerGroup(4)])
def test_symmetric_float_domain_equals_the_int_domain(granularity):
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    as_int = QuantSpec(4, True, True, granularity)
    as_float = QuantSpec(4, True, True, granularity, zero_point_domain="float")
    qi, qf = choose_qparams(x, as_int), choose_qparams(x, as_float)
    assert torch.equal(qi.scale, qf.scale) and not bool(qf.zero_point.any())
    assert torch.equal(quantize(x, qi, as_int), quantize(x, qf, as_float))
    assert torch.equal(fake_quantize(x, as_int), fake_quantize(x, as_float))


def test_affine_closed_forms():
    spec = QuantSpec(3, False, False, zero_point_domain="float")
    q = quantize_affine(torch.tensor([-1.0, 0.2, 9.0]), torch.tensor(0.5), torch.tensor(-1.0), spec)
    assert q.tolist() == [0, 2, 7]  # (x + 1) / 0.5 = 0, 2.4, 20 -> clamp to 7
    assert dequantize_affine(q, torch.tensor(0.5), torch.tensor(-1.0), spec).tolist() == [
        -1.0,
        0.0,
        2.5,
    ]
    int_spec = QuantSpec(8, False, False)
    z = torch.tensor(10, dtype=torch.int32)
    q = quantize_affine(torch.tensor([0.0, 1.0]), torch.tensor(0.25), z, int_spec)
    assert q.tolist() == [10, 14]
    assert dequantize_affine(q, torch.tensor(0.25), z, int_spec).tolist() == [0.0, 1.0]


def test_float64_scales_are_kept_as_computed():
    x = torch.randn(4, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    kept = choose_qparams(x, _float_spec(4, 8))
    rounded = choose_qparams(x, _float_spec(4, 8, dtype="float32"))
    assert kept.scale.dtype == torch.float64 and rounded.scale.dtype == torch.float32
    assert bool((rounded.scale.double() >= kept.scale).all())  # rounded up: range still covered


def test_spec_fields_validate_and_round_trip():
    with pytest.raises(ConfigError, match="zero_point_domain"):
        QuantSpec(zero_point_domain="fp")
    with pytest.raises(ConfigError, match="signed=False"):
        QuantSpec(4, symmetric=False, signed=True, zero_point_domain="float")
    for eps in (0.0, -1.0, math.inf, 1):
        with pytest.raises(ConfigError, match="eps"):
            QuantSpec(eps=eps)
    spec = _float_spec(4, 128)
    assert QuantSpec.from_dict(spec.to_dict()) == spec
    # defaults of the new fields stay out of the dict: saved specs keep their bytes
    assert QuantSpec().to_dict() == {
        "bits": 8,
        "symmetric": True,
        "signed": True,
        "granularity": {"kind": "tensor"},
        "scale_dtype": "float32",
        "version": 1,
    }
