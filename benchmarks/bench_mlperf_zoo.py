"""MLPerf-style scenarios on the zoo (or on any models you name), through ``slimtorch.bench``.

With no MODEL arguments it trains every zoo model on the built-in digits (seeded, as
``bench_zoo_accuracy.py`` does but shorter) and benchmarks the fp32 checkpoints in all four
scenarios. Give MODELs (checkpoint folders, zoo names, factories, or sources a registered
adapter understands: pruned, quantized, compressed models) to benchmark those instead; the
first is the baseline of the speedups and the reference of the closed division.

Baseline measured in the same run, per model: a bare timing loop with no load generator
(``profile.timing``) -- batch-1 p90 for SingleStream, batch-8 p99 for MultiStream, batch-64
throughput for Offline, and ``1 / mean batch-1 latency`` (the ideal single-worker capacity)
for Server. The ratio says what the scenario's rules cost relative to that loop.

Usage:
    python benchmarks/bench_mlperf_zoo.py                      # zoo, fp32, all scenarios
    python benchmarks/bench_mlperf_zoo.py runs/fp32 runs/pruned --division closed \
        --out benchmarks/results/mlperf_pruned.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from slimtorch.bench.accuracy import DivisionConfig
from slimtorch.bench.harness import EvalData, benchmark, load_eval_data
from slimtorch.bench.report import compare_markdown, record_to_dict, speedups
from slimtorch.bench.settings import SCENARIOS, TestSettings
from slimtorch.bench.sut import LoadOptions, load_target
from slimtorch.checkpoint import save_checkpoint
from slimtorch.data import load_digits, make_loaders
from slimtorch.io import atomic_write_text
from slimtorch.models import MODEL_NAMES, ModelSpec, build_model
from slimtorch.profile.timing import measure_latency, percentile
from slimtorch.train import FitConfig, fit

BARE_RUNS = 300


def train_zoo(epochs: int, seed: int, folder: Path) -> list[str]:
    """Train every zoo model on digits; return the checkpoint folders."""
    splits = load_digits(seed=seed)
    out = []
    for name in MODEL_NAMES:
        spec = ModelSpec(name, {"num_classes": 10, "in_channels": 1, "image_size": 8})
        torch.manual_seed(seed)
        model = build_model(spec)
        train, val, _ = make_loaders(splits, batch_size=64, seed=seed)
        cfg = FitConfig(epochs=epochs, lr=1e-3, scheduler="cosine", seed=seed)
        fit(model, train, val, cfg, progress=False)
        save_checkpoint(folder / name, model.eval(), spec, {"data": "digits", "seed": seed})
        out.append(str(folder / name))
    return out


def settings_for(scenario: str, args: argparse.Namespace) -> TestSettings:
    return TestSettings(
        scenario,
        min_duration_s=args.min_duration,
        server_target_qps=args.target_qps,
        server_target_latency_s=args.latency_bound_ms / 1e3,
        seed=args.seed,
    )


def bare_baseline(source: str, ev: EvalData, scenario: str) -> float:
    """The same model timed in a plain loop: the per-model baseline of each scenario."""
    options = LoadOptions(tuple(ev.x.shape[1:]), ev.num_classes)
    sut = load_target(source, options).sut
    if scenario == "singlestream":
        return measure_latency(sut, ev.x[:1], warmup=20, runs=BARE_RUNS).p90_s
    if scenario == "multistream":
        return measure_latency(sut, ev.x[:8], warmup=20, runs=BARE_RUNS).p99_s
    if scenario == "offline":
        stats = measure_latency(sut, ev.x[:64], warmup=5, runs=BARE_RUNS // 3)
        return 64 / percentile(stats.samples_s, 50)
    stats = measure_latency(sut, ev.x[:1], warmup=20, runs=BARE_RUNS)
    return 1 / stats.mean_s


def baseline_ratio(record_value: float, bare: float, higher_is_better: bool) -> float:
    """> 1 means the scenario figure is better than the bare loop's."""
    return record_value / bare if higher_is_better else bare / record_value


def run(args: argparse.Namespace, models: list[str]) -> dict:
    ev = load_eval_data(args.data, "test", args.seed)
    division = DivisionConfig(args.division, args.quality_target / 100)
    payload = {"date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads()}
    payload["models"], payload["scenarios"] = models, {}
    for i, scenario in enumerate(args.scenarios):
        settings = settings_for(scenario, args)
        records = benchmark(models, settings, data=ev, division=division if i == 0 else None,
                            progress=False)  # fmt: skip
        bares = [bare_baseline(m, ev, scenario) for m in models]
        rows = []
        for rec, bare, up in zip(records, bares, speedups(records), strict=True):
            r = rec.result
            ratio = baseline_ratio(r.metric_value, bare, r.higher_is_better)
            row = {**record_to_dict(rec, latencies=False), "speedup": up}
            rows.append({**row, "bare_loop": bare, "vs_bare_loop": ratio})
        payload["scenarios"][scenario] = rows
        print(f"\n## {scenario}\n")
        print(compare_markdown(records), end="")
        for row in rows:
            print(f"  {row['label']}: bare loop {row['bare_loop']:.6g}, ratio "
                  f"{row['vs_bare_loop']:.3f}")  # fmt: skip
    return payload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="models (default: train the zoo)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    ap.add_argument("--epochs", type=int, default=15, help="zoo training epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--min-duration", type=float, default=1.0, help="seconds per run / trial")
    ap.add_argument("--target-qps", type=float, default=100.0, help="server search start")
    ap.add_argument("--latency-bound-ms", type=float, default=15.0, help="server p99 bound")
    ap.add_argument("--division", default="closed", choices=("closed", "open"))
    ap.add_argument("--quality-target", type=float, default=99.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/mlperf_zoo.json"))
    args = ap.parse_args()
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models or train_zoo(args.epochs, args.seed, Path(tmp))
        payload = run(args, models)
    payload["labels"] = [Path(m).name for m in models]
    payload["command"] = "python benchmarks/bench_mlperf_zoo.py " + " ".join(
        f"{a}" for a in __import__("sys").argv[1:]
    )
    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
