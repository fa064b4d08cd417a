"""LeNet-300-100 on digits: fine-grained magnitude pruning, iterative with fine-tuning.

Target (issue 3): at least 92% of the weights removed (the 12x of Han et al. 2015) with at
most 0.5 points of test accuracy lost, and how far beyond 92% the same loss allows. Baseline:
the unpruned model trained in the same run, on the same seeded split.

Usage:
    python benchmarks/bench_prune_lenet300.py --out benchmarks/results/prune_lenet300.json
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

HAN_TARGET_SPARSITY = 0.92  # Han et al. 2015: LeNet-300-100 pruned 12x (8% of weights kept)
MAX_LOSS_POINTS = 0.5  # allowed test-accuracy loss, percentage points
SWEEP = (0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)


def weight_sparsity(model: torch.nn.Module) -> float:
    ws = [p for n, p in model.named_parameters() if n.endswith("weight")]
    return float(sum(int((w == 0).sum()) for w in ws)) / sum(w.numel() for w in ws)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30, help="training epochs of the baseline")
    ap.add_argument("--iterations", type=int, default=5, help="prune/fine-tune rounds")
    ap.add_argument("--finetune-epochs", type=int, default=6, help="fine-tuning per round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/prune_lenet300.json"))
    args = ap.parse_args()
    splits = load_digits(seed=args.seed)
    train, val, test = make_loaders(splits, batch_size=64, seed=args.seed)
    torch.manual_seed(args.seed)
    model = create_model("lenet300")
    fit(model, train, val, FitConfig(args.epochs, scheduler="cosine", seed=args.seed), False)
    base = evaluate(model, test).accuracy
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rows = []
    for s in SWEEP:
        model.load_state_dict(state)
        cfg = PruneConfig(sparsity=s, criterion="l1", schedule="iterative",
                          iterations=args.iterations, finetune_epochs=args.finetune_epochs,
                          lr=5e-4, seed=args.seed)  # fmt: skip
        t0 = time.perf_counter()
        result = prune_model(model, cfg, train, val, test)
        acc = evaluate(model, test).accuracy
        rows.append({
            "sparsity": s, "weights_removed": weight_sparsity(model),
            "params_after": result.report.params_after,
            "compression": result.report.params_before / result.report.params_after,
            "accuracy_pruned_last_round": result.report.accuracy_pruned,
            "accuracy": acc, "loss_points": 100 * (base - acc),
            "seconds": time.perf_counter() - t0,
        })  # fmt: skip
        print(json.dumps(rows[-1]))
    ok = [r for r in rows if r["loss_points"] <= MAX_LOSS_POINTS]
    payload = {
        "baseline_accuracy": base,
        "params_before": sum(p.numel() for p in model.parameters()),
        "n_test": len(splits.test),
        "config": vars(args) | {"out": str(args.out)},
        "rows": rows,
        "target_met": any(r["weights_removed"] >= HAN_TARGET_SPARSITY for r in ok),
        "max_sparsity_within_loss": max((r["weights_removed"] for r in ok), default=None),
    }
    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
    print(f"baseline {base:.4f}; max sparsity within {MAX_LOSS_POINTS} points: "
          f"{payload['max_sparsity_within_loss']}")  # fmt: skip


if __name__ == "__main__":
    main()
