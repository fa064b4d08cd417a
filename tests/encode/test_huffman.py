"""Huffman coding against references: brute-force optimal lengths, heapq Huffman, bit strings."""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch.encode.huffman import (
    HuffmanError,
    canonical_codes,
    huffman_code_lengths,
    huffman_compress,
    huffman_decode,
    huffman_decode_ref,
    huffman_decompress,
    huffman_encode,
    huffman_encode_ref,
)
from slimtorch.errors import ConfigError


def _brute_force_cost(counts: list[int], max_length: int) -> int:
    """Minimum sum(count * length) over all length vectors satisfying Kraft's inequality."""
    used = [c for c in counts if c > 0]
    if len(used) <= 1:
        return sum(used)
    best = None
    for lengths in itertools.product(range(1, max_length + 1), repeat=len(used)):
        if sum(2.0**-ln for ln in lengths) <= 1.0:
            cost = sum(c * ln for c, ln in zip(used, lengths, strict=True))
            best = cost if best is None else min(best, cost)
    return best


def _heap_huffman_cost(counts: list[int]) -> int:
    """Classic Huffman: the total cost is the sum of all merged weights."""
    heap = [c for c in counts if c > 0]
    if len(heap) <= 1:
        return sum(heap)
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


def _codes_as_strings(lengths: np.ndarray) -> list[str]:
    codes = canonical_codes(lengths)
    return [format(int(codes[s]), f"0{int(ln)}b") for s, ln in enumerate(lengths) if ln > 0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 50), min_size=1, max_size=6),
    st.integers(1, 5),
)
def test_lengths_optimal_against_brute_force(counts: list[int], max_length: int) -> None:
    used = sum(c > 0 for c in counts)
    if used > 2**max_length:
        with pytest.raises(ConfigError):
            huffman_code_lengths(np.array(counts), max_length)
        return
    lengths = huffman_code_lengths(np.array(counts), max_length)
    assert int((lengths > 0).sum()) == used
    assert lengths.max(initial=0) <= max_length
    cost = int((np.array(counts) * lengths).sum())
    assert cost == _brute_force_cost(counts, max_length)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=2, max_size=300))
def test_unlimited_lengths_match_classic_huffman(counts: list[int]) -> None:
    lengths = huffman_code_lengths(np.array(counts), max_length=24)
    if sum(c > 0 for c in counts) >= 2:
        assert int((np.array(counts) * lengths).sum()) == _heap_huffman_cost(counts)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=200), st.integers(1, 15))
def test_canonical_code_is_prefix_free_and_limited(counts: list[int], max_length: int) -> None:
    if sum(c > 0 for c in counts) > 2**max_length:
        return
    lengths = huffman_code_lengths(np.array(counts), max_length)
    assert lengths.max(initial=0) <= max_length
    codes = sorted(_codes_as_strings(lengths))
    assert len(set(codes)) == len(codes)
    for a, b in itertools.pairwise(codes):  # in sorted order a prefix sits right before
        assert not b.startswith(a)
    assert sum(2.0 ** -len(c) for c in codes) <= 1.0


def test_length_limit_binds_and_stays_optimal() -> None:
    fib = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55]  # Fibonacci counts make the deepest tree
    assert huffman_code_lengths(np.array(fib), 24).max() == 9
    limited = huffman_code_lengths(np.array(fib), 4)
    assert limited.max() == 4
    assert int((np.array(fib) * limited).sum()) == _brute_force_cost(fib, 4)


symbol_arrays = st.integers(1, 300).flatmap(
    lambda k: st.lists(st.integers(0, k - 1), max_size=400).map(lambda x: (k, x))
)


@settings(max_examples=100, deadline=None)
@given(symbol_arrays, st.integers(9, 15))
def test_round_trip_matches_reference(case: tuple[int, list[int]], max_length: int) -> None:
    alphabet, symbols = case
    x = np.array(symbols, dtype=np.int64)
    stream = huffman_compress(x, alphabet_size=alphabet, max_length=max_length)
    assert (stream.data, stream.nbits) == huffman_encode_ref(x, stream.lengths)
    assert np.array_equal(huffman_decompress(stream), x)
    assert np.array_equal(huffman_decode_ref(stream.data, stream.lengths, len(x)), x)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 5), st.integers(0, 100))
def test_single_symbol_streams(symbol: int, n: int) -> None:
    x = np.full(n, symbol)
    stream = huffman_compress(x, alphabet_size=6)
    assert stream.nbits == n  # one bit per symbol
    assert np.array_equal(huffman_decompress(stream), x)


def test_empty_stream() -> None:
    stream = huffman_compress(np.array([], dtype=np.int64), alphabet_size=4)
    assert stream.data == b"" and stream.nbits == 0 and not stream.lengths.any()
    assert huffman_decompress(stream).size == 0


def test_long_skewed_stream_round_trip() -> None:
    rng = np.random.default_rng(0)
    x = np.minimum(rng.geometric(0.2, size=200_000) - 1, 255)
    stream = huffman_compress(x, alphabet_size=256)
    assert np.array_equal(huffman_decompress(stream), x)
    entropy_bits = -(np.bincount(x) / x.size * np.log2(np.bincount(x) / x.size + 1e-300)).sum()
    assert stream.nbits / x.size < entropy_bits + 1  # Huffman is within 1 bit of entropy


def test_encode_rejects_uncoded_symbols() -> None:
    with pytest.raises(ConfigError, match="code length 0"):
        huffman_encode(np.array([0, 2]), np.array([1, 1, 0]))
    with pytest.raises(ConfigError, match="symbols must be in"):
        huffman_encode(np.array([0, 3]), np.array([1, 1, 0]))


def test_decode_rejects_truncated_extra_and_invalid() -> None:
    x = np.array([0, 1, 2, 3, 2, 1, 0] * 5)
    stream = huffman_compress(x)
    with pytest.raises(HuffmanError, match="truncated"):
        huffman_decode(stream.data[:-2], stream.lengths, stream.count)
    with pytest.raises(HuffmanError, match="bytes"):
        huffman_decode(stream.data + b"\x00", stream.lengths, stream.count)
    single = huffman_compress(np.zeros(8, dtype=np.int64))  # code "0"; "1" is invalid
    with pytest.raises(HuffmanError, match="invalid code"):
        huffman_decode(b"\x01", single.lengths, 8)


def test_kraft_violation_refused() -> None:
    with pytest.raises(ConfigError, match="Kraft"):
        canonical_codes(np.array([1, 1, 1]))
