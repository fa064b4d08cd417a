"""Magnitude, Wanda and SparseGPT masks: exact sparsity, N:M invariants, and output error
ordering on inputs with outlier channels (Wanda < magnitude, SparseGPT < Wanda)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_compress_helpers import outlier_inputs

from slimtorch.errors import ConfigError
from slimtorch.llm.compress.config import MagnitudeConfig, SparseGPTConfig, WandaConfig
from slimtorch.llm.compress.rtn import output_error
from slimtorch.llm.compress.sparsegpt import sparsegpt_prune
from slimtorch.llm.compress.wanda import magnitude_prune, wanda_prune
from slimtorch.quantize.calibration import HessianAccumulator, InputNormAccumulator

NM_PATTERNS = [(2, 4), (4, 8)]


def _layer(seed, rows=16, cols=64, tokens=256):
    x = outlier_inputs(tokens, cols, seed=seed)
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed + 7))
    h, norms = HessianAccumulator(cols), InputNormAccumulator(cols)
    h.add_batch(x)
    norms.add_batch(x)
    return x, w, h.hessian(), norms.norms()


def _all(w, h, norms, sparsity=0.5, nm=None):
    return {
        "magnitude": magnitude_prune(w, MagnitudeConfig(sparsity, nm)),
        "wanda": wanda_prune(w, norms, WandaConfig(sparsity, nm)),
        "sparsegpt": sparsegpt_prune(w, h, SparseGPTConfig(sparsity, nm, block_size=32)),
    }


@pytest.mark.parametrize("nm", NM_PATTERNS)
def test_nm_invariant_every_method(nm):
    _, w, h, norms = _layer(0)
    n, m = nm
    for name, p in _all(w, h, norms, nm=nm).items():
        nonzero = (p != 0).reshape(p.shape[0], -1, m).sum(-1)
        assert (nonzero == n).all(), name


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), sparsity=st.sampled_from([0.25, 0.5, 0.7]))
def test_exact_unstructured_sparsity(seed, sparsity):
    _, w, h, norms = _layer(seed)
    pruned = _all(w, h, norms, sparsity)
    rows, cols = w.shape
    # Wanda compares within each output row: every row loses exactly int(cols * s).
    assert ((pruned["wanda"] == 0).sum(1) == int(cols * sparsity)).all()
    assert int((pruned["magnitude"] == 0).sum()) == int(w.numel() * sparsity)
    # SparseGPT selects within each 32-column block of the solve.
    blocks = (pruned["sparsegpt"] == 0).reshape(rows, cols // 32, 32).sum((0, 2))
    assert (blocks == int(rows * 32 * sparsity)).all()


def test_wanda_keeps_what_magnitude_keeps_when_inputs_are_uniform():
    w = torch.randn(8, 16)
    by_magnitude = magnitude_prune(w, MagnitudeConfig(nm=(2, 4))) != 0
    by_wanda = wanda_prune(w, torch.ones(16), WandaConfig(nm=(2, 4))) != 0
    assert torch.equal(by_magnitude, by_wanda)


@pytest.mark.parametrize("nm", [None, *NM_PATTERNS])
@pytest.mark.parametrize("seed", range(4))
def test_error_ordering_on_outlier_inputs(seed, nm):
    x, w, h, norms = _layer(seed)
    err = {k: output_error(w, p, x) for k, p in _all(w, h, norms, nm=nm).items()}
    assert err["wanda"] < err["magnitude"]
    assert err["sparsegpt"] < err["wanda"]


def test_sparsegpt_nm_needs_aligned_blocks():
    _, w, h, _ = _layer(0)
    with pytest.raises(ConfigError, match="block_size"):
        sparsegpt_prune(w, h, SparseGPTConfig(nm=(2, 4), block_size=6))


def test_nm_needs_divisible_columns():
    with pytest.raises(ConfigError, match="multiple of 4"):
        magnitude_prune(torch.randn(2, 6), MagnitudeConfig(nm=(2, 4)))
