"""Every pruning criterion at equal sparsity on the same trained model (LeNet-300-100 with
BatchNorm on digits): test accuracy right after one-shot pruning and after fine-tuning.

Two tables: weight criteria at fine-grained (element) granularity, and channel criteria at
channel granularity (output channels; the regression criteria select input channels). The
baseline is the unpruned model and a random criterion, both in the same run.

Usage:
    python benchmarks/bench_prune_criteria.py --out benchmarks/results/prune_criteria.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from slimtorch.data import load_digits, make_loaders
from slimtorch.io import atomic_write_text
from slimtorch.models import create_model
from slimtorch.prune import PruneConfig, prune_model
from slimtorch.train import FitConfig, evaluate, fit

ELEMENT = ("random", "l1", "l2", "taylor", "obd_fisher", "obd_hutchinson", "obs")
CHANNEL = ("random", "l1", "l2", "linf", "bn_gamma", "apoz", "taylor")
INPUT_CHANNEL = ("regression_lasso", "regression_greedy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--element-sparsity", type=float, default=0.9)
    ap.add_argument("--channel-sparsity", type=float, default=0.7)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/prune_criteria.json"))
    args = ap.parse_args()
    splits = load_digits(seed=args.seed)
    train, val, test = make_loaders(splits, batch_size=64, seed=args.seed)
    torch.manual_seed(args.seed)
    model = create_model("lenet300", norm="batch")
    fit(model, train, val, FitConfig(args.epochs, scheduler="cosine", seed=args.seed), False)
    base = evaluate(model, test).accuracy
    state = {k: v.clone() for k, v in model.state_dict().items()}
    plan = [("element", c, args.element_sparsity) for c in ELEMENT]
    plan += [("channel", c, args.channel_sparsity) for c in CHANNEL]
    plan += [("input-channel", c, args.channel_sparsity) for c in INPUT_CHANNEL]
    rows = []
    for granularity, criterion, sparsity in plan:
        model.load_state_dict(state)
        cfg = PruneConfig(granularity=granularity, criterion=criterion, sparsity=sparsity,
                          finetune_epochs=args.finetune_epochs, seed=args.seed)  # fmt: skip
        t0 = time.perf_counter()
        r = prune_model(model, cfg, train, val, test).report
        rows.append({
            "granularity": granularity, "criterion": criterion, "sparsity": r.sparsity,
            "accuracy_pruned": r.accuracy_pruned, "accuracy_finetuned": r.accuracy_finetuned,
            "seconds": time.perf_counter() - t0,
        })  # fmt: skip
        print(json.dumps(rows[-1]))
    payload = {"baseline_accuracy": base, "config": vars(args) | {"out": str(args.out)},
               "rows": rows}  # fmt: skip
    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
