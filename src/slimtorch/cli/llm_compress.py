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
from typing import Any

from safetensors.torch import save

from slimtorch.cli.fields import ConfigOptions, Custom
from slimtorch.cli.options import add_llm_model_argument
from slimtorch.errors import ConfigError
from slimtorch.io import atomic_write_bytes, atomic_write_text
from slimtorch.llm.compress import compress_model
from slimtorch.llm.compress.api import CALIBRATED, return_freed_memory
from slimtorch.llm.compress.calibrate import calibration_tokens, default_calibration_text
from slimtorch.llm.compress.config import (
    AWQConfig,
    CalibConfig,
    GPTQConfig,
    GroupKMeansConfig,
    MagnitudeConfig,
    RTNConfig,
    SparseGPTConfig,
    WandaConfig,
)
from slimtorch.llm.gguf_export import EXPORT_TYPES, ExportConfig, export_gguf
from slimtorch.llm.source import load_model, load_tokenizer

CHANNEL = ("channel", "ch")  # --group-size spellings of group_size=None (per output channel)
SAVED_TYPE = "F32"  # --type: store exactly what was computed (no second rounding)


def _group_size(text: str) -> int | None:
    if text in CHANNEL:
        return None
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise ConfigError(f"expected a positive integer or 'channel', got {text!r}")
    return value


def _nm(text: str) -> tuple[int, int]:
    try:
        n, m = (int(p) for p in text.split(":"))
    except ValueError:
        raise ConfigError(f"expected N:M such as 2:4, got {text!r}") from None
    return n, m


GROUP_SIZE = Custom(
    parse=_group_size, text=lambda v: "channel" if v is None else str(v), metavar="N|channel"
)
NM = Custom(parse=_nm, text=lambda v: "none" if v is None else f"{v[0]}:{v[1]}", metavar="N:M")
GRID = ("bits", "group_size", "symmetric")
METHODS_GROUP = "method options (each reads the config of the --method it names)"


def _options(cls: type, only: tuple[str, ...], **flags: str) -> ConfigOptions:
    custom = {k: v for k, v in (("group_size", GROUP_SIZE), ("nm", NM)) if k in only}
    return ConfigOptions(cls, only=only, flags=flags, custom=custom, group=METHODS_GROUP)


# The order options are added in: a flag several configs share takes its help from the first.
METHOD_OPTIONS: dict[str, ConfigOptions] = {
    "rtn": _options(RTNConfig, GRID),
    "gptq": _options(GPTQConfig, (*GRID, "percdamp", "act_order")),
    "kmeans": _options(GroupKMeansConfig, ("bits", "group_size")),
    "awq": _options(
        AWQConfig,
        (*GRID, "scale_search", "solver", "clip_mode", "gptq_percdamp", "gptq_act_order"),
        scale_search="--awq-scales",
        solver="--awq-solver",
        clip_mode="--awq-clip-mode",
        gptq_percdamp="--percdamp",
        gptq_act_order="--act-order",
    ),
    "magnitude": _options(MagnitudeConfig, ("sparsity", "nm")),
    "wanda": _options(WandaConfig, ("sparsity", "nm")),
    "sparsegpt": _options(SparseGPTConfig, ("sparsity", "nm", "percdamp")),
}
METHOD_CHOICES = tuple(METHOD_OPTIONS)
CALIB_OPTIONS = ConfigOptions(
    CalibConfig,
    only=("n_samples", "seq_len"),
    flags={"n_samples": "--calib-samples", "seq_len": "--calib-seq-len"},
    group="calibration (CalibConfig): awq, gptq, wanda, sparsegpt",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compress`` to the ``slimtorch llm`` subcommands."""
    p = subparsers.add_parser(
        "compress",
        help="quantize (RTN, AWQ, GPTQ, k-means) or prune (magnitude, Wanda, SparseGPT) an LLM",
        description="Compress every linear of MODEL's transformer blocks, calibrating block by "
        "block on a text file (--calib; by default an excerpt of WikiText-2 shipped with "
        "slimtorch), and write the result (GGUF or safetensors) plus a JSON report.",
    )
    add_llm_model_argument(p)
    p.add_argument("--method", required=True, choices=METHOD_CHOICES, help="compression method")
    _add_method_options(p)
    p.add_argument(
        "--calib",
        type=Path,
        default=None,
        help="calibration text for AWQ, GPTQ, Wanda and SparseGPT, UTF-8 (default: the text "
        "shipped with slimtorch, an 85 kB excerpt of WikiText-2's validation split, CC BY-SA "
        "3.0; in-domain text of your own usually calibrates better)",
    )
    CALIB_OPTIONS.add(p)
    _add_output_options(p)
    p.set_defaults(func=_run)


def _add_method_options(p: argparse.ArgumentParser) -> None:
    """Every method's config options; each option's help ends with the methods that read it."""
    for options in METHOD_OPTIONS.values():
        options.add(p)
    for action in p._actions:
        classes = {cls for cls, _ in getattr(action, "config_fields", ())}
        methods = [m for m, o in METHOD_OPTIONS.items() if o.cls in classes]
        if methods:
            action.help = f"{action.help}; --method {', '.join(methods)}"


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output: a .gguf file (weights stored as --type) or .safetensors",
    )
    p.add_argument(
        "--type",
        default=SAVED_TYPE,
        choices=EXPORT_TYPES,
        help=f"GGUF storage of the 2-D weights (default {SAVED_TYPE}: exactly what was "
        "computed, where `llm export` defaults to Q8_0)",
    )
    p.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_config(args: argparse.Namespace) -> Any:
    """The method's config dataclass from the parsed options."""
    return METHOD_OPTIONS[args.method].build(args)


def _save(model, loaded, args: argparse.Namespace) -> None:

    suffix = args.out.suffix.lower()
    if suffix == ".gguf":
        export_gguf(model, args.out, loaded.metadata, ExportConfig(weight_type=args.type))
    elif suffix == ".safetensors":
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_embeddings:
            state.pop("output.weight", None)
        atomic_write_bytes(args.out, save(state, {"config": json.dumps(model.config.to_dict())}))
    else:
        raise ConfigError(f"--out {args.out}: expected a .gguf or .safetensors file")


def _run(args: argparse.Namespace) -> int:

    return_freed_memory()  # before loading: the heap never grows fragmented

    config = build_config(args)
    if args.out.suffix.lower() not in (".gguf", ".safetensors"):
        raise ConfigError(f"--out {args.out}: expected a .gguf or .safetensors file")
    calib = CALIB_OPTIONS.build(args)
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
