"""Deep Compression end to end: compression ratio and accuracy change per recipe.

Each run trains the uncompressed baseline (seeded; the same for every recipe of one model and
data set), runs the recipe through ``slimtorch.compress_cli.compress`` and reads back the file
it wrote: ratio = baseline fp32 bytes / compressed file bytes (every byte counted), accuracy
change = decoded model's test accuracy - baseline's, both measured in the same run. The KD
comparison runs the same recipe with every ``distill = true`` switched off.

Usage:
    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_deep_compression.py \
        [--runs default,lenet300-paper,...] [--out /tmp/slimtorch-bench-dc]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from slimtorch.compress_cli import compress
from slimtorch.recipe import Recipe, Stage, load_recipe

RESULTS = Path(__file__).parent / "results" / "deep_compression.json"
PAPER_RATIO = {"lenet300": 40.0, "lenet5": 39.0}  # Han, Mao & Dally 2016, Table 1
ACCURACY_BOUND_POINTS = 0.5

RUNS: dict[str, tuple[str, str | None]] = {  # run name -> (recipe, data override)
    "default": ("default", None),
    "default-nokd": ("default", None),
    "lenet300-paper": ("lenet300-paper", None),
    "lenet300-28-paper": ("lenet300-paper", "digits:28"),
    "lenet300-28-tuned": ("default", "digits:28"),
    "lenet5-paper": ("lenet5-paper", None),
    "lenet5-tuned": ("lenet5-digits28", None),
}


def without_kd(recipe: Recipe) -> Recipe:
    """The same recipe with every stage's ``distill`` switched off."""
    stages = tuple(
        Stage(s.kind, dataclasses.replace(s.config, distill=False))
        if hasattr(s.config, "distill")
        else s
        for s in recipe.stages
    )
    return dataclasses.replace(recipe, stages=stages, name=recipe.name + "-nokd")


def run_one(name: str, out_root: Path) -> dict[str, object]:
    recipe_name, data = RUNS[name]
    recipe = load_recipe(recipe_name)
    if name.endswith("-nokd"):
        recipe = without_kd(recipe)
    start = time.perf_counter()
    outcome = compress(recipe, data=data, out=out_root / name, progress=False)
    s, records = outcome.summary, outcome.result.records
    rows = [dataclasses.asdict(r) for r in records]
    model = s["model"]
    return {
        "run": name,
        "recipe": recipe.name,
        "model": model,
        "data": s["data"],
        "params": records[0].params,
        "original_bytes": s["original_bytes"],
        "file_bytes": s["file_bytes"],
        "ratio": s["ratio"],
        "paper_ratio": PAPER_RATIO.get(model),
        "baseline_test_accuracy": s["baseline_test_accuracy"],
        "decoded_test_accuracy": s["decoded_test_accuracy"],
        "accuracy_change_points": s["accuracy_change_points"],
        "within_bound": s["accuracy_change_points"] >= -ACCURACY_BOUND_POINTS,
        "bit_exact": s["bit_exact"],
        "seconds": round(time.perf_counter() - start, 1),
        "stages": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated run names")
    parser.add_argument("--out", type=Path, default=Path("/tmp/slimtorch-bench-dc"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results = dict(previous.get("runs", {}))
    for name in args.runs.split(","):
        row = run_one(name, args.out)
        results[name] = row
        print(
            f"{name:20s} {row['model']:9s} {row['data']:10s} ratio {row['ratio']:6.1f}x "
            f"acc {row['baseline_test_accuracy']:.4f} -> {row['decoded_test_accuracy']:.4f} "
            f"({row['accuracy_change_points']:+.2f} pts) {row['seconds']}s",
            flush=True,
        )
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"date": "2026-11-30", "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
