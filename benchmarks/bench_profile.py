"""Profile the zoo (8x8 digits) and a ResNet-18-shaped network at 224x224.

Checks our counts against references in the same run:
- ResNet-18: published 1.82 GMACs (He et al. 2016, Table 1: 1.8 GFLOPs counted as multiply-adds;
  torchvision lists 1.81 GFLOPS) and 11,689,512 parameters (torchvision's resnet18);
- fvcore's FlopCountAnalysis (one "flop" per MAC) and torch.utils.flop_counter (2 FLOPs per MAC),
  two independent counters, on every model;
- the profiler's own cost: tracing time over one plain forward pass.

Usage:
    python benchmarks/bench_profile.py --out benchmarks/results/profile.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from slimtorch.core.trace import trace_model
from slimtorch.io import atomic_write_text
from slimtorch.models import MODEL_NAMES, create_model
from slimtorch.profile import ProfileConfig, profile_model

RESNET18_PUBLISHED_MACS = 1.82e9
RESNET18_TORCHVISION_PARAMS = 11_689_512


def fvcore_macs(model: torch.nn.Module, x: torch.Tensor) -> int | None:
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        return None
    analysis = FlopCountAnalysis(model, x).unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    by_op = analysis.by_operator()
    return int(
        sum(
            v
            for k, v in by_op.items()
            if k in ("conv", "linear", "matmul", "addmm", "bmm", "einsum")
        )
    )


def torch_counter_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def forward_seconds(model: torch.nn.Module, x: torch.Tensor, reps: int = 5) -> float:
    with torch.inference_mode():
        model(x)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def measure(name: str, model: torch.nn.Module, x: torch.Tensor, cfg: ProfileConfig) -> dict:
    model.eval()
    trace_model(model, x)  # the first trace in a process pays a one-off set-up cost
    trace_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        trace_model(model, x)
        trace_times.append(time.perf_counter() - t0)
    trace_s = sorted(trace_times)[2]
    fwd_s = forward_seconds(model, x)
    p = profile_model(model, x, cfg, name=name)
    row = {
        "model": name,
        "input": list(x.shape),
        "params": p.params,
        "macs": p.macs,
        "fvcore_macs": fvcore_macs(model, x),
        "torch_flop_counter_macs": torch_counter_macs(model, x),
        "flops": p.flops,
        "peak_activation_bytes": p.activation.peak_bytes,
        "training_bytes": p.training.total_bytes,
        "latency_median_ms": p.latency.median_s * 1e3 if p.latency else None,
        "latency_p99_ms": p.latency.p99_s * 1e3 if p.latency else None,
        "throughput": {tp.batch_size: tp.samples_per_s for tp in p.throughput},
        "energy_uJ": p.energy.total_pj * 1e-6,
        "trace_over_forward": trace_s / fwd_s,
    }
    print(json.dumps(row))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/profile.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    zoo_cfg = ProfileConfig(runs=50, throughput_batch_sizes=(1, 32, 256), layer_latency=False)
    for name in MODEL_NAMES:
        rows.append(measure(name, create_model(name), torch.rand(1, 1, 8, 8), zoo_cfg))
    r18 = create_model(
        "resnet", num_classes=1000, in_channels=3, image_size=224, blocks=(2, 2, 2, 2), width=64
    )
    big_cfg = ProfileConfig(runs=10, warmup=2, throughput_batch_sizes=(1, 8), layer_latency=False)
    row = measure("resnet18@224", r18, torch.rand(1, 3, 224, 224), big_cfg)
    row["published_macs"] = RESNET18_PUBLISHED_MACS
    row["macs_over_published"] = row["macs"] / RESNET18_PUBLISHED_MACS
    row["torchvision_params"] = RESNET18_TORCHVISION_PARAMS
    rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
