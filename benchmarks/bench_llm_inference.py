"""SmolLM2-135M inference speed: fp32 vs int8 vs int4 (ours), prefill and decode tokens/s.

Every figure is a ratio against our fp32 model measured in the same run, plus the fraction of
the memory-bandwidth limit: (weight bytes read per decoded token) / (DRAM read bandwidth
measured in the same run) gives the best possible decode tokens/s.

    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_llm_inference.py
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from slimtorch.io import atomic_write_text
from slimtorch.llm.generate import GenerateConfig, generate, prefill
from slimtorch.llm.kernels import KernelConfig, convert_linears, weight_bytes_per_token
from slimtorch.llm.source import load_model, load_tokenizer
from slimtorch.profile.roofline import measure_machine

TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "tinyshakespeare.txt"
OUT = Path(__file__).resolve().parent / "results" / "llm_inference.json"


def time_prefill(model: torch.nn.Module, ids: list[int], repeats: int) -> float:
    """Best prompt tokens/s over ``repeats`` prefills (cache set up outside the timing)."""
    best = 0.0
    x = torch.tensor([ids])
    for _ in range(repeats):
        model.setup_cache(1, len(ids))
        with torch.inference_mode():
            t0 = time.perf_counter()
            prefill(model, x)
            best = max(best, len(ids) / (time.perf_counter() - t0))
        model.clear_cache()
    return best


def time_decode(model: torch.nn.Module, ids: list[int], n_new: int, repeats: int) -> float:
    """Best decode tokens/s over ``repeats`` greedy generations of ``n_new`` tokens."""
    cfg = GenerateConfig(max_new_tokens=n_new)
    return max(generate(model, ids, cfg).decode_tokens_per_s for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--group-size", type=int, default=32)
    args = ap.parse_args()

    loaded = load_model(max_seq_len=1024)
    tok = load_tokenizer(loaded)
    ids = tok.encode(TEXT.read_text(encoding="utf-8")[:20_000])[: args.prompt_tokens]
    peaks = measure_machine(1.0, torch.get_num_threads())
    rows = []
    for mode in ("fp32", "int8", "int4"):
        model = copy.deepcopy(loaded.model)
        convert_linears(model, KernelConfig(mode=mode, group_size=args.group_size))
        pf = time_prefill(model, ids, args.repeats)
        dec = time_decode(model, ids[:16], args.decode_tokens, args.repeats)
        nbytes = weight_bytes_per_token(model)
        limit = peaks.bandwidth_bytes_per_s / nbytes
        rows.append(
            {
                "mode": mode,
                "prefill_tok_s": pf,
                "decode_tok_s": dec,
                "weight_bytes_per_token": nbytes,
                "bandwidth_limit_tok_s": limit,
                "fraction_of_limit": dec / limit,
            }
        )
        print(
            f"{mode}: prefill {pf:.1f} tok/s, decode {dec:.1f} tok/s, "
            f"{nbytes / 1e6:.1f} MB/token, limit {limit:.0f} tok/s",
            flush=True,
        )
        del model
    base = rows[0]
    for r in rows:
        r["prefill_vs_fp32"] = r["prefill_tok_s"] / base["prefill_tok_s"]
        r["decode_vs_fp32"] = r["decode_tok_s"] / base["decode_tok_s"]
    result = {
        "args": vars(args),
        "threads": torch.get_num_threads(),
        "bandwidth_GB_s": peaks.bandwidth_bytes_per_s / 1e9,
        "rows": rows,
    }
    atomic_write_text(OUT, json.dumps(result, indent=2))
    print(f"bandwidth {peaks.bandwidth_bytes_per_s / 1e9:.1f} GB/s")
    print(
        "| format | prefill tok/s | vs fp32 | decode tok/s | vs fp32 | MB/token | limit tok/s "
        "| of limit |"
    )
    for r in rows:
        print(
            f"| {r['mode']} | {r['prefill_tok_s']:.1f} | {r['prefill_vs_fp32']:.2f} | "
            f"{r['decode_tok_s']:.1f} | {r['decode_vs_fp32']:.2f} | "
            f"{r['weight_bytes_per_token'] / 1e6:.1f} | {r['bandwidth_limit_tok_s']:.0f} | "
            f"{r['fraction_of_limit']:.0%} |"
        )


if __name__ == "__main__":
    main()
