"""``slimtorch llm compress MODEL --method ...``: the same configs the Python API takes.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> register(parser.add_subparsers())
    >>> argv = ["compress", "--method", "wanda", "--nm", "2:4", "--out", "m.gguf"]
    >>> args = parser.parse_args(argv)
    >>> build_config(args)
    WandaConfig(sparsity=0.5, nm=(2, 4), version=1)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slimtorch.errors import ConfigError

METHOD_CHOICES = ("rtn", "awq", "gptq", "kmeans", "magnitude", "wanda", "sparsegpt")


CHANNEL = 0  # --group-size channel
METHOD_DEFAULT = -1  # --group-size not given: 128, or per-channel for k-means


def _group(text: str) -> int:
    if text in ("channel", "ch"):
        return CHANNEL
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'channel', got {text!r}")
    return value


def _nm(text: str) -> tuple[int, int]:
    try:
        n, m = (int(p) for p in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N:M such as 2:4, got {text!r}") from None
    return n, m


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compress`` to the ``slimtorch llm`` subcommands."""
    p = subparsers.add_parser(
        "compress",
        help="quantize (RTN, AWQ, GPTQ, k-means) or prune (magnitude, Wanda, SparseGPT) an LLM",
        description="Compress every linear of MODEL's transformer blocks, calibrating block by "
        "block on a text file (--calib; by default an excerpt of WikiText-2 shipped with "
        "slimtorch), and write the result (GGUF or safetensors) plus a JSON report.",
    )
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="a .gguf file or a Hugging Face folder (default: the shipped SmolLM2-135M-Instruct)",
    )
    p.add_argument("--method", required=True, choices=METHOD_CHOICES, help="compression method")
    p.add_argument("--bits", type=int, default=4, help="weight bits: 2, 3, 4 or 8 (default 4)")
    p.add_argument(
        "--group-size",
        type=_group,
        default=METHOD_DEFAULT,
        help="input columns per scale, or 'channel' for per-channel (default 128; "
        "k-means: codebook per group, default channel)",
    )
    p.add_argument("--symmetric", action="store_true", help="symmetric grid (RTN/AWQ/GPTQ)")
    p.add_argument(
        "--act-order",
        action="store_true",
        help="GPTQ (and --awq-solver gptq): columns by decreasing Hessian diagonal",
    )
    p.add_argument(
        "--awq-solver",
        default="rtn",
        choices=("rtn", "gptq"),
        help="AWQ: round the scaled, clipped weights to nearest (rtn, default) or with GPTQ "
        "error feedback on the clipped grid (gptq: best with in-domain calibration text)",
    )
    p.add_argument(
        "--awq-scales",
        default="x",
        choices=("x", "duo", "both"),
        help="AWQ scale candidates: s_X^a (x, default), AutoAWQ's s_X^a / s_W^(1-a) (duo), or both",
    )
    p.add_argument(
        "--awq-clip-mode",
        default="sym",
        choices=("sym", "asym"),
        help="AWQ clipping: [-m, m] (sym, default) or then max and min refined separately (asym)",
    )
    p.add_argument(
        "--percdamp",
        type=float,
        default=0.01,
        help="GPTQ (and --awq-solver gptq) Hessian damping, fraction of its mean diagonal (0.01)",
    )
    p.add_argument("--sparsity", type=float, default=0.5, help="pruned fraction (default 0.5)")
    p.add_argument("--nm", type=_nm, default=None, help="N:M pattern, keep N of every M (2:4)")
    p.add_argument(
        "--calib",
        type=Path,
        default=None,
        help="calibration text for AWQ, GPTQ, Wanda and SparseGPT, UTF-8 (default: the text "
        "shipped with slimtorch, an 85 kB excerpt of WikiText-2's validation split, CC BY-SA "
        "3.0; in-domain text of your own usually calibrates better)",
    )
    p.add_argument("--calib-samples", type=int, default=32, help="calibration windows (32)")
    p.add_argument("--calib-seq-len", type=int, default=512, help="tokens per window (512)")
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output: a .gguf file (weights stored as --type) or .safetensors",
    )
    p.add_argument(
        "--type",
        default="F32",
        choices=("F32", "F16", "Q8_0", "Q4_0", "Q4_1"),
        help="GGUF storage of the 2-D weights (default F32: exactly what was computed)",
    )
    p.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def build_config(args: argparse.Namespace):
    """The method's config dataclass from the parsed options."""
    from slimtorch.llm import compress as c

    m = args.method
    if m in ("magnitude", "wanda", "sparsegpt"):
        cls = {
            "magnitude": c.MagnitudeConfig,
            "wanda": c.WandaConfig,
            "sparsegpt": c.SparseGPTConfig,
        }[m]
        return cls(sparsity=args.sparsity, nm=args.nm)
    gs = args.group_size
    if m == "kmeans":
        return c.GroupKMeansConfig(bits=args.bits, group_size=gs if gs > 0 else None)
    gs = 128 if gs == METHOD_DEFAULT else gs
    kw = {"bits": args.bits, "group_size": gs or None, "symmetric": args.symmetric}
    if m == "rtn":
        return c.RTNConfig(**kw)
    if m == "awq":
        return c.AWQConfig(
            **kw,
            scale_search=args.awq_scales,
            solver=args.awq_solver,
            clip_mode=args.awq_clip_mode,
            gptq_percdamp=args.percdamp,
            gptq_act_order=args.act_order,
        )
    return c.GPTQConfig(**kw, act_order=args.act_order, percdamp=args.percdamp)


def _save(model, loaded, args: argparse.Namespace) -> None:
    from slimtorch.io import atomic_write_bytes

    suffix = args.out.suffix.lower()
    if suffix == ".gguf":
        from slimtorch.llm.gguf_export import ExportConfig, export_gguf

        export_gguf(model, args.out, loaded.metadata, ExportConfig(weight_type=args.type))
    elif suffix == ".safetensors":
        from safetensors.torch import save

        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_embeddings:
            state.pop("output.weight", None)
        atomic_write_bytes(args.out, save(state, {"config": json.dumps(model.config.to_dict())}))
    else:
        raise ConfigError(f"--out {args.out}: expected a .gguf or .safetensors file")


def _run(args: argparse.Namespace) -> int:
    from slimtorch.io import atomic_write_text
    from slimtorch.llm.compress import CalibConfig, compress_model
    from slimtorch.llm.compress.api import CALIBRATED, return_freed_memory
    from slimtorch.llm.compress.calibrate import calibration_tokens, default_calibration_text
    from slimtorch.llm.source import load_model, load_tokenizer

    return_freed_memory()  # before loading: the heap never grows fragmented

    config = build_config(args)
    if args.out.suffix.lower() not in (".gguf", ".safetensors"):
        raise ConfigError(f"--out {args.out}: expected a .gguf or .safetensors file")
    calib = CalibConfig(n_samples=args.calib_samples, seq_len=args.calib_seq_len)
    loaded = load_model(args.model)
    tokens, calib_text = None, None
    if isinstance(config, CALIBRATED):
        calib_text = args.calib or default_calibration_text()
        tok = load_tokenizer(loaded)
        tokens = calibration_tokens(tok, calib.n_samples, calib.seq_len, calib_text)
        if not args.quiet:
            n, length = tokens.shape
            print(f"calibrating on {n} windows of {length} tokens from {calib_text}")
    report = compress_model(loaded.model, config, tokens, calib, progress=not args.quiet)
    _save(loaded.model, loaded, args)
    print(
        f"{report.method}: {len(report.blocks)} blocks in {report.wall_s:.1f} s, "
        f"peak RSS {report.peak_rss_mb:.0f} MiB -> {args.out}"
    )
    if args.report is not None:
        payload = {**report.to_dict(), "calib_text": calib_text and str(calib_text)}
        atomic_write_text(args.report, json.dumps(payload, indent=1))
    return 0
