"""Packed sub-byte storage: bit-exact round trips and agreement with a bit-string reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch.errors import ConfigError
from slimtorch.quantize.packing import (
    PackedTensor,
    pack,
    pack_int4_cpu,
    packed_nbytes,
    unpack,
    unpack_int4_cpu,
)


def _reference_pack(values: list[int], bits: int) -> bytes:
    """Build the little-endian bit stream one bit at a time."""
    stream = []
    for v in values:
        u = v & ((1 << bits) - 1)
        stream.extend((u >> i) & 1 for i in range(bits))
    stream += [0] * (-len(stream) % 8)
    return bytes(
        sum(b << i for i, b in enumerate(stream[k : k + 8])) for k in range(0, len(stream), 8)
    )


@st.composite
def _packable(draw):
    bits = draw(st.integers(1, 16))
    signed = draw(st.booleans())
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    values = draw(st.lists(st.integers(low, high), min_size=0, max_size=70))
    return bits, signed, values


@settings(max_examples=300, deadline=None)
@given(_packable())
def test_pack_matches_bit_string_reference_and_round_trips(case):
    bits, signed, values = case
    q = torch.tensor(values, dtype=torch.int32)
    packed = pack(q, bits, signed)
    assert packed.data.dtype == torch.uint8
    assert packed.data.numel() == packed_nbytes(len(values), bits)
    assert bytes(packed.data.tolist()) == _reference_pack(values, bits)
    assert unpack(packed).to(torch.int32).tolist() == values


def test_golden_bytes_int4_low_nibble_first():
    q = torch.tensor([[1, -2], [7, -8]], dtype=torch.int8)
    packed = pack(q, 4, signed=True)
    assert packed.data.tolist() == [0xE1, 0x87]
    assert torch.equal(unpack(packed), q)


def test_golden_bytes_uint3_straddles_bytes():
    packed = pack(torch.tensor([5, 6, 7], dtype=torch.uint8), 3, signed=False)
    # stream 101 011 111 (LSB first) -> 0b11110101, 0b1
    assert packed.data.tolist() == [0b11110101, 0b1]


def test_out_of_range_values_and_bad_lengths_are_clear_errors():
    with pytest.raises(ConfigError, match="out of range for unsigned 2-bit"):
        pack(torch.tensor([4]), 2, signed=False)
    bad = PackedTensor(torch.zeros(1, dtype=torch.uint8), (5,), 4, False)
    with pytest.raises(ConfigError, match="need 3"):
        unpack(bad)


@settings(max_examples=10, deadline=None)
@given(n=st.sampled_from([16, 32, 48]), k=st.sampled_from([32, 64, 128]), seed=st.integers(0, 99))
def test_int4_cpu_layout_round_trips(n, k, seed):
    codes = torch.randint(0, 16, (n, k), generator=torch.Generator().manual_seed(seed))
    packed = pack_int4_cpu(codes)
    assert torch.equal(unpack_int4_cpu(packed, n, k, 32), codes.to(torch.int32))
