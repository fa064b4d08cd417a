"""Sparse execution equals dense execution (hypothesis over shapes and sparsity)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from slimtorch.errors import ConfigError
from slimtorch.prune.sparse import (
    SparseConv2d,
    SparseLinear,
    breakeven_sparsity,
    csr_int32,
    is_nm_sparse,
    load_breakeven,
    to_semi_structured,
    to_sparse,
)


def _sparse_weight(shape: tuple[int, ...], sparsity: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    return w * (torch.rand(shape, generator=g) >= sparsity)


@settings(max_examples=40, deadline=None)
@given(
    out_f=st.integers(1, 40),
    in_f=st.integers(1, 40),
    batch=st.sampled_from([1, 3, 8]),
    sparsity=st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]),
    bias=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_sparse_linear_equals_dense(out_f, in_f, batch, sparsity, bias, seed) -> None:
    lin = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(_sparse_weight((out_f, in_f), sparsity, seed))
    x = torch.randn(batch, 2, in_f)  # extra leading dim: [..., in]
    with torch.inference_mode():  # the CSR path must work where measure_latency runs
        got = SparseLinear.from_dense(lin)(x)
        expected = F.linear(x, lin.weight, lin.bias)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    c_in=st.integers(1, 6),
    c_out=st.integers(1, 6),
    k=st.sampled_from([1, 3]),
    stride=st.sampled_from([1, 2]),
    padding=st.sampled_from([0, 1]),
    size=st.integers(3, 9),
    sparsity=st.sampled_from([0.0, 0.7, 0.95]),
    seed=st.integers(0, 1000),
)
def test_sparse_conv_equals_dense(c_in, c_out, k, stride, padding, size, sparsity, seed) -> None:
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding)
    with torch.no_grad():
        conv.weight.copy_(_sparse_weight(tuple(conv.weight.shape), sparsity, seed))
    x = torch.randn(2, c_in, size, size)
    with torch.no_grad():
        torch.testing.assert_close(SparseConv2d(conv)(x), conv(x), atol=1e-5, rtol=1e-5)


def test_csr_arrays_against_a_dense_scan() -> None:
    w = _sparse_weight((5, 7), 0.6, 3)
    crow, col, values = csr_int32(w)
    rebuilt = torch.zeros_like(w)
    for r in range(5):
        for j in range(int(crow[r]), int(crow[r + 1])):
            rebuilt[r, int(col[j])] = values[j]
    assert crow.dtype == col.dtype == torch.int32
    assert torch.equal(rebuilt, w) and values.numel() == int((w != 0).sum())


def test_to_sparse_switches_only_layers_above_the_threshold() -> None:
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.Conv2d(1, 1, 1))
    with torch.no_grad():
        model[0].weight.copy_(_sparse_weight((16, 16), 0.95, 0))
        model[2].weight.copy_(_sparse_weight((16, 16), 0.3, 1))
    switched = to_sparse(model, min_sparsity=0.8)
    assert isinstance(switched[0], SparseLinear) and type(switched[2]) is nn.Linear
    assert type(model[0]) is nn.Linear  # the input model is unchanged
    only_second = to_sparse(model, min_sparsity=0.0, layers=r"2")
    assert isinstance(only_second[2], SparseLinear) and type(only_second[0]) is nn.Linear
    table = {"linear": {1: 0.9, 64: 0.99}, "conv2d": {1: None}}
    assert isinstance(to_sparse(model, batch_size=1, table=table)[0], SparseLinear)
    assert type(to_sparse(model, batch_size=64, table=table)[0]) is nn.Linear
    x = torch.randn(4, 16)
    with torch.no_grad():
        torch.testing.assert_close(switched[:3](x), model[:3](x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="min_sparsity"):
        to_sparse(model, min_sparsity=1.5)


def test_breakeven_table_lookup_and_file(tmp_path) -> None:
    table = {"linear": {1: 0.6, 8: 0.7, 64: 0.85}, "conv2d": {1: None, 64: 0.97}}
    assert breakeven_sparsity("linear", 1, table) == 0.6
    assert breakeven_sparsity("linear", 10, table) == 0.7  # nearest in log scale
    assert breakeven_sparsity("conv2d", 2, table) is None
    assert breakeven_sparsity("lstm", 2, table) is None
    path = tmp_path / "b.json"
    path.write_text(
        json.dumps({"breakeven": {k: {str(b): v for b, v in r.items()} for k, r in table.items()}})
    )
    assert load_breakeven(path) == table
    with pytest.raises(ConfigError, match="break-even"):
        load_breakeven(tmp_path / "missing.json")


def _nm_reference(w: torch.Tensor, n: int, m: int) -> bool:
    rows = w.tolist()
    for row in rows:
        if len(row) % m:
            return False
        for start in range(0, len(row), m):
            if sum(1 for v in row[start : start + m] if v != 0) > n:
                return False
    return True


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 4),
    groups=st.integers(1, 4),
    nm=st.sampled_from([(1, 2), (2, 4), (4, 8)]),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_is_nm_sparse_against_reference(rows, groups, nm, density, seed) -> None:
    n, m = nm
    w = _sparse_weight((rows, groups * m), 1 - density, seed)
    assert is_nm_sparse(w, n, m) == _nm_reference(w, n, m)


def test_semi_structured_needs_cuda_on_this_machine() -> None:
    lin = nn.Linear(8, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0, 2, 0] * 2, [0, 3, 0, 4] * 2]))
    with pytest.raises(ConfigError, match="CUDA"):
        to_semi_structured(lin)
    with pytest.raises(ConfigError, match="2:4"):
        to_semi_structured(nn.Linear(8, 2))
    with pytest.raises(ConfigError, match="N:M"):
        is_nm_sparse(lin.weight, 4, 4)
