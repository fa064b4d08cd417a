"""Per-row/group k-means codebooks: the same exact solver as the quantization package's
kmeans_1d (one codebook at a time, same "linear" init), and below the uniform grid."""

from __future__ import annotations

import pytest
import torch

from slimtorch.llm.compress.config import GroupKMeansConfig, RTNConfig
from slimtorch.llm.compress.kmeans_llm import kmeans_quantize
from slimtorch.llm.compress.rtn import rtn_quantize
from slimtorch.quantize.granularity import grouped
from slimtorch.quantize.kmeans1d import kmeans_1d


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("group_size", [None, 64, 48])
def test_every_row_and_group_is_kmeans_1d_of_its_own_values(seed, group_size):
    w = torch.randn(6, 200, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q = kmeans_quantize(w, GroupKMeansConfig(bits=4, group_size=group_size, iters=300))
    gs = group_size or 200
    for row, qrow in zip(w, q, strict=True):
        for start in range(0, 200, gs):  # 200 = 4 x 48 + a short group of 8
            values = row[start : start + gs]
            centroids, assign = kmeans_1d(values, 16, init="linear", max_iter=300)
            assert torch.equal(qrow[start : start + gs], centroids[assign])


@pytest.mark.parametrize("group_size", [None, 32])
def test_at_most_2_to_the_bits_values_and_below_uniform_error(group_size):
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(0))
    q = kmeans_quantize(w, GroupKMeansConfig(bits=4, group_size=group_size))
    gs = group_size or 128
    assert max(len(torch.unique(g)) for g in grouped(q, gs).reshape(-1, gs)) <= 16
    # Lloyd's codebook beats the uniform min/max grid with the same number of levels.
    uniform = rtn_quantize(w, RTNConfig(4, group_size))
    assert (q - w).pow(2).mean() < (uniform - w).pow(2).mean()
