"""Train every zoo model on the built-in digits and report test accuracy.

Baseline in the same run: scikit-learn's multinomial logistic regression on the same split
(raw pixels), so each figure is also reported as a ratio against a simple, well-known model.

Usage:
    python benchmarks/bench_zoo_accuracy.py --epochs 30 --out benchmarks/results/zoo_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from slimtorch.data import load_digits, make_loaders
from slimtorch.io import atomic_write_text
from slimtorch.models import MODEL_NAMES, create_model
from slimtorch.train import FitConfig, evaluate, fit


def arrays(ds: torch.utils.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs).flatten(1).numpy(), torch.stack(ys).numpy()


def logistic_baseline(splits) -> float:
    xtr, ytr = arrays(splits.train)
    xte, yte = arrays(splits.test)
    clf = LogisticRegression(max_iter=2000).fit(xtr, ytr)
    return float((clf.predict(xte) == yte).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/zoo_accuracy.json"))
    args = ap.parse_args()
    splits = load_digits(seed=args.seed)
    baseline = logistic_baseline(splits)
    rows = []
    for name in MODEL_NAMES:
        torch.manual_seed(args.seed)
        model = create_model(name)
        loaders = make_loaders(splits, batch_size=64, seed=args.seed)
        cfg = FitConfig(epochs=args.epochs, lr=1e-3, scheduler="cosine", seed=args.seed)
        t0 = time.perf_counter()
        report = fit(model, loaders[0], loaders[1], cfg, progress=False)
        seconds = time.perf_counter() - t0
        test = evaluate(model, loaders[2])
        params = sum(p.numel() for p in model.parameters())
        rows.append(
            {
                "model": name,
                "params": params,
                "best_val_accuracy": report.best_val_accuracy,
                "test_accuracy": test.accuracy,
                "vs_logistic": test.accuracy / baseline,
                "train_seconds": seconds,
            }
        )
        print(
            f"{name:12s} params {params:8d}  test {test.accuracy:.4f}  "
            f"(logistic {baseline:.4f}, ratio {test.accuracy / baseline:.3f})  {seconds:.1f}s"
        )
    payload = {
        "epochs": args.epochs,
        "seed": args.seed,
        "test_n": len(splits.test),
        "logistic_regression_test_accuracy": baseline,
        "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
