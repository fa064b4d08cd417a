"""VGG-style CNN on digits: channel pruning to half the MACs, fine-tuning, measured speedup.

Trains a VGG-style net (default cfg ``32,32,M,64,64,M`` on digits resized to 16x16: twice
the channels of the zoo's ``tiny`` cfg, because small channel counts lose efficiency
(KERNELS.md) and the tiny cfg at 32x32 reached only 1.28x, see BENCHMARKS.md), removes
channels with ``prune_channels`` (L1 filter importance, kept counts rounded up to multiples
of 8; by default half the channels of the full-resolution stage, whose activations make the
memory-bound BatchNorm/ReLU/pool work, and one uniform ratio for the other groups, bisected
until the traced MACs are at most half; ``--first-stage-ratio -1`` makes it uniform),
fine-tunes, and measures CPU latency at batch 64 of the unpruned and pruned models in the
same run (``measure_latency``, rounds of the two interleaved; the median of all timed runs,
and the lowest round median).

Usage:
    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_channel_prune_vgg.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from slimtorch.core.trace import trace_model
from slimtorch.data import load_data, make_loaders
from slimtorch.io import atomic_write_text
from slimtorch.models import create_model
from slimtorch.profile.timing import measure_latency, percentile
from slimtorch.prune.graph import trace_channels
from slimtorch.prune.surgery import prune_channels
from slimtorch.train import FitConfig, evaluate, fit

TARGET_MAC_FRACTION = 0.5  # issue 3: "channel pruning to half the MACs"
LATENCY_BATCH = 64


def macs(model: nn.Module, x: torch.Tensor) -> int:
    return trace_model(model, x).total_macs


def first_stage_groups(model: nn.Module, x: torch.Tensor) -> set[str]:
    """Groups whose producer runs at the full input resolution (the activation-heavy stage)."""
    shapes = {c.name: c.output_shape for c in trace_model(model, x).layers}
    full = max(shape[-1] for shape in shapes.values() if shape and len(shape) == 4)
    groups = trace_channels(model, x).prunable()
    return {g.name for g in groups if len(shapes[g.name]) == 4 and shapes[g.name][-1] == full}


def ratio_for_macs(
    model: nn.Module, x: torch.Tensor, target: float, first_ratio: float | None, **kw
) -> tuple[dict[str, float], nn.Module]:
    """Per-group ratios whose pruned MACs are <= target * base: ``first_ratio`` for the
    first-stage groups (None: uniform), and the smallest uniform ratio for the rest
    (bisection, 12 steps)."""
    graph = trace_channels(model, x)
    base = macs(model, x)
    first = first_stage_groups(model, x) if first_ratio is not None else set()

    def ratios(r: float) -> dict[str, float]:
        return {g.name: first_ratio if g.name in first else r for g in graph.prunable()}

    lo, hi = 0.0, 0.95
    best = prune_channels(model, x, ratio=ratios(hi), graph=graph, **kw)
    for _ in range(12):
        mid = (lo + hi) / 2
        pruned = prune_channels(model, x, ratio=ratios(mid), graph=graph, **kw)
        if macs(pruned, x) <= target * base:
            hi, best = mid, pruned
        else:
            lo = mid
    return ratios(hi), best


def interleaved_latency(models: dict[str, nn.Module], x: torch.Tensor, rounds: int, runs: int):
    """Median of all timed runs (rounds of the models interleaved), and the lowest round
    median (robust to another job's burst on the shared cores)."""
    samples: dict[str, list[float]] = {k: [] for k in models}
    lowest = {k: float("inf") for k in models}
    for _ in range(rounds):
        for name, model in models.items():
            stats = measure_latency(model, x, warmup=5, runs=runs)
            samples[name] += stats.samples_s
            lowest[name] = min(lowest[name], stats.median_s)
    return {k: percentile(v, 50) for k, v in samples.items()}, lowest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits:16")
    ap.add_argument("--cfg", default="32,32,M,64,64,M", help="vgg config name or list")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--finetune-epochs", type=int, default=15)
    ap.add_argument("--finetune-lr", type=float, default=1e-3)
    ap.add_argument("--importance", default="l1", help="channel importance: l1, l2, bn")
    ap.add_argument(
        "--first-stage-ratio",
        type=float,
        default=0.5,
        help="ratio for groups at full resolution (-1: one uniform ratio)",
    )
    ap.add_argument("--round-to", type=int, default=8, help="kept channels: multiples of this")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    ap.add_argument("--runs", type=int, default=10, help="timed runs per model per round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/channel_prune_vgg.json")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = load_data(args.data, seed=args.seed)
    train, val, test = make_loaders(splits, batch_size=64, seed=args.seed)
    c, size = splits.input_shape[0], splits.input_shape[-1]
    cfg = [x if x == "M" else int(x) for x in args.cfg.split(",")] if "," in args.cfg else args.cfg
    model = create_model("vgg", in_channels=c, image_size=size, cfg=cfg)
    t0 = time.perf_counter()
    fit(model, train, val, FitConfig(epochs=args.epochs, lr=args.lr, scheduler="cosine"))
    train_s = time.perf_counter() - t0
    model.eval()
    acc_base = evaluate(model, test).accuracy

    x1 = torch.zeros(1, *splits.input_shape)
    args.first_stage_ratio = None if args.first_stage_ratio < 0 else args.first_stage_ratio
    kw = {"importance": args.importance, "round_to": args.round_to}
    ratio, pruned = ratio_for_macs(model, x1, TARGET_MAC_FRACTION, args.first_stage_ratio, **kw)
    acc_pruned = evaluate(pruned, test).accuracy
    ft = FitConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, scheduler="cosine")
    fit(pruned, train, val, ft)
    pruned.eval()
    acc_ft = evaluate(pruned, test).accuracy

    x64 = torch.randn(LATENCY_BATCH, *splits.input_shape)
    medians, lowest = interleaved_latency({"base": model, "pruned": pruned}, x64, args.rounds,
                                          args.runs)  # fmt: skip
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "data": args.data,
        "cfg": args.cfg,
        "epochs": args.epochs,
        "finetune_epochs": args.finetune_epochs,
        "lr": [args.lr, args.finetune_lr],
        "importance": args.importance,
        "round_to": args.round_to,
        "channels": {
            n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)
        },
        "ratio": ratio,
        "params": [sum(p.numel() for p in m.parameters()) for m in (model, pruned)],
        "macs": [macs(model, x1), macs(pruned, x1)],
        "accuracy": {"base": acc_base, "pruned": acc_pruned, "finetuned": acc_ft},
        "accuracy_drop_points": 100 * (acc_base - acc_ft),
        "latency_b64_median_s": medians,
        "latency_b64_lowest_round_median_s": lowest,
        "latency_runs": args.rounds * args.runs,
        "speedup_b64": medians["base"] / medians["pruned"],
        "speedup_b64_lowest_round_median": lowest["base"] / lowest["pruned"],
        "train_s": train_s,
        "torch_threads": torch.get_num_threads(),
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
