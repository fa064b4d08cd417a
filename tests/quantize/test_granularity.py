"""Blocks of every granularity against explicit slicing, ragged groups included."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch.quantize.granularity import (
    PerGroup,
    from_blocks,
    granularity_from_dict,
    granularity_to_dict,
    grouped,
    to_blocks,
    ungrouped,
)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 5),
    cols=st.integers(1, 40),
    size=st.integers(1, 16),
    axis=st.sampled_from([0, 1, -1]),
    seed=st.integers(0, 1000),
)
def test_ragged_group_blocks_hold_the_slices(rows, cols, size, axis, seed):
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    g = PerGroup(size, axis=axis, ragged=True)
    blocks, scale_shape = to_blocks(x, g)
    a = axis % 2
    assert scale_shape[a] == math.ceil(x.shape[a] / size)
    mins = blocks.amin(dim=(1, 3)).reshape(scale_shape)
    maxs = blocks.amax(dim=(1, 3)).reshape(scale_shape)
    for i in range(scale_shape[a]):
        part = x.narrow(a, i * size, min(size, x.shape[a] - i * size))
        assert torch.equal(mins.select(a, i), part.amin(dim=a))  # padding changes no extreme
        assert torch.equal(maxs.select(a, i), part.amax(dim=a))
    assert torch.equal(from_blocks(blocks, x.shape), x)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 30), size=st.integers(1, 12))
def test_grouped_pads_with_the_last_value_and_ungrouped_drops_it(rows, cols, size):
    w = torch.arange(rows * cols, dtype=torch.float32).reshape(rows, cols)
    wg = grouped(w, size)
    assert wg.shape == (rows, math.ceil(cols / size), size)
    flat = wg.reshape(rows, -1)
    assert torch.equal(flat[:, :cols], w)
    assert bool((flat[:, cols:] == w[:, -1:]).all())
    assert torch.equal(ungrouped(wg, cols), w)
    assert grouped(w, None).shape == (rows, 1, cols)


def test_zero_dim_tensor_round_trips():
    x = torch.tensor(3.0)
    blocks, shape = to_blocks(x, PerGroup(1))
    assert shape == (1,) and torch.equal(from_blocks(blocks, x.shape), x)


def test_ragged_flag_serializes_only_when_set():
    assert granularity_to_dict(PerGroup(8)) == {"kind": "group", "size": 8, "axis": -1}
    for g in (PerGroup(8), PerGroup(8, 0, ragged=True)):
        assert granularity_from_dict(granularity_to_dict(g)) == g
