"""Latency table of this machine: predicted vs measured whole-model latency on every zoo model.

Builds a fresh :class:`~slimtorch.search.latency.LatencyTable` (every layer configuration of
every zoo model timed on this machine) and, for each model at digits sizes (8x8 ``digits``,
16x16 ``digits:16``, 32x32 ``digits:32``) and batch 1 and 64, compares

- the uncalibrated prediction (sum over layers + module calls) with the whole model timed by
  the same timer (issue 13's goal: within 10%), both without page faults (the raw figures
  and the fault counts are in the rows too), and
- for the model with half of every prunable channel group removed, the prediction calibrated
  on the unpruned model's measurement (how a search uses the table) with its own measurement.

The example input is the first test image of the digits set at that size; batch 64 repeats
it with noise (see ``slimtorch.search.latency.batched``). Models have their initial weights
(latency does not depend on training). Writes the rows, the worst errors and the machine's
fingerprint to ``--out`` and prints a Markdown table.

Usage (on a quiet machine; about 5-10 minutes at the defaults):
    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_latency_lut.py
Smoke check (seconds):
    .venv/bin/python benchmarks/bench_latency_lut.py --quick --out /tmp/latency_lut_smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from slimtorch.data import load_data
from slimtorch.io import atomic_write_text
from slimtorch.models import MODEL_NAMES, create_model
from slimtorch.search.latency_report import ErrorRow, errors_markdown, prediction_errors
from slimtorch.search.latency_timer import MedianTimer, machine_fingerprint

GOAL_PCT = 10.0  # issue 13: "within 10% on every zoo model at batch 1 and 64"
DATA_BY_SIZE = {8: "digits", 16: "digits:16", 32: "digits:32"}


def cases(sizes: list[int], names: list[str]) -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    """``"<model>@<size>"`` -> (zoo model with its initial weights, first digits test image)."""
    out = {}
    for size in sizes:
        x = load_data(DATA_BY_SIZE[size]).test.tensors[0][:1]  # [1, 1, size, size]
        for name in names:
            torch.manual_seed(0)
            model = create_model(name, num_classes=10, in_channels=1, image_size=size)
            out[f"{name}@{size}"] = (model, x)
    return out


def worst(
    rows: list[ErrorRow], variant: str, calibrated: bool, raw: bool = False
) -> dict[str, float]:
    """The largest absolute error per batch size among the rows of one variant."""
    result: dict[str, float] = {}
    for r in rows:
        if r.variant.split()[0] != variant:
            continue
        err = r.calibrated_error_pct if calibrated else r.raw_error_pct if raw else r.error_pct
        if err is not None:
            result[str(r.batch)] = max(result.get(str(r.batch), 0.0), abs(err))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="8,16,32", help="digits image sizes (8, 16, 32)")
    ap.add_argument("--models", default=",".join(MODEL_NAMES))
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    ap.add_argument("--prune-ratio", type=float, default=0.5)
    ap.add_argument("--table", default="", help="table file to reuse (default: a fresh one)")
    ap.add_argument("--quick", action="store_true", help="smoke check: 8x8, batch 1, few runs")
    ap.add_argument("--out", default="benchmarks/results/latency_lut.json")
    args = ap.parse_args()
    sizes = [8] if args.quick else [int(s) for s in args.sizes.split(",")]
    batches = [1] if args.quick else [int(b) for b in args.batches.split(",")]
    timer = MedianTimer(clock=args.clock)
    if args.quick:
        timer = MedianTimer(warmup=1, repeats=3, min_seconds=0.0, clock=args.clock)
    table = Path(args.table) if args.table else Path(tempfile.mkdtemp()) / "latency.json"
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    rows = prediction_errors(
        cases(sizes, args.models.split(",")), batches=batches, path=table,
        threads=args.threads, timer=timer, prune_ratio=args.prune_ratio, progress=True,
    )  # fmt: skip
    result = {
        "command": "python benchmarks/bench_latency_lut.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_fingerprint(args.threads, timer),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "seconds": time.perf_counter() - start,
        "goal_pct": GOAL_PCT,
        "worst_uncalibrated_pct": worst(rows, "base", calibrated=False),
        "worst_pruned_uncalibrated_pct": worst(rows, "pruned", calibrated=False),
        "worst_pruned_calibrated_pct": worst(rows, "pruned", calibrated=True),
        "worst_raw_uncalibrated_pct": worst(rows, "base", calibrated=False, raw=True),
        "noisy_rows": sum(r.noisy for r in rows),
        "rows": [r.to_dict() for r in rows],
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(errors_markdown(rows))
    summary = {k: v for k, v in result.items() if k.startswith(("worst", "noisy", "seconds"))}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
