"""Integer-only int8 inference vs fp32 at batch 64, and int8 PTQ accuracy vs fp32.

For each model: train it on digits, quantize with PTQ (per-channel int8 weights, calibrated
uint8 activations), export the integer model, then time in the same run: fp32 as trained,
fp32 with BatchNorm folded (the best fp32 we have), and the int8 model on torch's x86 and
fbgemm engines and on the exact integer reference kernels. Accuracy is on the test split.

    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_integer.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

from slimtorch.data import load_data, make_loaders
from slimtorch.models import create_model
from slimtorch.quantize.fold import fold_batchnorm
from slimtorch.quantize.integer import to_integer
from slimtorch.quantize.ptq import PTQConfig, quantize_ptq
from slimtorch.train import FitConfig, evaluate, fit

BATCH = 64
RESULTS = Path(__file__).parent / "results" / "integer.json"


def _time(fn, x, runs: int) -> float:
    with torch.no_grad():
        for _ in range(5):
            fn(x)
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            fn(x)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench(model_name: str, data: str, epochs: int, runs: int, observer: str) -> dict:
    splits = load_data(data, seed=0)
    train, val, test = make_loaders(splits, batch_size=BATCH, seed=0)
    model = create_model(model_name, image_size=splits.input_shape[-1])
    fit(model, train, val, FitConfig(epochs=epochs, seed=0), progress=False)
    model.eval()
    qmodel, _ = quantize_ptq(model, train, PTQConfig(observer=observer))
    x = next(iter(test))[0][:BATCH]
    x = torch.cat([x] * (BATCH // x.shape[0] + 1))[:BATCH]
    ref = to_integer(qmodel, x)
    variants = {
        "fp32": model,
        "fp32 BN folded": fold_batchnorm(model)[0],
        "int8 x86": ref.with_backend("x86"),
        "int8 fbgemm": ref.with_backend("fbgemm"),
        "int8 reference": ref,
    }
    row = {
        "model": model_name,
        "data": data,
        "observer": observer,
        "fake_quant_accuracy": evaluate(qmodel, test).accuracy,
    }
    for name, m in variants.items():
        secs = _time(m, x, runs if name != "int8 reference" else max(runs // 10, 3))
        row[name] = {"seconds": secs, "accuracy": evaluate(m, test).accuracy}
    best_fp32 = min(row["fp32"]["seconds"], row["fp32 BN folded"]["seconds"])
    for name in ("int8 x86", "int8 fbgemm", "int8 reference"):
        row[name]["speedup_vs_best_fp32"] = best_fp32 / row[name]["seconds"]
        row[name]["speedup_vs_fp32"] = row["fp32"]["seconds"] / row[name]["seconds"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", default="vgg,lenet5")
    p.add_argument("--data", default="digits,digits:32")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--observer", default="percentile")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    rows = []
    for data in args.data.split(","):
        for name in args.models.split(","):
            row = bench(name, data, args.epochs, args.runs, args.observer)
            rows.append(row)
            fp = row["fp32"]
            print(
                f"{name} {data}: fp32 {fp['seconds'] * 1e3:.3f} ms acc {fp['accuracy']:.4f} | "
                f"folded {row['fp32 BN folded']['seconds'] * 1e3:.3f} ms | fake-quant acc "
                f"{row['fake_quant_accuracy']:.4f}"
            )
            for k in ("int8 x86", "int8 fbgemm", "int8 reference"):
                r = row[k]
                print(
                    f"   {k}: {r['seconds'] * 1e3:.3f} ms acc {r['accuracy']:.4f} "
                    f"x{r['speedup_vs_best_fp32']:.2f} vs best fp32, "
                    f"x{r['speedup_vs_fp32']:.2f} vs fp32"
                )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
