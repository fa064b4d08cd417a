"""SmolLM2-135M inference speed: ours (fp32 / int8 / int4) vs transformers and llama.cpp.

Interleaved rounds in one run (the cores are shared: every engine sees the same load), medians
over rounds. Per round: our three formats (prefill of ``--prompt-tokens``, greedy decode of
``--decode-tokens`` after a 16-token prompt, at each ``--threads`` count for decode), then
transformers fp32 eager in its own venv (``--hf-python``, ``--hf-folder``; see
bench_llm_reference.py), then ``llama-bench`` on each ``--gguf`` (``-p`` / ``-n`` / ``-t`` the
same). The fraction of the bandwidth limit is (weight bytes read per decoded token) /
(DRAM read bandwidth measured in the same run with the same thread count).

    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_llm_inference.py \\
        --hf-python /tmp/hfvenv/bin/python --hf-folder /tmp/s6art/hf \\
        --llama-bench /tmp/llama.cpp/build/bin/llama-bench \\
        --gguf Q4_0=/tmp/s6art/smollm2-q4_0.gguf --gguf Q4_1=<shipped Q4_1>
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from bench_llm_reference import run_llama_bench, run_transformers
from slimtorch.io import atomic_write_text
from slimtorch.llm.generate import GenerateConfig, generate, prefill
from slimtorch.llm.kernels import KernelConfig, convert_linears, weight_bytes_per_token
from slimtorch.llm.source import default_model_path, load_model, load_tokenizer
from slimtorch.profile.roofline import measure_machine

TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "tinyshakespeare.txt"
OUT = Path(__file__).resolve().parent / "results" / "llm_inference.json"
MODES = ("fp32", "int8", "int4")  # int4 once per --group-sizes entry


def time_prefill(model: torch.nn.Module, ids: list[int]) -> float:
    """Prompt tokens/s of one prefill (cache set up outside the timing)."""
    model.setup_cache(1, len(ids))
    with torch.inference_mode():
        t0 = time.perf_counter()
        prefill(model, torch.tensor([ids]))
        dt = time.perf_counter() - t0
    model.clear_cache()
    return len(ids) / dt


def time_decode(
    model: torch.nn.Module, ids: list[int], n_new: int, threads: int, engine: str
) -> float:
    """Decode tokens/s of one greedy generation of ``n_new`` tokens."""
    cfg = GenerateConfig(max_new_tokens=n_new, decode_threads=threads, engine=engine)
    out = generate(model, ids, cfg)
    if out.engine != engine:
        raise RuntimeError(f"asked for the {engine} engine, got {out.engine}")
    return out.decode_tokens_per_s


def gguf_weight_bytes(path: str) -> int:
    """Bytes of the 2-D weights a decoded token reads from a GGUF (the tied head included)."""
    import gguf

    reader = gguf.GGUFReader(path)
    return sum(int(t.n_bytes) for t in reader.tensors if len(t.shape) > 1)


def our_round(models: dict, ids: list[int], args: argparse.Namespace, rec: dict) -> None:
    for mode, model in models.items():
        pre = time_prefill(model, ids)  # the same prefill whichever engine decodes
        for engine in args.engines:
            name = f"ours-{engine}"
            rec.setdefault((name, mode, "prefill"), []).append(pre)
            for t in args.threads:
                tps = time_decode(model, ids[:16], args.decode_tokens, t, engine)
                rec.setdefault((name, mode, f"decode_t{t}"), []).append(tps)
            print(f"  {name} {mode}: " + ", ".join(f"{k[2]} {v[-1]:.1f}" for k, v in rec.items()
                  if k[:2] == (name, mode)), flush=True)  # fmt: skip


def reference_round(args: argparse.Namespace, rec: dict) -> None:
    if args.hf_python and args.hf_folder:
        for r in run_transformers(
            args.hf_python, args.hf_folder, args.threads, args.prompt_tokens, args.decode_tokens
        ):
            t = r["threads"]
            rec.setdefault(("transformers", "fp32", f"decode_t{t}"), []).append(r["decode_tok_s"])
            if t == max(args.threads):
                rec.setdefault(("transformers", "fp32", "prefill"), []).append(r["prefill_tok_s"])
        print(
            f"  transformers: {[round(v[-1], 1) for k, v in rec.items() if k[0] == 'transformers']}"
        )
    for spec in args.gguf if args.llama_bench else []:
        name, path = spec.split("=", 1)
        for t in args.threads:
            r = run_llama_bench(
                args.llama_bench, path, t, args.prompt_tokens, args.decode_tokens, reps=1
            )
            rec.setdefault(("llama.cpp", name, f"decode_t{t}"), []).append(r["decode_tok_s"])
            if t == max(args.threads):
                rec.setdefault(("llama.cpp", name, "prefill"), []).append(r["prefill_tok_s"])
        print(f"  llama.cpp {name}: {[round(v[-1], 1) for k, v in rec.items() if k[1] == name]}")


def summarize(rec: dict, nbytes: dict, bw: dict, args: argparse.Namespace) -> list[dict]:
    rows = []
    for engine, fmt in dict.fromkeys((k[0], k[1]) for k in rec):
        row: dict = {"engine": engine, "format": fmt}
        for (e, f, what), vals in rec.items():
            if (e, f) == (engine, fmt):
                row[what] = statistics.median(vals)
                row[what + "_all"] = vals
        decode = {t: row.get(f"decode_t{t}", 0.0) for t in args.threads}
        best_t = max(decode, key=decode.get)
        row.update(best_decode_tok_s=decode[best_t], best_threads=best_t)
        b = nbytes.get((engine, fmt))
        if b:
            row["weight_bytes_per_token"] = b
            row["limit_tok_s"] = bw[best_t] / b
            row["fraction_of_limit"] = decode[best_t] / row["limit_tok_s"]
        rows.append(row)
    return rows


def targets(rows: list[dict]) -> dict[str, float]:
    get = {(r["engine"], r["format"]): r for r in rows}
    out = {}
    for eng, fmt in [(e, f) for e, f in get if e.startswith("ours") and f.startswith("int4")]:
        ours4, ours32 = get[(eng, fmt)], get[(eng, "fp32")]
        out[f"{eng}_{fmt}_prefill_vs_fp32"] = ours4["prefill"] / ours32["prefill"]
        for ref in (("transformers", "fp32"), ("llama.cpp", "Q4_0")):
            if ref in get:
                out[f"{eng}_{fmt}_decode_vs_{ref[0]}_{ref[1]}"] = (
                    ours4["best_decode_tok_s"] / get[ref]["best_decode_tok_s"]
                )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--engines",
        nargs="+",
        default=["native", "torch"],
        choices=["native", "torch"],
        help="our decode engines to time (the same prefill is reported for each)",
    )
    ap.add_argument("--group-sizes", type=int, nargs="+", default=[32, 64], help="int4 groups")
    ap.add_argument("--hf-python", default="", help="python of a venv with transformers")
    ap.add_argument("--hf-folder", default="", help="HF folder of the model (save_hf)")
    ap.add_argument("--llama-bench", default="", help="llama-bench binary")
    ap.add_argument("--gguf", nargs="*", default=[], help="NAME=PATH for llama-bench")
    args = ap.parse_args()
    torch.set_num_threads(max(args.threads))  # prefill runs with all threads

    loaded = load_model(max_seq_len=1024)
    ids = load_tokenizer(loaded).encode(TEXT.read_text(encoding="utf-8")[:20_000])
    ids = ids[: args.prompt_tokens]
    models = {}
    for mode in MODES:
        for g in args.group_sizes if mode == "int4" else [args.group_sizes[0]]:
            name = f"int4-g{g}" if mode == "int4" else mode
            models[name] = copy.deepcopy(loaded.model)
            convert_linears(models[name], KernelConfig(mode=mode, group_size=g))
    nbytes = {(f"ours-{e}", m): weight_bytes_per_token(models[m]) for m in models
              for e in args.engines}  # fmt: skip
    nbytes[("transformers", "fp32")] = weight_bytes_per_token(models["fp32"])
    for spec in args.gguf:
        name, path = spec.split("=", 1)
        nbytes[("llama.cpp", name)] = gguf_weight_bytes(path)
    rec: dict = {}
    bws: dict[int, list[float]] = {t: [] for t in args.threads}
    for rnd in range(args.rounds):
        print(f"round {rnd + 1}/{args.rounds}", flush=True)
        for t in args.threads:
            bws[t].append(measure_machine(0.5, t).bandwidth_bytes_per_s)
        our_round(models, ids, args, rec)
        reference_round(args, rec)
    bw = {t: statistics.median(v) for t, v in bws.items()}
    rows = summarize(rec, nbytes, bw, args)
    result = {
        "args": vars(args),
        "bandwidth_GB_s": {t: b / 1e9 for t, b in bw.items()},
        "rows": rows,
        "targets": targets(rows),
        "gguf_default": str(default_model_path()),
    }
    atomic_write_text(OUT, json.dumps(result, indent=2))
    print_table(result, args)


def print_table(result: dict, args: argparse.Namespace) -> None:
    print(
        "bandwidth GB/s by threads:", {t: round(b, 1) for t, b in result["bandwidth_GB_s"].items()}
    )
    dec = " | ".join(f"decode t{t}" for t in args.threads)
    print(f"| engine | format | prefill tok/s | {dec} | MB/token | limit tok/s | of limit |")
    for r in result["rows"]:
        d = " | ".join(f"{r.get(f'decode_t{t}', float('nan')):.1f}" for t in args.threads)
        mb = r.get("weight_bytes_per_token", 0) / 1e6
        print(
            f"| {r['engine']} | {r['format']} | {r.get('prefill', float('nan')):.1f} | {d} | "
            f"{mb:.1f} | {r.get('limit_tok_s', float('nan')):.0f} | "
            f"{r.get('fraction_of_limit', float('nan')):.0%} |"
        )
    print("targets:", {k: round(v, 2) for k, v in result["targets"].items()})


if __name__ == "__main__":
    main()
