"""Sparse (int32 CSR) vs the best dense fp32 kernel, by sparsity and batch size.

For a Linear layer (default 1024x1024) and a 3x3 conv (default 64->64 channels on 16x16
maps), at unstructured sparsities 50..99% and batch sizes 1, 8, 64, times the slimtorch sparse
shell (``SparseLinear`` / ``SparseConv2d``, CSR construction included) against the fastest of
several dense fp32 kernels measured in the same run (interleaved rounds; each figure is the
lowest round median; 1 torch thread by default, since the 2 cores are shared):

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
import copy
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


def robust_median(candidates: dict[str, Callable], x, runs: int, rounds: int) -> dict[str, float]:
    """Per candidate: the lowest of ``rounds`` medians of ``runs`` calls, candidates
    interleaved round by round (the machines are shared: a round hit by another job's burst
    is discarded rather than averaged in)."""
    best = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            t = measure_latency(fn, x, warmup=2, runs=runs, max_seconds=1.0).median_s
            best[name] = min(best[name], t)
    return best


def sparse_weight(shape: tuple[int, ...], sparsity: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    return w * (torch.rand(shape, generator=g) >= sparsity)


def dense_linear(w: torch.Tensor) -> dict[str, Callable]:
    wn, bias = w.numpy(), torch.zeros(w.shape[0])
    return {
        "F.linear": lambda v: F.linear(v, w, bias),
        "(W @ x.T).T": lambda v: (w @ v.T).T + bias,
        "numpy W @ x.T": lambda v: torch.from_numpy((wn @ v.numpy().T).T),
    }


def dense_conv(conv: nn.Conv2d) -> dict[str, Callable]:
    conv_cl = copy.deepcopy(conv).to(memory_format=torch.channels_last)
    return {
        "conv2d NCHW": lambda v: conv(v),
        "conv2d channels_last": lambda v: conv_cl(v.contiguous(memory_format=torch.channels_last)),
    }


def sparse_layer(kind: str, s: float, args: argparse.Namespace) -> nn.Module:
    if kind == "linear":
        layer = nn.Linear(args.features, args.features)
        layer.weight.data = sparse_weight(tuple(layer.weight.shape), s)
        return SparseLinear.from_dense(layer)
    conv = nn.Conv2d(args.channels, args.channels, 3, padding=1)
    conv.weight.data = sparse_weight(tuple(conv.weight.shape), s)
    return SparseConv2d(conv)


def sweep(kind: str, args: argparse.Namespace) -> list[dict]:
    rows = []
    for batch in BATCH_SIZES:
        if kind == "linear":
            x = torch.randn(batch, args.features)
            dense = dense_linear(torch.randn(args.features, args.features))
        else:
            x = torch.randn(batch, args.channels, args.size, args.size)
            dense = dense_conv(nn.Conv2d(args.channels, args.channels, 3, padding=1))
        sparse = {f"sparse {s}": sparse_layer(kind, s, args) for s in SPARSITIES}
        times = robust_median({**dense, **sparse}, x, args.runs, args.rounds)
        best = min(dense, key=times.get)
        for s in SPARSITIES:
            t = times[f"sparse {s}"]
            rows.append({"kind": kind, "batch": batch, "sparsity": s, "sparse_s": t,
                         "dense_s": {k: times[k] for k in dense}, "best_dense": best,
                         "speedup": times[best] / t})  # fmt: skip
            ms = times[best] * 1e3
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
    ap.add_argument("--runs", type=int, default=10, help="timed runs per round (1 s cap)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; lowest median")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: robust when shared)")
    ap.add_argument("--out", default="benchmarks/results/sparse_breakeven.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
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
