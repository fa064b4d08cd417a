"""Reference LLM engines for bench_llm_inference.py: transformers (eager) and llama.cpp.

Neither is a slimtorch dependency. transformers runs in its own throwaway venv (this file is
then executed by that venv's python and must not import slimtorch); llama.cpp is a
``llama-bench`` binary built outside the repository. Both are optional: the main benchmark
skips what it is not given.

As a script (inside the transformers venv)::

    /tmp/hfvenv/bin/python benchmarks/bench_llm_reference.py --hf FOLDER --threads 1 2

prints one JSON line per thread count: prefill and greedy-decode tokens/s of
``LlamaForCausalLM`` (fp32, eager attention) with its KV cache, timed by a plain loop of
forward calls (no ``generate()`` bookkeeping, so the fastest transformers path).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def transformers_speed(
    folder: str, threads: int, prompt_tokens: int, decode_tokens: int
) -> dict[str, float]:
    """Prefill and decode tokens/s of the HF folder with transformers (fp32, eager)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(
        folder, torch_dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids = (torch.arange(prompt_tokens) * 7919 % 40000 + 100)[None]  # arbitrary fixed tokens
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(ids, use_cache=True)
        prefill_s = time.perf_counter() - t0
        short = model(ids[:, :16], use_cache=True)  # decode after a 16-token prompt
        past, tok = short.past_key_values, short.logits[:, -1].argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        for _ in range(decode_tokens - 1):
            step = model(tok, past_key_values=past, use_cache=True)
            past, tok = step.past_key_values, step.logits[:, -1].argmax(-1, keepdim=True)
        decode_s = time.perf_counter() - t0
    del out
    return {
        "threads": threads,
        "prefill_tok_s": prompt_tokens / prefill_s,
        "decode_tok_s": (decode_tokens - 1) / decode_s,
    }


def run_transformers(
    python: str, folder: str, threads: list[int], prompt_tokens: int, decode_tokens: int
) -> list[dict[str, float]]:
    """Run this file under ``python`` (the transformers venv); one result per thread count."""
    cmd = [python, __file__, "--hf", folder, "--prompt-tokens", str(prompt_tokens)]
    cmd += ["--decode-tokens", str(decode_tokens), "--threads", *map(str, threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def run_llama_bench(
    binary: str, gguf: str, threads: int, prompt_tokens: int, decode_tokens: int, reps: int
) -> dict[str, float]:
    """``llama-bench -p P -n N -t T``: prompt and generation tokens/s (mean over reps)."""
    cmd = [binary, "-m", gguf, "-p", str(prompt_tokens), "-n", str(decode_tokens)]
    cmd += ["-t", str(threads), "-r", str(reps), "-o", "json"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = json.loads(res.stdout)
    out: dict[str, float] = {"threads": threads}
    for row in rows:
        key = "prefill_tok_s" if row["n_prompt"] > 0 else "decode_tok_s"
        out[key] = float(row["avg_ts"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hf", required=True, help="Hugging Face Llama folder")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    args = ap.parse_args()
    for t in args.threads:
        r = transformers_speed(args.hf, t, args.prompt_tokens, args.decode_tokens)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]
    main()
