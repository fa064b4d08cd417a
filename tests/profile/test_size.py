"""Size counts against closed forms and a slow reference for relative indexing."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtorch.core.size import (
    WeightFormat,
    dtype_bits,
    model_size_bits,
    relative_index_fillers,
    scale_count,
    tensor_size_bits,
)
from slimtorch.errors import ConfigError


def _sparse_matrix() -> torch.Tensor:
    """3 x 8 with 5 nonzeros."""
    t = torch.zeros(3, 8)
    t[0, 1], t[0, 7], t[1, 0], t[2, 3], t[2, 4] = 1.0, -2.0, 3.0, 4.0, 5.0
    return t


def _fillers_ref(flat: list[float], index_bits: int) -> int:
    """Walk the tensor, emitting a filler whenever the gap would overflow."""
    max_gap, last, fillers = 2**index_bits - 1, 0, 0
    for pos, value in enumerate(flat):
        if value == 0:
            continue
        while pos - last > max_gap:
            last += max_gap
            fillers += 1
        last = pos
    return fillers


def test_dense_is_numel_times_bits() -> None:
    size = tensor_size_bits(_sparse_matrix(), WeightFormat(bits=8, sparse="dense"))
    assert (size.values_bits, size.index_bits, size.total_bits) == (24 * 8, 0, 24 * 8)
    assert (size.numel, size.nonzeros, size.layout) == (24, 5, "dense")


def test_csr_closed_form() -> None:
    # col bits ceil(log2 8) = 3; row_ptr bits ceil(log2(5 + 1)) = 3; 4 row pointers.
    size = tensor_size_bits(_sparse_matrix(), WeightFormat(bits=8, sparse="csr"))
    assert size.values_bits == 5 * 8
    assert size.index_bits == 5 * 3 + 4 * 3
    assert size.total_bits == 5 * 8 + 5 * 3 + 4 * 3


def test_csr_with_explicit_column_bits() -> None:
    size = tensor_size_bits(_sparse_matrix(), WeightFormat(bits=8, sparse="csr", index_bits=16))
    assert size.index_bits == 5 * 16 + 4 * 3


def test_csr_rejects_too_few_column_bits() -> None:
    with pytest.raises(ConfigError, match="index_bits"):
        tensor_size_bits(_sparse_matrix(), WeightFormat(sparse="csr", index_bits=2))


def test_csr_one_dim_is_one_row() -> None:
    t = torch.tensor([0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0])
    size = tensor_size_bits(t, WeightFormat(bits=4, sparse="csr"))
    # cols 10 -> 4 bits; nnz 3 -> row_ptr bits 2; 2 row pointers.
    assert size.index_bits == 3 * 4 + 2 * 2
    assert size.values_bits == 3 * 4


def test_bitmask_closed_form() -> None:
    size = tensor_size_bits(_sparse_matrix(), WeightFormat(bits=8, sparse="bitmask"))
    assert (size.values_bits, size.index_bits, size.total_bits) == (40, 24, 64)


def test_relative_matches_deep_compression_figure() -> None:
    # Han et al. 2016 Fig. 2: nonzeros at 1, 4, 15; with 3-bit gaps (max 7) the gap of 11
    # from 4 to 15 needs one filler.
    t = torch.zeros(16)
    t[1], t[4], t[15] = 3.4, 0.9, 1.7
    size = tensor_size_bits(t, WeightFormat(bits=4, sparse="relative", index_bits=3))
    assert size.values_bits == 4 * 4
    assert size.index_bits == 4 * 3


def test_relative_default_bits_linear_and_conv() -> None:
    fc = torch.zeros(2, 40)
    fc[0, 0], fc[1, 0] = 1.0, 1.0  # gap 40 > 31 -> one filler at 5 bits
    size = tensor_size_bits(fc, WeightFormat(bits=8, sparse="relative"))
    assert size.index_bits == 3 * 5
    conv = torch.zeros(2, 10, 5, 6)
    conv.view(-1)[0], conv.view(-1)[599] = 1.0, 1.0  # gap 599 -> ceil(599/255)-1 = 2
    size = tensor_size_bits(conv, WeightFormat(bits=8, sparse="relative"))
    assert (size.values_bits, size.index_bits) == (4 * 8, 4 * 8)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 0.0, 0.0, 1.5, -2.0]), min_size=0, max_size=200),
    st.integers(min_value=1, max_value=5),
)
def test_relative_fillers_match_slow_reference(flat: list[float], index_bits: int) -> None:
    t = torch.tensor(flat, dtype=torch.float32)
    assert relative_index_fillers(t, index_bits) == _fillers_ref(flat, index_bits)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=1, max_value=12),
    st.floats(min_value=0.0, max_value=1.0),
    st.integers(min_value=1, max_value=32),
    st.integers(min_value=0, max_value=2**31 - 1),
)
def test_auto_is_smallest_and_never_exceeds_dense(
    rows: int, cols: int, density: float, bits: int, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(rows, cols, generator=gen) * (torch.rand(rows, cols, generator=gen) < density)
    totals = {
        lay: tensor_size_bits(t, WeightFormat(bits=bits, sparse=lay)).total_bits
        for lay in ("dense", "csr", "bitmask")
    }
    auto = tensor_size_bits(t, WeightFormat(bits=bits))
    assert auto.total_bits == min(totals.values()) <= totals["dense"]
    assert totals[auto.layout] == auto.total_bits


def test_codebook_adds_centroids() -> None:
    t = torch.ones(10, 10)
    size = tensor_size_bits(t, WeightFormat(bits=4, codebook=True, codebook_entry_bits=16))
    assert size.codebook_bits == 2**4 * 16
    assert size.values_bits == 100 * 4
    assert size.total_bits == 100 * 4 + 2**4 * 16


@pytest.mark.parametrize(
    ("shape", "fmt", "expected"),
    [
        ((8, 300), WeightFormat(granularity="none"), 0),
        ((8, 300), WeightFormat(granularity="tensor"), 1),
        ((8, 300), WeightFormat(granularity="channel"), 8),
        ((8, 300), WeightFormat(granularity="group", group_size=128), 8 * 3),
        ((8, 256), WeightFormat(granularity="group", group_size=128), 8 * 2),
        ((16, 8, 3, 3), WeightFormat(granularity="channel"), 16),
        ((16, 8, 3, 3), WeightFormat(granularity="group", group_size=32), 16 * 3),
        ((10,), WeightFormat(granularity="channel"), 1),
        ((10,), WeightFormat(granularity="group", group_size=4), 3),
        ((), WeightFormat(granularity="tensor"), 1),
    ],
)
def test_scale_count(shape: tuple[int, ...], fmt: WeightFormat, expected: int) -> None:
    assert scale_count(shape, fmt) == expected


def test_scales_and_zero_points_in_total() -> None:
    fmt = WeightFormat(
        bits=4, granularity="group", group_size=64, scale_bits=16, zero_point_bits=4, sparse="dense"
    )
    size = tensor_size_bits(torch.randn(32, 128), fmt)
    groups = 32 * 2
    assert (size.scale_bits, size.zero_point_bits) == (groups * 16, groups * 4)
    assert size.total_bits == 32 * 128 * 4 + groups * (16 + 4)
    assert size.total_bytes == math.ceil(size.total_bits / 8)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bits": 0},
        {"bits": 65},
        {"granularity": "group"},
        {"granularity": "channel", "group_size": 8},
        {"granularity": "group", "group_size": 0},
        {"granularity": "row"},
        {"sparse": "coo"},
        {"sparse": "dense", "index_bits": 4},
        {"sparse": "relative", "index_bits": 0},
        {"zero_point_bits": -1},
    ],
)
def test_weight_format_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        WeightFormat(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dtype", "bits"),
    [
        (torch.float32, 32),
        (torch.float16, 16),
        (torch.bfloat16, 16),
        (torch.int8, 8),
        (torch.int64, 64),
        (torch.bool, 1),
        (torch.uint4, 4),
    ],
)
def test_dtype_bits(dtype: torch.dtype, bits: int) -> None:
    assert dtype_bits(dtype) == bits


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 4, bias=False)
        self.head.weight = self.fc.weight  # tied: counted once
        self.register_buffer("scratch", torch.zeros(100), persistent=False)


def test_model_size_without_formats_uses_dtypes() -> None:
    net = _Net()
    net.bn.num_batches_tracked.fill_(3)
    net.fc.bias.data[:2] = 0.0  # auto: bitmask 4 + 2 * 32 = 68 < 128 dense
    sizes = model_size_bits(net)
    assert list(sizes) == [
        "conv.weight",
        "conv.bias",
        "bn.weight",
        "bn.bias",
        "fc.weight",
        "fc.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
    ]
    assert sizes["conv.weight"].total_bits == 4 * 3 * 3 * 3 * 32
    assert sizes["bn.running_var"].total_bits == 4 * 32  # ones: dense wins
    assert sizes["bn.num_batches_tracked"].total_bits == 64
    assert (sizes["fc.bias"].layout, sizes["fc.bias"].total_bits) == ("bitmask", 68)


def test_model_size_formats_match_by_name_module_and_regex() -> None:
    formats = {
        "fc.bias": WeightFormat(bits=16, sparse="dense"),
        "fc": WeightFormat(bits=4, sparse="dense"),
        r"conv\.w.*": WeightFormat(bits=2, sparse="dense"),
        r"fc\..*": WeightFormat(bits=1, sparse="dense"),  # shadowed by "fc"
    }
    net = _Net()
    net.bn.num_batches_tracked.fill_(1)
    sizes = model_size_bits(net, formats, default=WeightFormat(bits=8, sparse="dense"))
    assert sizes["fc.bias"].total_bits == 4 * 16
    assert sizes["fc.weight"].total_bits == 16 * 4
    assert sizes["conv.weight"].total_bits == 108 * 2
    assert sizes["conv.bias"].total_bits == 4 * 8  # default
    assert sizes["bn.num_batches_tracked"].total_bits == 64  # default is for floats only


def test_model_size_bad_regex() -> None:
    with pytest.raises(ConfigError, match="regex"):
        model_size_bits(_Net(), {"fc[": WeightFormat()})
