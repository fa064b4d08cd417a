"""Huffman encode/decode and sparse-index throughput on one core, against baselines in the run.

Streams (10 M symbols each by default): 6-bit k-means indices of Gaussian weights (a linspace
codebook, as in Deep Compression's linear initialization), 5-bit relative gaps of an 8%-dense
mask, and 8-bit gaps of a 20%-dense conv mask. Baselines measured in the same run: zlib
(level 6) on the same symbols as bytes, and the bit-string reference decoder on a slice.

Usage:
    python benchmarks/bench_huffman.py --n 10000000 --out benchmarks/results/huffman.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
import zlib
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np

from slimtorch.encode.huffman import (
    huffman_code_lengths,
    huffman_compress,
    huffman_decode,
    huffman_decode_ref,
    huffman_encode,
)
from slimtorch.encode.sparse_index import positions_from_gaps, relative_gaps
from slimtorch.io import atomic_write_text


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (numba compiles here)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def streams(n: int, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, int]]:
    w = rng.standard_normal(n)
    book = np.linspace(w.min(), w.max(), 64)
    kmeans = np.clip(np.searchsorted((book[1:] + book[:-1]) / 2, w), 0, 63)
    fc_mask = rng.random(n * 12) < 0.08
    fc_gaps, _ = relative_gaps(np.flatnonzero(fc_mask), 5)
    conv_gaps, _ = relative_gaps(np.flatnonzero(rng.random(n * 5) < 0.2), 8)
    return {
        "kmeans-6bit": (kmeans, 64),
        "gaps-5bit (8% dense)": (fc_gaps[:n], 32),
        "gaps-8bit (20% dense)": (conv_gaps[:n], 256),
    }


def bench_stream(symbols: np.ndarray, alphabet: int, repeats: int, ref_n: int) -> dict:
    n = symbols.size
    counts = np.bincount(symbols, minlength=alphabet)
    p = counts[counts > 0] / n
    lengths = huffman_code_lengths(counts)
    data, nbits = huffman_encode(symbols, lengths)
    raw = symbols.astype(np.uint8).tobytes()
    packed = zlib.compress(raw, 6)
    t_enc = median_time(lambda: huffman_encode(symbols, lengths), repeats)
    t_full = median_time(lambda: huffman_compress(symbols, alphabet), repeats)
    t_dec = median_time(lambda: huffman_decode(data, lengths, n), repeats)
    t_zc = median_time(lambda: zlib.compress(raw, 6), repeats)
    t_zd = median_time(lambda: zlib.decompress(packed), repeats)
    sub = huffman_compress(symbols[:ref_n], alphabet)
    t_ref = median_time(lambda: huffman_decode_ref(sub.data, sub.lengths, ref_n), 1)
    assert np.array_equal(huffman_decode(data, lengths, n), symbols)
    return {
        "symbols": n,
        "entropy_bits": float(-(p * np.log2(p)).sum()),
        "huffman_bits_per_symbol": nbits / n,
        "zlib_bits_per_symbol": 8 * len(packed) / n,
        "encode_msym_s": n / t_enc / 1e6,
        "count_build_encode_msym_s": n / t_full / 1e6,
        "decode_msym_s": n / t_dec / 1e6,
        "zlib_compress_msym_s": n / t_zc / 1e6,
        "zlib_decompress_msym_s": n / t_zd / 1e6,
        "reference_decode_msym_s": ref_n / t_ref / 1e6,
    }


def bench_gaps(n: int, rng: np.random.Generator, repeats: int) -> dict:
    positions = np.flatnonzero(rng.random(n * 12) < 0.08)
    gaps, _ = relative_gaps(positions, 5)
    t_enc = median_time(lambda: relative_gaps(positions, 5), repeats)
    t_dec = median_time(lambda: positions_from_gaps(gaps), repeats)
    return {"positions": int(positions.size), "gaps_msym_s": positions.size / t_enc / 1e6,
            "positions_msym_s": gaps.size / t_dec / 1e6}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="symbols per stream")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs (median)")
    ap.add_argument("--ref-n", type=int, default=200_000, help="symbols for the reference")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/huffman.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results = {name: bench_stream(s, a, args.repeats, args.ref_n)
               for name, (s, a) in streams(args.n, rng).items()}  # fmt: skip
    results["sparse_index"] = bench_gaps(args.n, rng, args.repeats)
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    for name, r in results.items():
        print(name, json.dumps({k: round(v, 3) for k, v in r.items()}))


if __name__ == "__main__":
    main()
