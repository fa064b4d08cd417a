"""int8 linear kernels on this CPU at batch 64, and the cost of the quantization primitives.

Times, in one run and against fp32 ``F.linear`` on the same shapes: fp32 ``(W @ x.T).T``;
torch.ao dynamic int8 Linear; a static int8 ``torch.ao.nn.quantized.Linear`` (x86 engine, what
the integer model uses); ``torch._int_mm`` (int8 x int8 -> int32); ``_weight_int8pack_mm``
(int8 weights, fp32 activations); and our exact integer reference ``linear_int`` (int32
matmul). Then ``choose_qparams`` + ``quantize`` and int4 ``pack`` throughput on a 4096x4096
weight.

    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_quant_linear.py
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from slimtorch.quantize.engine import quantized_engine
from slimtorch.quantize.intkernels import linear_int
from slimtorch.quantize.packing import pack
from slimtorch.quantize.primitives import PerChannel, PerGroup, QuantSpec, choose_qparams, quantize

BATCH = 64
SHAPES = ((1024, 1024), (4096, 1024))
RESULTS = Path(__file__).parent / "results" / "quant_linear.json"


def _time(fn, runs: int = 30) -> float:
    for _ in range(3):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _kernels(n_out: int, n_in: int) -> dict[str, float]:
    import torch.ao.nn.quantized as nnq

    torch.manual_seed(0)
    x, w, b = torch.randn(BATCH, n_in), torch.randn(n_out, n_in) * 0.05, torch.zeros(n_out)
    lin = torch.nn.Linear(n_in, n_out)
    lin.weight.data.copy_(w)
    dyn = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear})
    spec = QuantSpec(8, granularity=PerChannel(0))
    qp = choose_qparams(w, spec)
    wq = quantize(w, qp, spec)
    s = qp.scale.reshape(-1).double()
    with quantized_engine("x86"):
        static = nnq.Linear(n_in, n_out)
        qw = torch._make_per_channel_quantized_tensor(wq, s, torch.zeros_like(s).long(), 0)
        static.set_weight_bias(qw, b)
        static.scale, static.zero_point = 0.05, 128
        xq = torch.quantize_per_tensor(x, 0.02, 128, torch.quint8)
        t_static = _time(lambda: static(torch.quantize_per_tensor(x, 0.02, 128, torch.quint8)))
        t_static_only = _time(lambda: static(xq))
    xi8, wt = torch.randint(-128, 127, (BATCH, n_in), dtype=torch.int8), wq.T.contiguous()
    xi32 = xi8.to(torch.int32)
    with torch.no_grad():
        return {
            "fp32 F.linear": _time(lambda: F.linear(x, w, b)),
            "fp32 (W @ x.T).T": _time(lambda: (w @ x.T).T),
            "int8 dynamic (torch.ao)": _time(lambda: dyn(x)),
            "int8 static x86 incl. input quantize": t_static,
            "int8 static x86 (quint8 in/out)": t_static_only,
            "torch._int_mm": _time(lambda: torch._int_mm(xi8, wt)),
            "_weight_int8pack_mm fp32 act": _time(
                lambda: torch._weight_int8pack_mm(x, wq, qp.scale.reshape(-1))
            ),
            "reference linear_int (int32)": _time(lambda: linear_int(xi32, wq, None), 5),
        }


def _primitives() -> dict[str, float]:
    w = torch.randn(4096, 4096)
    out = {}
    for label, spec in (
        ("int8 per-channel", QuantSpec(8, granularity=PerChannel(0))),
        ("int4 group 128", QuantSpec(4, granularity=PerGroup(128))),
    ):
        secs = _time(lambda spec=spec: quantize(w, choose_qparams(w, spec), spec), 5)
        out[f"choose_qparams+quantize {label} (Melem/s)"] = w.numel() / secs / 1e6
    q = torch.randint(-8, 8, (4096, 4096), dtype=torch.int8)
    out["pack int4 (Melem/s)"] = q.numel() / _time(lambda: pack(q, 4, True), 5) / 1e6
    return out


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    results = {"date": time.strftime("%Y-%m-%d"), "batch": BATCH, "kernels": {}}
    for n_out, n_in in SHAPES:
        times = _kernels(n_out, n_in)
        base = times["fp32 F.linear"]
        key = f"{n_out}x{n_in}"
        results["kernels"][key] = {
            k: {"seconds": v, "speedup_vs_F.linear": base / v} for k, v in times.items()
        }
        print(f"Linear {key}, batch {BATCH}:")
        for k, v in times.items():
            print(f"  {k:<40} {v * 1e3:8.3f} ms  x{base / v:5.2f}")
    results["primitives"] = _primitives()
    for k, v in results["primitives"].items():
        print(f"{k}: {v:.0f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
