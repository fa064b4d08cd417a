"""LLM compression on SmolLM2-135M: perplexity, wall time and peak memory of each method.

Each method runs in its own subprocess (so its peak RSS is its own): load the model, calibrate
on WikiText-2 validation windows, compress block by block, then score perplexity with
llama.cpp's protocol (non-overlapping 512-token windows, second half scored, no BOS for
SmolLM2) on the held-out Tiny Shakespeare tail. The fp32 baseline is measured in the same run.

Run under the bench lock:
    flock /tmp/slimtorch-bench.lock .venv/bin/python benchmarks/bench_llm_compress.py \
        --methods fp32 rtn:4:128 awq:4:128 --text ../shared/data/text/tinyshakespeare-tail-24k.txt
Method specs: fp32 | rtn|awq|gptq|gptq-act:BITS:GROUP (GROUP a number or ch) | kmeans:BITS:GROUP
| magnitude|wanda|sparsegpt:SPARSITY or :N:M (e.g. wanda:2:4). AWQ takes AWQConfig overrides
after the group: awq:4:64:scale_search=both,solver=gptq,search_tokens=2048.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_DIR = ROOT.parent / "shared" / "data" / "text"
PRUNE = ("magnitude", "wanda", "sparsegpt")


def make_config(spec: str):
    """The compression config for a method spec (None for fp32)."""
    from slimtorch.llm import compress as c

    name, *rest = spec.split(":")
    if name == "fp32":
        return None
    if name in PRUNE:
        cls = {
            "magnitude": c.MagnitudeConfig,
            "wanda": c.WandaConfig,
            "sparsegpt": c.SparseGPTConfig,
        }[name]
        if len(rest) == 2:
            return cls(nm=(int(rest[0]), int(rest[1])))
        return cls(sparsity=float(rest[0]))
    bits, group = int(rest[0]), None if rest[1] == "ch" else int(rest[1])
    if name == "rtn":
        return c.RTNConfig(bits, group)
    if name == "awq":
        return c.AWQConfig(bits, group, **_options(c.AWQConfig, rest[2:]))
    if name in ("gptq", "gptq-act"):
        return c.GPTQConfig(bits, group, act_order=name == "gptq-act")
    if name == "kmeans":
        return c.GroupKMeansConfig(bits, group)
    raise SystemExit(f"unknown method spec {spec!r}")


def _options(cls: type, extra: list[str]) -> dict:
    """``key=value,key=value`` config overrides, each value cast to the field's default type."""
    defaults = cls()
    out: dict = {}
    for item in ",".join(extra).split(","):
        if not item:
            continue
        key, _, value = item.partition("=")
        kind = type(getattr(defaults, key))
        out[key] = value in ("1", "true", "True") if kind is bool else kind(value)
    return out


def run_one(args: argparse.Namespace) -> dict:
    """Compress and score one method in this process."""
    import torch

    from slimtorch.llm.compress import CalibConfig, compress_model
    from slimtorch.llm.compress.api import return_freed_memory
    from slimtorch.llm.compress.calibrate import calibration_windows, read_text
    from slimtorch.llm.perplexity import PerplexityConfig, perplexity
    from slimtorch.llm.source import load_model
    from slimtorch.llm.tokenizer import Tokenizer

    torch.manual_seed(0)
    return_freed_memory()  # as `slimtorch llm compress` does, before loading
    loaded = load_model(args.model)
    tok = Tokenizer.from_gguf_metadata(loaded.metadata)
    model = loaded.model
    config = make_config(args.one)
    result: dict = {"method": args.one}
    if config is not None:
        calib = CalibConfig(n_samples=args.n_samples, seq_len=args.seq_len, batch_size=4)
        text = read_text(args.calib)
        ids = tok.encode(text[: int(args.calib_frac * len(text))], add_bos=False)
        tokens = calibration_windows(ids, calib.n_samples, calib.seq_len)
        report = compress_model(model, config, tokens, calib, progress=False)
        result.update(
            wall_s=report.wall_s,
            peak_rss_mb=report.peak_rss_mb,
            calib_tokens=report.calib_tokens,
            config=report.config,
        )
        if hasattr(config, "bits_per_weight"):
            result["bits_per_weight"] = config.bits_per_weight(576)
        elif hasattr(config, "rtn"):
            result["bits_per_weight"] = config.rtn().bits_per_weight(576)
    text_ids = tok.encode(Path(args.text).read_text(encoding="utf-8"), add_bos=False)
    bos = loaded.config.bos_token_id if loaded.config.add_bos else -1
    pcfg = PerplexityConfig(ctx=512, protocol="llamacpp", bos_id=bos, batch_size=4)
    ppl = perplexity(model, text_ids, pcfg, progress=False)
    result.update(perplexity=ppl.perplexity, scored=ppl.scored, windows=ppl.windows)
    return result


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--methods", nargs="+", default=["fp32", "rtn:4:128", "awq:4:128"])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--text", default=str(TEXT_DIR / "tinyshakespeare-tail-24k.txt"))
    p.add_argument("--calib", default=str(TEXT_DIR / "wikitext2-valid.txt"))
    p.add_argument(
        "--calib-frac",
        type=float,
        default=1.0,
        help="calibrate on the first fraction of --calib only (0.9 with tinyshakespeare.txt: "
        "in-domain calibration that never sees the held-out tail)",
    )
    p.add_argument("--n-samples", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llm_compress.json"))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    out_path = Path(args.out)
    runs = json.loads(out_path.read_text())["runs"] if out_path.exists() else []
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "text": args.text,
        "calib": args.calib,
        "calib_frac": args.calib_frac,
        "n_samples": args.n_samples,
        "seq_len": args.seq_len,
        "rows": [],
    }
    for spec in args.methods:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            spec,
            "--model",
            args.model,
            "--text",
            args.text,
            "--calib",
            args.calib,
            "--n-samples",
            str(args.n_samples),
            "--calib-frac",
            str(args.calib_frac),
            "--seq-len",
            str(args.seq_len),
        ]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["process_s"] = time.perf_counter() - t0
        result["rows"].append(row)
        rows = result["rows"]
        base = rows[0]["perplexity"] if rows[0]["method"] == "fp32" else float("nan")
        print(
            f"{spec:18s} ppl {row['perplexity']:8.3f} (x{row['perplexity'] / base:.3f} fp32)  "
            f"compress {row.get('wall_s', 0):7.1f} s  peak {row.get('peak_rss_mb', 0):7.0f} MiB",
            flush=True,
        )
        _write(out_path, [*runs, result])  # after every method: a cut-short run keeps its rows


def _write(path: Path, runs: list) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from slimtorch.io import atomic_write_text

    atomic_write_text(path, json.dumps({"runs": runs}, indent=1))


if __name__ == "__main__":
    main()
