"""K-means quantization figures: VGG accuracy at 8/4/2 bits, mixed precision, 1-D k-means speed.

1. Trains the VGG-style CNN (fp32, seeded) on the built-in digits, then quantizes every conv
   and linear layer with k-means at 8, 4 and 2 bits; test accuracy without and with centroid
   fine-tuning, against the fp32 model of the same run.
2. Mixed precision: a k-means sensitivity scan on the validation split, then ``choose_bits``
   under the budget of uniform 2-bit k-means; test accuracy of both at the same size.
3. Times ``kmeans_1d`` on a 100M-element tensor to 16 centroids against, in the same run, a
   naive chunked torch Lloyd on the full tensor (a few iterations, scaled to our iteration
   count) and scikit-learn's KMeans on a 1M subsample (scaled by 100).

With ``--only-2bit`` it runs only a sweep of 2-bit recipes (initialization, BatchNorm
recalibration, epochs, lr and schedule, what trains, best-by-validation restore) on the same
fp32 model, picks the recipe with the best validation accuracy (then lowest validation loss)
and reports its test accuracy; results go to ``results/kmeans_2bit.json``.

Run under the shared lock:
    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_kmeans.py
    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_kmeans.py --only-2bit
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans

from slimtorch.data import load_digits, make_loaders
from slimtorch.io import atomic_write_text
from slimtorch.models import create_model
from slimtorch.quantize import kmeans1d as km1d
from slimtorch.quantize.kmeans import KMeansConfig, kmeans_1d, kmeans_quantize_model
from slimtorch.quantize.mixed import choose_bits, quantize_mixed, sensitivity_scan
from slimtorch.quantize.trained import finetune_centroids, recalibrate_bn
from slimtorch.train import FitConfig, evaluate, fit

RESULTS = Path(__file__).parent / "results" / "kmeans.json"
# Course lab (MIT 6.5940 lab 1, VGG on CIFAR-10): fp32 and k-means 8/4/2 bits after fine-tuning.
COURSE_LAB = {"fp32": 92.95, 8: 92.73, 4: 92.70, 2: 91.47}
NAIVE_CHUNK = 4_000_000  # values per chunk of the naive Lloyd's distance matrix
RESULTS_2BIT = RESULTS.parent / "kmeans_2bit.json"
# 2-bit recipes: (name, init, recalibrate BN first, epochs, lr, scheduler, train_other, keep_best)
RECIPES_2BIT = (
    ("previous (3 ep, centroids)", "linear", False, 3, 1e-3, "none", False, False),
    ("BN recalibration only", "linear", True, 0, 1e-3, "none", False, False),
    ("density + BN recal only", "density", True, 0, 1e-3, "none", False, False),
    ("recal + 10 ep cosine, best", "linear", True, 10, 1e-3, "cosine", False, True),
    ("recal + 10 ep cosine, all, best", "linear", True, 10, 1e-3, "cosine", True, True),
    ("recal + 20 ep cosine 5e-4, all, best", "linear", True, 20, 5e-4, "cosine", True, True),
    ("density + recal + 10 ep cosine, all, best", "density", True, 10, 1e-3, "cosine", True, True),
    ("20 ep cosine, centroids, best", "linear", False, 20, 1e-3, "cosine", False, True),
)


def train_vgg(args: argparse.Namespace):
    splits = load_digits(seed=0)
    train, val, test = make_loaders(splits, batch_size=64, seed=0)
    torch.manual_seed(0)
    model = create_model("vgg")
    cfg = FitConfig(epochs=args.epochs, lr=1e-3, scheduler="cosine", seed=0)
    fit(model, train, val, cfg, progress=False)
    return model, train, val, test


def accuracy_rows(model, train, val, test, args: argparse.Namespace) -> list[dict]:
    fp32 = evaluate(model, test).accuracy
    rows = []
    for bits, epochs in ((8, 0), (4, 1), (2, args.ft_epochs_2bit)):
        q, report = kmeans_quantize_model(model, KMeansConfig(bits=bits))
        before = evaluate(q, test).accuracy
        start = time.perf_counter()
        if epochs:
            finetune_centroids(q, train, val, epochs=epochs, lr=args.ft_lr, progress=False)
        after = evaluate(q, test).accuracy
        rows.append(
            {
                "bits": bits,
                "fp32_accuracy": fp32,
                "accuracy_no_finetune": before,
                "finetune_epochs": epochs,
                "accuracy_finetuned": after,
                "drop_points": 100 * (fp32 - after),
                "finetune_seconds": time.perf_counter() - start,
                "compression": report.compression,
                "course_lab_cifar10": COURSE_LAB[bits],
            }
        )
        print(f"{bits} bits: {before:.4f} -> {after:.4f} after {epochs} epochs (fp32 {fp32:.4f})")
    return rows


def recipe_row(model, train, val, test, recipe: tuple) -> dict:
    """Quantize ``model`` to 2 bits with one recipe; validation and test accuracy."""
    name, init, recal, epochs, lr, scheduler, other, best = recipe
    start = time.perf_counter()
    q, _ = kmeans_quantize_model(model, KMeansConfig(bits=2, init=init))
    no_ft = evaluate(q, test).accuracy
    if recal:
        recalibrate_bn(q, train)
    history = []
    if epochs:
        report = finetune_centroids(
            q, train, val, epochs, lr, train_other=other, scheduler=scheduler,
            keep_best=best, progress=False,
        )  # fmt: skip
        history = [e.val_accuracy for e in report.history]
    v, t = evaluate(q, val), evaluate(q, test)
    row = {
        "recipe": name, "init": init, "recalibrate_bn": recal, "epochs": epochs, "lr": lr,
        "scheduler": scheduler, "train_other": other, "keep_best": best,
        "test_accuracy_no_finetune": no_ft, "val_history": history, "val_accuracy": v.accuracy,
        "val_loss": v.loss, "test_accuracy": t.accuracy, "seconds": time.perf_counter() - start,
    }  # fmt: skip
    print(f"{name}: val {v.accuracy:.4f} (loss {v.loss:.4f}) test {t.accuracy:.4f}")
    return row


def two_bit_sweep(model, train, val, test) -> dict:
    """Every 2-bit recipe; the one chosen by validation (accuracy, then loss)."""
    fp32 = evaluate(model, test).accuracy
    rows = [recipe_row(model, train, val, test, r) for r in RECIPES_2BIT]
    chosen = max(rows, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    print(f"chosen by validation: {chosen['recipe']}: test {chosen['test_accuracy']:.4f}")
    return {
        "fp32_val_accuracy": evaluate(model, val).accuracy,
        "fp32_accuracy": fp32,
        "recipes": rows,
        "chosen": chosen["recipe"],
        "chosen_test_accuracy": chosen["test_accuracy"],
        "chosen_drop_points": 100 * (fp32 - chosen["test_accuracy"]),
        "course_lab_cifar10": COURSE_LAB[2],
    }


def mixed_row(model, val, test, args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    result = sensitivity_scan(model, val, bits=(1, 2, 3, 4), progress=False)
    budget = sum(result.size_bits[n][2] for n in result.layers)  # uniform 2-bit size
    choice = choose_bits(result, budget)
    mixed, mixed_report = quantize_mixed(model, choice)
    uniform, uniform_report = quantize_mixed(model, dict.fromkeys(result.layers, 2))
    result.plot(RESULTS.parent / "kmeans_sensitivity.png")
    row = {
        "budget_bits": budget,
        "choice": choice,
        "mixed_size_bits": mixed_report.size_bits,
        "uniform2_size_bits": uniform_report.size_bits,
        "mixed_accuracy": evaluate(mixed, test).accuracy,
        "uniform2_accuracy": evaluate(uniform, test).accuracy,
        "scan_seconds": time.perf_counter() - start,
    }
    print(f"mixed {row['mixed_accuracy']:.4f} vs uniform 2-bit {row['uniform2_accuracy']:.4f}")
    return row


def naive_lloyd_iteration(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """One textbook Lloyd step over all of x: chunked distance argmin, then means."""
    sums, counts = (
        torch.zeros_like(c, dtype=torch.float64),
        torch.zeros_like(c, dtype=torch.float64),
    )
    for chunk in x.split(NAIVE_CHUNK):
        a = (chunk[:, None] - c[None, :]).abs().argmin(dim=1)  # [chunk]
        sums.index_add_(0, a, chunk.double())
        counts.index_add_(0, a, torch.ones_like(chunk, dtype=torch.float64))
    return torch.where(counts > 0, sums / counts.clamp(min=1), c.double()).float()


def speed_row(args: argparse.Namespace) -> dict:
    n, k = args.numel, 16
    x = torch.randn(n, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    kmeans_1d(x, k)
    ours = time.perf_counter() - start
    s = np.sort(x.numpy())
    start_c = np.linspace(float(s[0]), float(s[-1]), k)[None]
    _, _, iterations = km1d._lloyd_sorted(s[None], start_c, 300)
    c = torch.linspace(float(x.min()), float(x.max()), k)
    start = time.perf_counter()
    for _ in range(args.naive_iters):
        c = naive_lloyd_iteration(x, c)
    naive_per_iter = (time.perf_counter() - start) / args.naive_iters
    sub = x[torch.randperm(n, generator=torch.Generator().manual_seed(1))[: n // 100]].numpy()
    init = np.linspace(sub.min(), sub.max(), k)[:, None]
    start = time.perf_counter()
    KMeans(k, init=init, n_init=1, algorithm="lloyd", max_iter=300, tol=0.0).fit(sub[:, None])
    sklearn_1m = time.perf_counter() - start
    row = {
        "numel": n,
        "k": k,
        "ours_seconds": ours,
        "ours_iterations": iterations,
        "naive_torch_seconds_per_iteration": naive_per_iter,
        "naive_torch_seconds_scaled": naive_per_iter * iterations,
        "sklearn_1m_subsample_seconds": sklearn_1m,
        "sklearn_scaled_seconds": sklearn_1m * 100,
        "speedup_vs_naive": naive_per_iter * iterations / ours,
        "speedup_vs_sklearn_scaled": sklearn_1m * 100 / ours,
    }
    print(json.dumps(row, indent=1))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="fp32 training epochs")
    parser.add_argument("--ft-epochs-2bit", type=int, default=3, help="2-bit fine-tune epochs")
    parser.add_argument("--ft-lr", type=float, default=1e-3, help="centroid fine-tune lr")
    parser.add_argument("--numel", type=int, default=100_000_000, help="1-D k-means size")
    parser.add_argument("--naive-iters", type=int, default=3, help="naive Lloyd iterations")
    parser.add_argument("--skip-speed", action="store_true", help="skip the 100M timing")
    parser.add_argument(
        "--only-2bit",
        action="store_true",
        help="only the 2-bit recipe sweep (no 8/4-bit rows, mixed precision or speed test); "
        f"writes {RESULTS_2BIT.name}",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, train, val, test = train_vgg(args)
    if args.only_2bit:
        out = {"date": "2026-11-30", "torch": torch.__version__, "fp32_epochs": args.epochs}
        out["two_bit"] = two_bit_sweep(model, train, val, test)
        atomic_write_text(RESULTS_2BIT, json.dumps(out, indent=2) + "\n")
        print(f"wrote {RESULTS_2BIT}")
        return
    out = {
        "date": "2026-11-30",
        "torch": torch.__version__,
        "accuracy": accuracy_rows(model, train, val, test, args),
        "mixed_precision": mixed_row(model, val, test, args),
    }
    if not args.skip_speed:
        out["speed_1d"] = speed_row(args)
    atomic_write_text(RESULTS, json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
