"""Deep Compression end to end: compression ratio and accuracy change per recipe.

Each run trains the uncompressed baseline (seeded; the same for every recipe of one model and
data set), runs the recipe through ``slimtorch.compress.job.compress`` and reads back the file
it wrote: ratio = baseline fp32 bytes / compressed file bytes (every byte counted), accuracy
change = decoded model's test accuracy - baseline's, both measured in the same run. The KD
comparison runs the same recipe with every ``distill = true`` switched off.

Usage:
    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_deep_compression.py \
        [--runs default,lenet300-paper,default@1,...] [--out /tmp/slimtorch-bench-dc]
    .venv/bin/python benchmarks/bench_deep_compression.py --table   # paper-form tables

``NAME@SEED`` runs NAME with the recipe's seed replaced (split, initialization, training).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from slimtorch.compress.job import compress
from slimtorch.compress.recipe import Recipe, Stage, load_recipe
from slimtorch.io import atomic_write_text

RESULTS = Path(__file__).parent / "results" / "deep_compression.json"
PAPER_RATIO = {"lenet300": 40.0, "lenet5": 39.0}  # Han, Mao & Dally 2016, Table 1
# Han, Mao & Dally 2016, Tables 2 and 3 (totals): pruning, + quantization, + Huffman coding.
PAPER_STAGES = {"lenet300": (12.0, 32.0, 40.0), "lenet5": (12.0, 33.0, 39.0)}
PRUNE_KINDS = ("prune", "finetune")
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
    """One run; ``NAME@SEED`` runs NAME with the recipe's seed (split, init, training) set."""
    base, _, seed = name.partition("@")
    recipe_name, data = RUNS[base]
    recipe = load_recipe(recipe_name)
    if seed:
        model = dataclasses.replace(recipe.model, seed=int(seed))
        recipe = dataclasses.replace(recipe, model=model)
    if base.endswith("-nokd"):
        recipe = without_kd(recipe)
    start = time.perf_counter()
    outcome = compress(recipe, data=data, out=out_root / name, progress=False)
    s, records = outcome.summary, outcome.result.records
    rows = [dataclasses.asdict(r) for r in records]
    model = s["model"]
    return {
        "run": name,
        "recipe": recipe.name,
        "seed": recipe.model.seed,
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


def paper_table(row: dict) -> str:
    """One run's stages in the paper's form (pruning / + quantization / + Huffman), Markdown."""
    stages = row["stages"]
    encode = [r for r in stages if r["stage"] == "encode"]
    before = [r for r in stages if r["stage"] != "encode"]
    pruned = [r for r in before if r["stage"] in PRUNE_KINDS] or before[:1]
    picks = [("original", stages[0]), ("pruning", pruned[-1]), ("+ quantization", before[-1])]
    picks += [("+ Huffman (the file)", encode[-1])] if encode else []
    paper = (1.0, *PAPER_STAGES.get(row["model"], (None,) * 3))
    lines = [
        f"| {row['run']}: {row['model']}, {row['data']} | test acc | weights kept | size (B) "
        "| ratio | paper |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (label, r), ref in zip(picks, paper, strict=False):
        kept = r["nonzero_weights"] / r["weights"]
        ref_text = "n/a" if ref is None else f"{ref:.0f}x"
        lines.append(
            f"| {label} | {r['test_accuracy']:.4f} | {kept:.1%} | {r['size_bytes']:,} "
            f"| {r['ratio']:.1f}x | {ref_text} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated run names")
    parser.add_argument("--out", type=Path, default=Path("/tmp/slimtorch-bench-dc"))
    parser.add_argument("--results", type=Path, default=RESULTS, help="results JSON (merged)")
    parser.add_argument(
        "--table", action="store_true", help="only print the stored runs' paper-form tables"
    )
    args = parser.parse_args()
    if args.table:
        for row in json.loads(args.results.read_text())["runs"].values():
            print(paper_table(row) + "\n")
        return
    torch.set_num_threads(1)
    previous = json.loads(args.results.read_text()) if args.results.exists() else {}
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
        args.results.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"date": "2026-11-30", "runs": results}, indent=2) + "\n"
        atomic_write_text(args.results, text)


if __name__ == "__main__":
    main()
