"""Compressed models through the MLPerf-style harness, each beside its own fp32 reference.

Produces (or reuses from ``--work``, default ``runs/mlperf_all``) on digits:

- **VGG group** (``digits:16``, VGG ``32,32,M,64,64,M`` as in ``bench_channel_prune_vgg.py``):
  fp32 baseline; channel-pruned to at most half the MACs (L1, first stage halved, rounded to
  8, fine-tuned; a ``build_pruned`` checkpoint); integer-only int8 (PTQ, x86 engine, the
  ``int8.safetensors`` format of ``slimtorch quantize --integer``); 4-bit k-means
  (``kmeans4:``, no centroid fine-tuning).
- **LeNet-300-100 group** (``digits``, 8x8): fp32 baseline; the pruned model of the default
  Deep Compression recipe's prune + fine-tune stages run with CSR kernels (every layer with
  >= 50% zeros: ``sparse=0.5:``); the full default recipe's ``.slim`` file; int8 (x86);
  4-bit k-means.
- **LLM**: SmolLM2-135M-Instruct (shipped GGUF) fp32 vs ``slimtorch.llm.kernels`` int4
  (g32) and int8, SingleStream over short prompts: TTFT, TPOT, tokens/s.

Each classifier group runs Offline, SingleStream and Server (peak search) with accuracy mode
and the closed division (99% of the group's fp32 top-1). The baseline of every ratio is the
fp32 model measured in the same run, same scenario, same settings.

Usage:
    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_mlperf_all.py
    .venv/bin/python benchmarks/bench_mlperf_all.py --quick --work /tmp/q --out /tmp/q.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_channel_prune_vgg import TARGET_MAC_FRACTION, macs, ratio_for_macs
from slimtorch.bench import LLMSettings, benchmark, benchmark_llm
from slimtorch.bench.accuracy import DivisionConfig
from slimtorch.bench.harness import load_eval_data
from slimtorch.bench.llm import llm_markdown
from slimtorch.bench.report import compare_markdown, record_to_dict, speedups
from slimtorch.bench.settings import TestSettings
from slimtorch.bench.sut import load_target
from slimtorch.checkpoint import load_checkpoint, save_checkpoint
from slimtorch.data import load_data, make_loaders
from slimtorch.io import atomic_write_text
from slimtorch.models import build_model, make_spec
from slimtorch.train import FitConfig, evaluate, fit

VGG_CFG = [32, 32, "M", 64, 64, "M"]  # bench_channel_prune_vgg.py's default
VGG_DATA, LENET_DATA = "digits:16", "digits"
SCENARIOS = ("offline", "singlestream", "server")
CLOSED_TARGET = 0.99  # MLPerf closed division: 99% of the fp32 reference
LLM_NEW_TOKENS = 32


def _loaders(data: str, seed: int):
    splits = load_data(data, seed=seed)
    return splits, make_loaders(splits, batch_size=64, seed=seed)


def _train(spec, loaders, epochs: int, lr: float, seed: int):
    torch.manual_seed(seed)
    model = build_model(spec)
    fit(model, loaders[0], loaders[1], FitConfig(epochs=epochs, lr=lr, scheduler="cosine",
                                                 seed=seed), progress=False)  # fmt: skip
    return model.eval()


def _integer(model, loaders, out: Path) -> Path:
    from slimtorch.quantize.integer import to_integer
    from slimtorch.quantize.intformat import save_integer_model
    from slimtorch.quantize.ptq import PTQConfig, quantize_ptq

    qmodel, _ = quantize_ptq(model, loaders[0], PTQConfig())
    example = next(iter(loaders[0]))[0]
    return save_integer_model(to_integer(qmodel, example, backend="x86"), out)


def prepare_vgg(work: Path, args: argparse.Namespace) -> tuple[list[str], dict]:
    """fp32, channel-pruned (<= half MACs), int8 and k-means VGG sources."""
    from slimtorch.prune.surgery import pruned_spec

    base, pruned_dir, int8 = work / "vgg_fp32", work / "vgg_pruned", work / "vgg_int8.safetensors"
    splits, loaders = _loaders(VGG_DATA, args.seed)
    info: dict = {}
    if not (base / "model.json").exists():
        spec = make_spec("vgg", in_channels=1, image_size=16, cfg=VGG_CFG)
        model = _train(spec, loaders, args.epochs, 3e-3, args.seed)
        save_checkpoint(base, model, spec, {"data": VGG_DATA, "seed": args.seed}, overwrite=True)
    model, spec, _ = load_checkpoint(base)
    x1 = torch.zeros(1, *splits.input_shape)
    if not (pruned_dir / "model.json").exists():
        kw = {"importance": "l1", "round_to": 8}
        _, pruned = ratio_for_macs(model, x1, TARGET_MAC_FRACTION, 0.5, **kw)
        fit(pruned, loaders[0], loaders[1], FitConfig(epochs=args.finetune_epochs, lr=1e-3,
            scheduler="cosine", seed=args.seed), progress=False)  # fmt: skip
        pruned.eval()
        save_checkpoint(pruned_dir, pruned, pruned_spec(spec, pruned),
                        {"data": VGG_DATA, "seed": args.seed}, overwrite=True)  # fmt: skip
    if not int8.exists():
        _integer(model, loaders, int8)
    pruned, _, _ = load_checkpoint(pruned_dir)
    info["macs"] = {"fp32": macs(model, x1), "pruned": macs(pruned, x1)}
    info["fp32_test_accuracy"] = evaluate(model, loaders[2]).accuracy
    sources = [str(base), str(pruned_dir), str(int8), f"kmeans4:{base}"]
    return sources, info


def _recipe_prefix(n_stages: int):
    """The default recipe cut after its first ``n_stages`` stages (prune, fine-tune)."""
    import dataclasses

    from slimtorch.compress.recipe import load_recipe

    recipe = load_recipe()
    return dataclasses.replace(recipe, stages=recipe.stages[:n_stages])


def prepare_lenet(work: Path, args: argparse.Namespace) -> tuple[list[str], dict]:
    """fp32, sparse (pruned, CSR), Deep Compression .slim, int8 and k-means LeNet-300-100."""
    from slimtorch.compress.job import run_pipeline
    from slimtorch.compress.recipe import load_recipe

    base, pruned_dir = work / "lenet300_fp32", work / "lenet300_pruned"
    slim, int8 = work / "lenet300.slim", work / "lenet300_int8.safetensors"
    _, loaders = _loaders(LENET_DATA, args.seed)
    spec = make_spec("lenet300")
    if not (base / "model.json").exists():
        model = _train(spec, loaders, args.lenet_epochs, 1e-3, args.seed)
        save_checkpoint(base, model, spec, {"data": LENET_DATA, "seed": args.seed}, overwrite=True)
    model, _, _ = load_checkpoint(base)
    cap = args.max_stage_epochs
    if not (pruned_dir / "model.json").exists():
        result = run_pipeline(copy.deepcopy(model), spec, _recipe_prefix(2), loaders,
                              progress=False, max_stage_epochs=cap)  # fmt: skip
        save_checkpoint(pruned_dir, result.model.eval(), spec,
                        {"data": LENET_DATA, "seed": args.seed}, overwrite=True)  # fmt: skip
    if not slim.exists():
        run_pipeline(copy.deepcopy(model), spec, load_recipe(), loaders, slim, progress=False,
                     max_stage_epochs=cap)  # fmt: skip
    if not int8.exists():
        _integer(model, loaders, int8)
    pruned, _, _ = load_checkpoint(pruned_dir)
    weights = [p for n, p in pruned.named_parameters() if n.endswith("weight")]
    zeros = sum(int((p == 0).sum()) for p in weights) / sum(p.numel() for p in weights)
    info = {"pruned_weight_sparsity": zeros, "slim_bytes": slim.stat().st_size,
            "fp32_state_bytes": sum(p.numel() * 4 for p in model.state_dict().values()),
            "max_stage_epochs": cap}  # fmt: skip
    # CSR for every pruned layer (>= 50% zeros): at batch 1 the measured break-even (98%,
    # slimtorch.prune.sparse.BREAKEVEN) would leave these 93/95/75%-sparse layers dense.
    sources = [str(base), f"sparse=0.5:{pruned_dir}", str(slim), str(int8), f"kmeans4:{base}"]
    info["csr_layers"] = load_target(sources[1]).info["csr_layers"]
    return sources, info


def settings_for(scenario: str, args: argparse.Namespace) -> TestSettings:
    duration = args.server_duration if scenario == "server" else args.min_duration
    return TestSettings(scenario, min_duration_s=duration, max_duration_s=max(10 * duration, 5),
                        min_query_count=args.min_queries, offline_min_samples=args.offline_samples,
                        server_target_qps=args.target_qps, seed=args.seed,
                        server_target_latency_s=args.latency_bound_ms / 1e3)  # fmt: skip


def run_group(name: str, sources: list[str], data: str, args: argparse.Namespace) -> dict:
    ev = load_eval_data(data, "test", args.seed)
    division = DivisionConfig("closed", CLOSED_TARGET)
    out: dict = {"data": data, "sources": sources, "scenarios": {}, "markdown": {}}
    for scenario in args.scenarios:
        t0 = time.perf_counter()
        records = benchmark(sources, settings_for(scenario, args), data=ev, division=division,
                            progress=False)  # fmt: skip
        rows = [{**record_to_dict(r, latencies=False), "speedup": up}
                for r, up in zip(records, speedups(records), strict=True)]  # fmt: skip
        out["scenarios"][scenario] = rows
        out["markdown"][scenario] = compare_markdown(records)
        print(f"\n### {name}: {scenario} ({time.perf_counter() - t0:.0f} s)\n", flush=True)
        print(out["markdown"][scenario], flush=True)
    return out


def run_llm(args: argparse.Namespace) -> dict:
    n = args.llm_tokens
    sources = [f"smollm2#{n}", f"smollm2@int4g32#{n}", f"smollm2@int8#{n}"]
    settings = LLMSettings("singlestream", min_query_count=args.llm_requests, seed=args.seed)
    results = benchmark_llm(sources, settings, progress=False)
    table = llm_markdown(results)
    print(f"\n### SmolLM2-135M SingleStream\n\n{table}\n", flush=True)
    return {"sources": sources, "results": [r.to_dict() for r in results], "markdown": table}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/mlperf_all"), help="artefact cache")
    ap.add_argument("--groups", default="vgg,lenet300,llm", help="comma-separated")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--epochs", type=int, default=20, help="VGG training epochs")
    ap.add_argument("--finetune-epochs", type=int, default=15, help="pruned VGG fine-tuning")
    ap.add_argument("--lenet-epochs", type=int, default=30, help="LeNet-300-100 epochs")
    ap.add_argument("--max-stage-epochs", type=int, default=None, help="cap recipe stages")
    ap.add_argument("--min-duration", type=float, default=1.0, help="s per offline/1-stream run")
    ap.add_argument("--server-duration", type=float, default=0.5, help="s per server trial")
    ap.add_argument("--min-queries", type=int, default=None, help="default: laptop preset")
    ap.add_argument("--offline-samples", type=int, default=None, help="default: laptop preset")
    ap.add_argument("--target-qps", type=float, default=1000.0, help="server search start")
    ap.add_argument("--latency-bound-ms", type=float, default=15.0, help="server p99 bound")
    ap.add_argument("--llm-tokens", type=int, default=LLM_NEW_TOKENS, help="tokens/request")
    ap.add_argument("--llm-requests", type=int, default=8, help="SingleStream requests")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny epochs and runs")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/mlperf_all.json"))
    args = ap.parse_args()
    if args.quick:
        args.epochs = args.finetune_epochs = args.lenet_epochs = args.max_stage_epochs = 1
        args.min_duration, args.server_duration, args.min_queries = 0.05, 0.05, 16
        args.offline_samples, args.llm_tokens, args.llm_requests = 128, 4, 2
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.groups = [g for g in args.groups.split(",") if g]
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    payload = {"date": time.strftime("%Y-%m-%d"), "threads": args.threads,
               "command": "python benchmarks/bench_mlperf_all.py " + " ".join(sys.argv[1:]),
               "settings": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    prepare = {"vgg": (prepare_vgg, VGG_DATA), "lenet300": (prepare_lenet, LENET_DATA)}
    t0 = time.perf_counter()
    for group in args.groups:
        start = time.perf_counter()
        if group == "llm":
            payload[group] = run_llm(args)
        else:
            fn, data = prepare[group]
            sources, info = fn(args.work, args)
            print(f"{group}: artefacts ready ({time.perf_counter() - start:.0f} s) {info}")
            payload[group] = {**run_group(group, sources, data, args), "artefacts": info}
        payload[group]["seconds"] = time.perf_counter() - start
        payload["seconds"] = time.perf_counter() - t0
        atomic_write_text(args.out, json.dumps(payload, indent=2, default=str) + "\n")
    payload["markdown_all"] = tables_markdown(payload, args)
    atomic_write_text(args.out, json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\n{payload['markdown_all']}\nwrote {args.out} ({time.perf_counter() - t0:.0f} s)")


def tables_markdown(payload: dict, args: argparse.Namespace) -> str:
    """Every comparison table of the run, for BENCHMARKS.md."""
    parts = [f"`{payload['command']}` ({payload['date']}, {payload['threads']} thread(s))\n"]
    for group in args.groups:
        g = payload[group]
        if group == "llm":
            parts.append(f"#### SmolLM2-135M: SingleStream\n\n{g['markdown']}\n")
            continue
        for scenario, table in g["markdown"].items():
            parts.append(f"#### {group} ({g['data']}): {scenario}\n\n{table}")
        parts.append(f"artefacts: `{json.dumps(g['artefacts'])}`\n")
    return "\n".join(parts)


if __name__ == "__main__":
    main()
