"""VGG-style CNN on digits: channel pruning to half the MACs, fine-tuning, measured speedup.

Trains a VGG-style net (default cfg ``32,32,M,64,64,M`` on digits resized to 16x16: twice
the channels of the zoo's ``tiny`` cfg, because small channel counts lose efficiency
(KERNELS.md) and the tiny cfg at 32x32 reached only 1.28x, see BENCHMARKS.md), removes
channels with ``prune_channels`` (uniform ratio over every prunable group, L1 filter
importance, kept counts rounded up to multiples of 8; the ratio is bisected until the traced
MACs are at most half), fine-tunes, and measures CPU latency at batch 64 of the unpruned and
pruned models in the same run (``measure_latency``, rounds of the two interleaved, median of
all timed runs).

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

from slimtorch.data import load_data, make_loaders
from slimtorch.io import atomic_write_text
from slimtorch.models import create_model
from slimtorch.profile.timing import measure_latency, percentile
from slimtorch.profile.trace import trace_model
from slimtorch.prune.graph import trace_channels
from slimtorch.prune.surgery import prune_channels
from slimtorch.train import FitConfig, evaluate, fit

TARGET_MAC_FRACTION = 0.5  # issue 3: "channel pruning to half the MACs"
LATENCY_BATCH = 64


def macs(model: nn.Module, x: torch.Tensor) -> int:
    return trace_model(model, x).total_macs


def ratio_for_macs(
    model: nn.Module, x: torch.Tensor, target: float, **kw
) -> tuple[float, nn.Module]:
    """Smallest uniform ratio (bisection, 12 steps) whose pruned MACs are <= target * base."""
    graph = trace_channels(model, x)
    base = macs(model, x)
    lo, hi = 0.0, 0.95
    best = prune_channels(model, x, ratio=hi, graph=graph, **kw)
    for _ in range(12):
        mid = (lo + hi) / 2
        pruned = prune_channels(model, x, ratio=mid, graph=graph, **kw)
        if macs(pruned, x) <= target * base:
            hi, best = mid, pruned
        else:
            lo = mid
    return hi, best


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
    kw = {"importance": args.importance, "round_to": args.round_to}
    ratio, pruned = ratio_for_macs(model, x1, TARGET_MAC_FRACTION, **kw)
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
