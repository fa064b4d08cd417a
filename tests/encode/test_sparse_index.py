"""Relative gap coding against a walk-the-positions reference, long gaps included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch.core.size import relative_index_fillers
from slimtorch.encode.huffman import huffman_compress, huffman_decompress
from slimtorch.encode.sparse_index import (
    default_index_bits,
    positions_from_gaps,
    relative_gaps,
    relative_gaps_ref,
)
from slimtorch.errors import ConfigError


@settings(max_examples=100, deadline=None)
@given(st.sets(st.integers(0, 100_000), max_size=200), st.integers(1, 10))
def test_gaps_match_reference_and_round_trip(pos: set[int], bits: int) -> None:
    positions = np.array(sorted(pos), dtype=np.int64)
    gaps, filler = relative_gaps(positions, bits)
    ref_gaps, ref_filler = relative_gaps_ref(positions.tolist(), bits)
    assert gaps.tolist() == ref_gaps and filler.tolist() == ref_filler
    assert gaps.max(initial=0) < 2**bits
    decoded = positions_from_gaps(gaps)
    assert np.array_equal(decoded[~filler], positions)
    stream = huffman_compress(gaps, alphabet_size=2**bits)  # gaps are then Huffman coded
    assert np.array_equal(huffman_decompress(stream), gaps)


def test_paper_example_three_bits() -> None:
    # Han et al. 2016, Fig. 2: 3-bit gaps, a run of 8 zeros needs one filler zero.
    gaps, filler = relative_gaps(np.array([1, 4, 13]), 3)
    assert gaps.tolist() == [1, 2, 7, 0] and filler.tolist() == [False, False, True, False]


def test_very_long_gap() -> None:
    positions = np.array([3, 1_000_003])
    gaps, filler = relative_gaps(positions, 5)
    assert int(filler.sum()) == (1_000_003 - 3 - 1) // 32
    assert np.array_equal(positions_from_gaps(gaps)[~filler], positions)


def test_filler_count_is_at_most_the_profilers_estimate() -> None:
    rng = np.random.default_rng(1)
    import torch

    w = torch.tensor((rng.random(5000) < 0.02) * rng.standard_normal(5000), dtype=torch.float32)
    positions = np.flatnonzero(w.numpy())
    _, filler = relative_gaps(positions, 5)
    # The profiler stores the full gap (its largest is 2**bits - 1); we store zeros skipped
    # (up to 2**bits - 1 skipped, a jump of 2**bits), so we never need more fillers.
    assert int(filler.sum()) <= relative_index_fillers(w, 5)


def test_bad_positions_and_bits() -> None:
    with pytest.raises(ConfigError, match="strictly increasing"):
        relative_gaps(np.array([3, 3]), 5)
    with pytest.raises(ConfigError, match="index_bits"):
        relative_gaps(np.array([1]), 0)
    assert default_index_bits((10, 5)) == 5 and default_index_bits((4, 3, 3, 3)) == 8
