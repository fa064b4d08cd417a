"""Command-line options and checks shared by the subcommands (below the root CLI).

The root ``slimtorch.cli`` builds the parser from the subcommand modules; they take their
common options from here, never from the root.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from slimtorch.checkpoint import HEADER_FILE, WEIGHTS_FILE
from slimtorch.cli.fields import Custom
from slimtorch.errors import ConfigError


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse an input shape like ``1,1,8,8`` or ``1x3x32x32``.

    Args:
        text: comma- or x-separated positive integers.

    Returns:
        The shape as a tuple.

    Example:
        >>> parse_shape("1x3x32x32")
        (1, 3, 32, 32)
    """
    parts = re.split(r"[,x]", text.strip())
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(
            f"--input-shape: expected comma-separated positive integers like 1,1,8,8, got {text!r}"
        ) from None
    if not shape or any(d < 1 for d in shape):
        raise ConfigError(
            f"--input-shape: every dimension must be a positive integer, got {text!r}"
        )
    return shape


MAX_INPUT_ELEMENTS = 2**31 - 1  # many torch CPU kernels index a tensor with 32-bit integers
INPUT_MEMORY_SHARE = 4  # a forward pass holds several tensors as large as its input
DTYPE_BYTES = {"float32": 4, "int64": 8}


def check_input_size(
    shape: tuple[int, ...], dtype: str = "float32", batch_sizes: Sequence[int] = ()
) -> None:
    """Refuse an example input (or a throughput batch of it) too large to allocate.

    Checked before anything is allocated: at most ``MAX_INPUT_ELEMENTS`` elements, and
    ``INPUT_MEMORY_SHARE`` times its bytes within the memory available now.

    Args:
        shape: the input shape, batch first.
        dtype: ``float32`` or ``int64``.
        batch_sizes: throughput batch sizes the input's first sample is repeated to.

    Raises:
        ConfigError: naming ``--input-shape`` or ``--batch-sizes``.

    Example:
        >>> check_input_size((1, 1, 8, 8), "float32", (1, 128))
        >>> check_input_size((1, 1, 99999999, 99999999))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        slimtorch.errors.ConfigError: --input-shape 1x1x99999999x99999999: ... elements, ...
    """
    per_sample = math.prod(shape[1:])
    for option, batch in (("--input-shape", shape[0]), ("--batch-sizes", max(batch_sizes or [1]))):
        elements = per_sample * batch
        text = "x".join(map(str, shape)) if option == "--input-shape" else f"{batch} samples"
        if elements > MAX_INPUT_ELEMENTS:
            raise ConfigError(
                f"{option} {text}: {elements:,} elements, more than the {MAX_INPUT_ELEMENTS:,} "
                "one input may hold; ask for less"
            )
        need = elements * DTYPE_BYTES.get(dtype, 8) * INPUT_MEMORY_SHARE
        available = available_memory()
        if available is not None and need > available:
            raise ConfigError(
                f"{option} {text}: needs about {need / 2**30:.1f} GiB, more than the "
                f"{available / 2**30:.1f} GiB of memory available; ask for less"
            )


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    return values


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model construction (zoo names and factories)")
    g.add_argument("--num-classes", type=int, default=None, help="output classes (default 10)")
    g.add_argument("--in-channels", type=int, default=None, help="input channels (default 1)")
    g.add_argument("--image-size", type=int, default=None, help="input height/width (default 8)")
    g.add_argument(
        "--norm", default=None, help="normalization: batch, layer, instance, group, weight or none"
    )
    g.add_argument(
        "--act",
        default=None,
        help="activation: sigmoid, relu, leakyrelu, relu6, silu (swish) or hardswish",
    )


def model_kwargs(args: argparse.Namespace) -> dict[str, object]:
    keys = ("num_classes", "in_channels", "image_size", "norm", "act")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a bad --out before any work is done."""

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; expected a folder for the checkpoint")
    existing = [n for n in (WEIGHTS_FILE, HEADER_FILE) if (out / n).exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"--out {out}: already holds a checkpoint ({', '.join(existing)}); "
            "pass --overwrite or choose another folder"
        )


def add_threads_option(p: argparse.ArgumentParser, what: str = "the timed work") -> None:
    """Add ``--threads N`` (torch intra-op threads for ``what``; default torch's setting)."""
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help=f"torch threads for {what}, recorded with every figure (default: torch's own "
        "setting); figures measured on a busy machine are flagged noisy, and 1 thread is "
        "often the steadiest there",
    )


def threads_from_args(args: argparse.Namespace) -> int | None:
    """``--threads``, checked: None (torch's setting) or a positive count."""
    n = args.threads
    if n is not None and n < 1:
        raise ConfigError(f"--threads: expected >= 1, got {n}")
    return n


SPLITS = ("train", "val", "test")


def add_batch_size_option(p: argparse.ArgumentParser, default: int = 64) -> None:
    """Add ``--batch-size N`` (samples per loader batch; no config holds it)."""
    p.add_argument(
        "--batch-size", type=int, default=default, help=f"batch size (default {default})"
    )


def add_recorded_data_options(
    p: argparse.ArgumentParser, owner: str = "the checkpoint", batch_size: int | None = 64
) -> None:
    """Add ``--data`` and ``--seed`` (default: the ones ``owner`` records, so its test split
    stays held out) and ``--batch-size`` (not when ``batch_size`` is None: the command's config
    has one): the data block of commands that start from a model.
    """
    p.add_argument(
        "--data",
        default=None,
        help=f"data source, as for train (default: the one {owner} was trained on)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"seed of the data split, and of any training (default: the one {owner} was "
        "trained with, so its test split stays held out)",
    )
    if batch_size is not None:
        add_batch_size_option(p, batch_size)


def add_checkpoint_out_options(p: argparse.ArgumentParser) -> None:
    """Add ``--out FOLDER`` (required; a checkpoint is written there) and ``--overwrite``
    (checked with :func:`check_out_dir`)."""
    p.add_argument(
        "--out", required=True, type=Path, metavar="FOLDER", help="output checkpoint folder"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a checkpoint already in --out (default: refuse)",
    )


def add_split_option(p: argparse.ArgumentParser, what: str = "which split to score") -> None:
    """Add ``--split {train,val,test}`` (default test)."""
    p.add_argument("--split", default="test", choices=SPLITS, help=f"{what} (default test)")


LLM_MODEL_HELP = (
    "a .gguf file or a Hugging Face folder (default: the shipped SmolLM2-135M-Instruct)"
)


def add_llm_model_argument(p: argparse.ArgumentParser) -> None:
    """Add the optional ``model`` positional of the ``slimtorch llm`` subcommands."""
    p.add_argument("model", nargs="?", default=None, help=LLM_MODEL_HELP)


def checked_by_config(choices: Sequence[str]) -> Custom:
    """A generated option naming one of ``choices`` (listed in ``--help``) that the config
    checks: a wrong name is the config's one-line error (exit 2), not argparse's usage error.

    Example:
        >>> checked_by_config(("l1", "l2")).parse("l3")  # refused later, by the config
        'l3'
    """
    return Custom(parse=str, choices=tuple(choices))
