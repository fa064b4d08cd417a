"""Batched k-means per row/group against the quantization package's kmeans_1d (one codebook
at a time, numpy, same "linear" init) and against the uniform grid."""

from __future__ import annotations

import pytest
import torch

from slimtorch.llm.compress.config import KMeansConfig
from slimtorch.llm.compress.kmeans_llm import kmeans_quantize, kmeans_rows
from slimtorch.llm.compress.rtn import fake_quantize, grouped
from slimtorch.quantize.kmeans import kmeans_1d


@pytest.mark.parametrize("seed", range(3))
def test_row_codebooks_equal_kmeans_1d(seed):
    x = torch.randn(6, 200, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    centroids, assign = kmeans_rows(x, 16, 300)
    for row, c, a in zip(x, centroids, assign, strict=True):
        ref_c, ref_a = kmeans_1d(row, 16, init="linear", max_iter=300)
        torch.testing.assert_close(c, ref_c, rtol=1e-9, atol=1e-9)
        assert torch.equal(a, ref_a)


@pytest.mark.parametrize("group_size", [None, 32])
def test_at_most_2_to_the_bits_values_and_below_uniform_error(group_size):
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(0))
    q = kmeans_quantize(w, KMeansConfig(bits=4, group_size=group_size))
    gs = group_size or 128
    assert max(len(torch.unique(g)) for g in grouped(q, gs).reshape(-1, gs)) <= 16
    # Lloyd's codebook beats the uniform min/max grid with the same number of levels.
    assert (q - w).pow(2).mean() < (fake_quantize(w, 4, group_size) - w).pow(2).mean()
