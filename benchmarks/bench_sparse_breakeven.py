"""Sparse (int32 CSR) vs the best dense fp32 kernel, by sparsity and batch size.

For a Linear layer (default 1024x1024) and a 3x3 conv (default 64->64 channels on 16x16
maps), at unstructured sparsities 50..99% and batch sizes 1, 8, 64, times the slimtorch sparse
shell (``SparseLinear`` / ``SparseConv2d``, CSR construction included) against the fastest of
several dense fp32 kernels measured in the same run:

- linear: ``F.linear(x, W)``, ``(W @ x.T).T``, numpy (OpenBLAS) ``W @ x.T``;
- conv2d: ``F.conv2d`` on NCHW and on channels_last input.

Break-even: the lowest measured sparsity from which sparse beats the best dense at every
higher measured sparsity (None: never). The table is written to the results JSON under
``breakeven`` (``slimtorch.prune.sparse.load_breakeven`` reads it) and is what
``slimtorch.prune.sparse.BREAKEVEN`` records.

Usage:
    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_sparse_breakeven.py
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from slimtorch.io import atomic_write_text
from slimtorch.profile.timing import measure_latency
from slimtorch.prune.sparse import SparseConv2d, SparseLinear

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
BATCH_SIZES = (1, 8, 64)


def median(fn: Callable, x, runs: int, seconds: float) -> float:
    return measure_latency(fn, x, warmup=3, runs=runs, max_seconds=seconds).median_s


def sparse_weight(shape: tuple[int, ...], sparsity: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    return w * (torch.rand(shape, generator=g) >= sparsity)


def dense_linear(w: torch.Tensor, x: torch.Tensor, runs: int, secs: float) -> dict[str, float]:
    wn, bias = w.numpy(), torch.zeros(w.shape[0])
    return {
        "F.linear": median(lambda v: F.linear(v, w, bias), x, runs, secs),
        "(W @ x.T).T": median(lambda v: (w @ v.T).T + bias, x, runs, secs),
        "numpy W @ x.T": median(lambda v: torch.from_numpy((wn @ v.numpy().T).T), x, runs, secs),
    }


def dense_conv(conv: nn.Conv2d, x: torch.Tensor, runs: int, secs: float) -> dict[str, float]:
    cl = x.contiguous(memory_format=torch.channels_last)
    conv_cl = conv.to(memory_format=torch.channels_last)
    return {
        "conv2d NCHW": median(lambda v: F.conv2d(v, conv.weight, conv.bias, padding=1), x, runs,
                              secs),
        "conv2d channels_last": median(conv_cl, cl, runs, secs),
    }  # fmt: skip


def sweep(kind: str, args: argparse.Namespace) -> list[dict]:
    rows = []
    for batch in BATCH_SIZES:
        if kind == "linear":
            x = torch.randn(batch, args.features)
            dense = dense_linear(torch.randn(args.features, args.features), x, args.runs, 2.0)
        else:
            x = torch.randn(batch, args.channels, args.size, args.size)
            conv = nn.Conv2d(args.channels, args.channels, 3, padding=1)
            dense = dense_conv(conv, x, args.runs, 2.0)
        best = min(dense, key=dense.get)
        for s in SPARSITIES:
            if kind == "linear":
                layer = nn.Linear(args.features, args.features)
                layer.weight.data = sparse_weight(tuple(layer.weight.shape), s)
                sparse = SparseLinear.from_dense(layer)
            else:
                conv.weight.data = sparse_weight(tuple(conv.weight.shape), s)
                sparse = SparseConv2d(conv)
            t = median(sparse, x, args.runs, 2.0)
            rows.append({"kind": kind, "batch": batch, "sparsity": s, "sparse_s": t,
                         "dense_s": dense, "best_dense": best,
                         "speedup": dense[best] / t})  # fmt: skip
            ms = dense[best] * 1e3
            print(f"{kind} b={batch} s={s:.2f} sparse {t * 1e3:.3f} ms, {best} {ms:.3f} ms")
    return rows


def breakeven(rows: list[dict]) -> dict[str, dict[int, float | None]]:
    table: dict[str, dict[int, float | None]] = {}
    for kind in sorted({r["kind"] for r in rows}):
        table[kind] = {}
        for batch in BATCH_SIZES:
            pts = sorted((r["sparsity"], r["speedup"]) for r in rows
                         if r["kind"] == kind and r["batch"] == batch)  # fmt: skip
            point = None
            for s, speedup in reversed(pts):
                if speedup <= 1:
                    break
                point = s
            table[kind][batch] = point
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=1024, help="Linear is features x features")
    ap.add_argument("--channels", type=int, default=64, help="3x3 conv channels in and out")
    ap.add_argument("--size", type=int, default=16, help="conv feature map side")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per point (2 s cap)")
    ap.add_argument("--out", default="benchmarks/results/sparse_breakeven.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = sweep("linear", args) + sweep("conv2d", args)
    table = breakeven(rows)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "linear_shape": [args.features, args.features],
        "conv_shape": [args.channels, args.channels, 3, 3, args.size],
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "rows": rows,
        "breakeven": {k: {str(b): v for b, v in row.items()} for k, row in table.items()},
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["breakeven"], indent=2))


if __name__ == "__main__":
    main()
