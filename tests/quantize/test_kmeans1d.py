"""The one 1-D k-means: many codebooks at once equal one at a time, each a Lloyd fixed point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch.errors import ConfigError
from slimtorch.quantize import kmeans1d
from slimtorch.quantize.kmeans1d import _linspace, kmeans_1d, kmeans_1d_rows


def _textbook_lloyd(x: np.ndarray, c: np.ndarray, max_iter: int = 300):
    """Assign to the nearest centroid (first on ties), move centroids to their means."""
    x, c, labels = x.astype(np.float64), c.astype(np.float64).copy(), None
    for _ in range(max_iter):
        new = np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(c)):
            if np.any(labels == j):
                c[j] = x[labels == j].mean()
    return c, np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 6),
    n=st.integers(1, 60),
    k=st.integers(1, 9),
    init=st.sampled_from(["linear", "density"]),
    seed=st.integers(0, 10_000),
)
def test_rows_equal_one_codebook_at_a_time(rows, n, k, init, seed):
    x = torch.randn(rows, n, generator=torch.Generator().manual_seed(seed))
    x[0, : n // 2] = 0.25  # repeated values and a row that may converge first
    centroids, assign = kmeans_1d_rows(x, k, init=init)
    for r in range(rows):
        c, a = kmeans_1d(x[r], k, init=init)
        assert torch.equal(centroids[r], c) and torch.equal(assign[r], a)


@pytest.mark.parametrize("k", [2, 4, 16])
def test_every_row_reaches_the_textbook_fixed_point(k):
    x = torch.randn(5, 400, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    centroids, assign = kmeans_1d_rows(x, k)
    for row, c, a in zip(x.numpy(), centroids.numpy(), assign.numpy(), strict=True):
        ref_c, ref_a = _textbook_lloyd(row, np.linspace(row.min(), row.max(), k))
        np.testing.assert_allclose(c, ref_c, rtol=1e-12, atol=1e-12)
        assert np.array_equal(a, ref_a)


def test_block_sum_path_matches_reference_for_rows(monkeypatch):
    monkeypatch.setattr(kmeans1d, "FULL_PREFIX_MAX", 50)
    monkeypatch.setattr(kmeans1d, "SUM_BLOCK", 16)
    x = torch.randn(3, 300, generator=torch.Generator().manual_seed(0))
    centroids, assign = kmeans_1d_rows(x, 6)
    for row, c, a in zip(x.numpy(), centroids.numpy(), assign.numpy(), strict=True):
        ref_c, ref_a = _textbook_lloyd(row, np.linspace(row.min(), row.max(), 6))
        np.testing.assert_allclose(c, ref_c, rtol=1e-5, atol=1e-6)
        assert np.array_equal(a, ref_a)


@settings(max_examples=50, deadline=None)
@given(
    lo=st.floats(-1e30, 1e30, allow_subnormal=True),
    delta=st.sampled_from([0.0, 5e-324, 1e-310, 1.0, 3.7, 1e20]),
    k=st.integers(1, 20),
)
def test_linspace_is_numpy_linspace_bit_for_bit(lo, delta, k):
    lo_arr, hi_arr = np.array([lo, 0.0]), np.array([lo + delta, 1.0])
    got = _linspace(lo_arr, hi_arr, k)
    for r in range(2):
        assert np.array_equal(got[r], np.linspace(lo_arr[r], hi_arr[r], k))


def test_random_init_first_row_is_the_one_codebook_draw():
    x = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    c_rows, _ = kmeans_1d_rows(x, 4, init="random", seed=7)
    c_one, _ = kmeans_1d(x[0], 4, init="random", seed=7)
    assert torch.equal(c_rows[0], c_one)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="2-D"):
        kmeans_1d_rows(torch.randn(4), 2)
    with pytest.raises(ConfigError, match="NaN"):
        kmeans_1d_rows(torch.tensor([[1.0, float("nan")]]), 2)
    with pytest.raises(ConfigError, match="init"):
        kmeans_1d_rows(torch.randn(2, 4), 2, init="kmeans++")  # type: ignore[arg-type]
