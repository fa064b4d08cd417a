"""Mask functions against brute-force references: exact counts, N:M invariant, tie-breaking."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch.core.granularity import Element, Kernel, PerChannel, Vector, parse_granularity
from slimtorch.errors import ConfigError
from slimtorch.prune.masks import global_masks, granular_mask, nm_mask, sparsity_of


def group_key(index: tuple[int, ...], g, ndim: int) -> tuple[int, ...]:
    """The group an element belongs to, written from the definition of each granularity."""
    if isinstance(g, Element):
        return index
    if isinstance(g, Kernel):
        return index[:2]
    if isinstance(g, Vector):
        axis = g.axis % ndim
        return tuple(i for d, i in enumerate(index) if d != axis)
    return (index[g.axis % ndim],)


def ref_mask(scores: torch.Tensor, g, sparsity: float) -> torch.Tensor:
    """Brute force: python sums per group, rank by (-score, group order), keep the top."""
    totals: dict[tuple[int, ...], float] = {}
    for index in itertools.product(*(range(s) for s in scores.shape)):
        key = group_key(index, g, scores.ndim)
        totals[key] = totals.get(key, 0.0) + float(scores[index])
    keys = sorted(totals)  # lexicographic = flat order of the reduced tensor
    n_prune = math.floor(sparsity * len(keys) + 0.5)
    ranked = sorted(range(len(keys)), key=lambda i: (-totals[keys[i]], i))
    kept = {keys[i] for i in ranked[: len(keys) - n_prune]}
    mask = torch.zeros(scores.shape, dtype=torch.bool)
    for index in itertools.product(*(range(s) for s in scores.shape)):
        mask[index] = group_key(index, g, scores.ndim) in kept
    return mask


def ref_nm(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    mask = torch.zeros(scores.shape, dtype=torch.bool)
    for rest in itertools.product(*(range(s) for i, s in enumerate(scores.shape) if i != 1)):
        for start in range(0, scores.shape[1], m):
            idx = [(rest[0], start + j, *rest[1:]) for j in range(m)]
            ranked = sorted(range(m), key=lambda j: (-float(scores[idx[j]]), j))
            for j in ranked[:n]:
                mask[idx[j]] = True
    return mask


GRANULARITIES = [Element(), Kernel(), Vector(-1), Vector(-2), PerChannel(0), PerChannel(1)]


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=4, max_size=4),
    g=st.sampled_from(GRANULARITIES),
    sparsity=st.floats(0.0, 0.99),
    seed=st.integers(0, 10_000),
)
def test_granular_mask_matches_brute_force(shape, g, sparsity, seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 3, shape, generator=gen).float()  # many ties
    mask = granular_mask(scores, g, sparsity)
    assert torch.equal(mask, ref_mask(scores, g, sparsity))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 5),
    cols=st.integers(1, 30),
    sparsity=st.floats(0.0, 0.99),
    seed=st.integers(0, 10_000),
)
def test_element_sparsity_is_exact(rows, cols, sparsity, seed):
    scores = torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed))
    mask = granular_mask(scores, Element(), sparsity)
    n = rows * cols
    assert int((~mask).sum()) == math.floor(sparsity * n + 0.5)
    if mask.any() and (~mask).any():  # every kept score >= every removed one
        assert scores[mask].min() >= scores[~mask].max()


@settings(max_examples=40, deadline=None)
@given(
    nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (2, 8)]),
    out=st.integers(1, 3),
    blocks=st.integers(1, 3),
    k=st.sampled_from([(), (1, 1), (2, 3)]),
    seed=st.integers(0, 10_000),
)
def test_nm_mask_matches_brute_force(nm, out, blocks, k, seed):
    n, m = nm
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 3, (out, blocks * m, *k), generator=gen).float()
    mask = nm_mask(scores, n, m)
    assert torch.equal(mask, ref_nm(scores, n, m))
    per_block = mask.movedim(1, -1).reshape(-1, m).sum(-1)
    assert torch.all(per_block == n)  # the N:M invariant
    assert sparsity_of(mask) == pytest.approx(1 - n / m)


def test_global_masks_match_brute_force_over_the_concatenation():
    gen = torch.Generator().manual_seed(1)
    a = torch.randint(0, 4, (3, 4), generator=gen).float()
    b = torch.randint(0, 4, (5, 2), generator=gen).float()
    masks = global_masks([a, b], Element(), 0.6)
    ref = ref_mask(torch.cat([a.reshape(-1), b.reshape(-1)]), Element(), 0.6)
    assert torch.equal(torch.cat([m.reshape(-1) for m in masks]), ref)


def test_channel_mask_on_conv_removes_whole_filters():
    w = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    mask = granular_mask(w.abs(), PerChannel(0), 0.5)
    per_filter = mask.reshape(8, -1)
    assert torch.all(per_filter.all(1) | (~per_filter).all(1))
    assert int(per_filter.all(1).sum()) == 4


@pytest.mark.parametrize("text", ["3:2", "2:2", "0:4"])
def test_bad_nm_is_a_config_error(text):
    with pytest.raises(ConfigError, match="0 < N < M"):
        parse_granularity(text)


@pytest.mark.parametrize("s", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_sparsity_is_a_config_error(s):
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        granular_mask(torch.rand(4, 4), Element(), s)


def test_nm_needs_divisible_input_dim():
    with pytest.raises(ConfigError, match="multiple of 4"):
        nm_mask(torch.rand(2, 6), 2, 4)


def test_unknown_granularity():
    with pytest.raises(ConfigError, match="granularity"):
        parse_granularity("blocks")
