"""Linear quantization primitives against a block-by-block reference and closed-form bounds."""

from __future__ import annotations

import itertools

import pytest
import torch

from slimtorch.errors import ConfigError
from slimtorch.quantize.primitives import (
    ALLOWED_BITS,
    PerChannel,
    PerGroup,
    PerTensor,
    QuantSpec,
    block_size,
    choose_qparams,
    dequantize,
    fake_quantize,
    quantize,
)

GRANULARITIES = [PerTensor(), PerChannel(0), PerChannel(1), PerGroup(4), PerGroup(3, axis=0)]
MODES = [(True, True), (True, False), (False, True), (False, False)]  # (symmetric, signed)


def _reference(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, list, list]:
    """Loop over blocks, apply the textbook formulas to each slice (float32 like the code)."""
    block = block_size(x.shape, spec.granularity)
    q = torch.empty(x.shape, dtype=torch.int64)
    scales, zps = [], []
    counts = [n // b for n, b in zip(x.shape, block, strict=True)]
    for idx in itertools.product(*(range(c) for c in counts)):
        sl = tuple(slice(i * b, (i + 1) * b) for i, b in zip(idx, block, strict=True))
        v = x[sl]
        r_min, r_max = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
        if spec.symmetric:
            s = torch.tensor(max(-r_min, r_max), dtype=torch.float32) / (2 ** (spec.bits - 1) - 1)
            z = 0 if spec.signed else 2 ** (spec.bits - 1)
        else:
            s = torch.tensor(r_max - r_min, dtype=torch.float32) / (spec.q_max - spec.q_min)
        s = torch.clamp(s, min=torch.finfo(torch.float32).eps)
        if not spec.symmetric:
            z = int(torch.round(spec.q_min - torch.tensor(r_min, dtype=torch.float32) / s))
            z = min(max(z, spec.q_min), spec.q_max)
        q[sl] = torch.clamp(torch.round(v / s) + z, spec.q_min, spec.q_max).long()
        scales.append(float(s))
        zps.append(z)
    return q, scales, zps


def _cases():
    for bits in ALLOWED_BITS:
        for symmetric, signed in MODES:
            if symmetric and bits == 1:
                continue
            for g in GRANULARITIES:
                yield bits, symmetric, signed, g


@pytest.mark.parametrize(("bits", "symmetric", "signed", "granularity"), list(_cases()))
def test_matches_reference_and_round_trip_within_half_step(bits, symmetric, signed, granularity):
    torch.manual_seed(bits)
    x = torch.randn(6, 8) * torch.linspace(0.1, 3.0, 8)
    x[0, 0] = 0.0
    spec = QuantSpec(bits, symmetric, signed, granularity)
    qp = choose_qparams(x, spec)
    q = quantize(x, qp, spec)
    ref_q, ref_s, ref_z = _reference(x, spec)
    assert q.dtype == spec.storage_dtype
    assert torch.equal(q.long(), ref_q)
    assert qp.scale.flatten().tolist() == pytest.approx(ref_s, rel=0, abs=0)
    assert qp.zero_point.flatten().tolist() == ref_z
    x_hat = dequantize(q, qp, spec)
    step = qp.scale.float().reshape(-1)
    # every element's own step: broadcast the per-block scale back to x's shape
    block = block_size(x.shape, granularity)
    full_step = qp.scale.float()
    for d, b in enumerate(block):
        full_step = full_step.repeat_interleave(b, dim=d)
    # half a step, plus float32 rounding of x / S (|x / S| reaches 2**16 at 16 bits)
    float_slack = x.abs() * 4 * torch.finfo(torch.float32).eps
    assert bool(((x - x_hat).abs() <= full_step / 2 + float_slack).all())
    assert x_hat[0, 0].item() == 0.0  # real zero is exact
    assert step.numel() == qp.zero_point.numel()


def test_conv_weight_per_channel_and_group_one_code_path():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3)
    per_channel = QuantSpec(8, granularity=PerChannel(0))
    qp = choose_qparams(w, per_channel)
    assert qp.scale.shape == (4, 1, 1, 1)
    expected = w.abs().amax(dim=(1, 2, 3)) / 127
    assert torch.allclose(qp.scale.flatten(), expected, rtol=1e-6)
    grouped = QuantSpec(4, granularity=PerGroup(9))
    flat = w.reshape(4, 27)
    assert torch.equal(
        fake_quantize(flat, grouped).reshape(w.shape),
        fake_quantize(w.reshape(4, 3, 9), grouped).reshape(w.shape),
    )


@pytest.mark.parametrize("scale_dtype", ["float16", "bfloat16"])
def test_low_precision_scales_still_cover_the_range(scale_dtype):
    torch.manual_seed(1)
    x = torch.randn(8, 64)
    spec = QuantSpec(4, symmetric=True, granularity=PerGroup(16), scale_dtype=scale_dtype)
    qp = choose_qparams(x, spec)
    assert qp.scale.dtype == getattr(torch, scale_dtype)
    step = qp.scale.float().repeat_interleave(16, dim=1)
    assert bool(((x - fake_quantize(x, spec, qp)).abs() <= step / 2 * (1 + 1e-3)).all())


def test_all_zero_block_gets_positive_scale_and_exact_zeros():
    x = torch.zeros(2, 4)
    x[1] = torch.tensor([1.0, -2.0, 3.0, 0.5])
    spec = QuantSpec(8, symmetric=False, signed=False, granularity=PerChannel(0))
    assert bool((choose_qparams(x, spec).scale > 0).all())
    assert torch.equal(fake_quantize(x, spec)[0], torch.zeros(4))


@pytest.mark.parametrize("bits", [0, 9, 17, -1, 32])
def test_bad_bits_is_a_clear_error(bits):
    with pytest.raises(ConfigError, match=r"bits: expected 1\.\.8 or 16"):
        QuantSpec(bits=bits)


def test_symmetric_one_bit_is_rejected():
    with pytest.raises(ConfigError, match="symmetric"):
        QuantSpec(bits=1, symmetric=True)


def test_group_size_must_divide_the_dimension():
    with pytest.raises(ConfigError, match="group size 5 does not divide dim 1 of size 12"):
        choose_qparams(torch.randn(3, 12), QuantSpec(granularity=PerGroup(5)))
    with pytest.raises(ConfigError, match=r"PerGroup\.size"):
        PerGroup(0)


def test_spec_round_trips_through_dict():
    spec = QuantSpec(4, False, False, PerGroup(32), "float16")
    assert QuantSpec.from_dict(spec.to_dict()) == spec
