"""slimtorch's GGUF block (de)quantizers against the ``gguf`` package's, per type.

Quantizes a 576 x 1536 fp32 matrix (a SmolLM2-135M MLP weight) to each export type and
dequantizes 1 Mi values (one ``DEQUANT_CHUNK`` slice of the loader) of each block type,
best of ``--repeat`` runs, both in the same process, and checks that both give identical
bytes / values. ``slimtorch.llm.gguf_quants`` hands the types where gguf measured faster to
gguf (``GGUF_QUANTIZE``, ``GGUF_DEQUANTIZE``): their ratio here is 1 by construction.

Usage:
    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_gguf_quants.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gguf
import numpy as np

from slimtorch.llm.gguf_quants import BLOCK_DTYPES, BLOCK_ELEMS, dequantize, quantize

WEIGHT_SHAPE = (576, 1536)  # SmolLM2-135M: dim x hidden_dim
DEQUANT_VALUES = 1 << 20  # slimtorch.llm.gguf_load.DEQUANT_CHUNK


def best_ms(f: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def random_raw(type_name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Raw bytes of ``n`` values: random codes, moderate finite fp16 scales."""
    if type_name not in BLOCK_DTYPES:
        return rng.integers(0, 256, size=2 * n, dtype=np.uint8) & 0x3F  # finite F16/BF16
    dt, blocks = BLOCK_DTYPES[type_name], n // BLOCK_ELEMS[type_name]
    raw = rng.integers(0, 256, size=blocks * dt.itemsize, dtype=np.uint8)
    for field in ("d", "m", "dmin"):
        if field in dt.names:
            raw.view(dt)[field] = rng.uniform(-0.1, 0.1, size=blocks).astype(np.float16)
    return raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(WEIGHT_SHAPE).astype(np.float32)
    print(f"{'op':<14}{'ours ms':>9}{'gguf ms':>9}{'gguf/ours':>10}  same output")
    for t in ("Q8_0", "Q4_0", "Q4_1"):
        q = gguf.GGMLQuantizationType[t]
        a = best_ms(lambda t=t: quantize(x, t), args.repeat)
        b = best_ms(lambda q=q: gguf.quants.quantize(x, q), args.repeat)
        same = np.array_equal(quantize(x, t), gguf.quants.quantize(x, q).reshape(-1))
        print(f"{'quant ' + t:<14}{a:9.1f}{b:9.1f}{b / a:10.2f}  {same}")
    for t in [*sorted(BLOCK_DTYPES), "F16", "BF16"]:
        q, n = gguf.GGMLQuantizationType[t], DEQUANT_VALUES
        raw = random_raw(t, n, rng)
        a = best_ms(lambda t=t, raw=raw, n=n: dequantize(raw, t, n), args.repeat)
        b = best_ms(lambda q=q, raw=raw: gguf.quants.dequantize(raw, q), args.repeat)
        same = np.array_equal(dequantize(raw, t, n), gguf.quants.dequantize(raw, q).reshape(-1))
        print(f"{'dequant ' + t:<14}{a:9.1f}{b:9.1f}{b / a:10.2f}  {same}")


if __name__ == "__main__":
    main()
