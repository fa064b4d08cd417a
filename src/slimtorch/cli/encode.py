"""``slimtorch decode`` and ``slimtorch inspect``: read a compressed model file.

Example:
    >>> import argparse
    >>> sub = argparse.ArgumentParser().add_subparsers()
    >>> register(sub)
    >>> sorted(sub.choices)
    ['decode', 'inspect']
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from slimtorch.checkpoint import save_checkpoint
from slimtorch.cli.options import add_checkpoint_out_options, check_out_dir
from slimtorch.encode.codecs import Codec
from slimtorch.encode.container import load_compressed, read_compressed


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``decode`` and ``inspect`` subcommands."""
    p = subparsers.add_parser(
        "decode",
        help="decode a compressed model file into an ordinary checkpoint",
        description="Decode FILE (written by save_compressed / slimtorch compress) into a "
        "checkpoint folder (model.safetensors + model.json) whose weights are exactly the "
        "compressed ones.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the compressed model file")
    add_checkpoint_out_options(p)
    p.set_defaults(func=_cmd_decode)
    q = subparsers.add_parser(
        "inspect",
        help="list the tensors, codecs and sizes inside a compressed model file",
        description="Print the header of FILE: the model spec and, per tensor, its shape, "
        "codec, stored bytes and bits per weight. Every tensor is decoded and checked.",
    )
    q.add_argument("file", type=Path, metavar="FILE", help="the compressed model file")
    q.add_argument("--json", action="store_true", help="print the raw JSON header instead")
    q.set_defaults(func=_cmd_inspect)


def _cmd_decode(args: argparse.Namespace) -> int:

    check_out_dir(args.out, args.overwrite)
    model, spec, metadata = load_compressed(args.file)
    metrics = {"decoded_from": str(args.file), **metadata}
    path = save_checkpoint(args.out, model, spec, metrics, overwrite=args.overwrite)
    print(f"decoded {args.file} ({spec.name}) -> {path}")
    return 0


def _rows(header: dict[str, Any]) -> list[tuple[str, ...]]:

    rows = []
    for e in header["tensors"]:
        nbytes = sum(s["nbytes"] for s in e["streams"])
        numel = math.prod(e["shape"]) or 1
        extra = f" ({e['index_bits']}-bit gaps)" if "index_bits" in e else ""
        rows.append(
            (
                e["name"],
                "x".join(map(str, e["shape"])),
                e["dtype"],
                Codec(e["codec"]).name.lower() + extra,
                f"{nbytes:,}",
                f"{8 * nbytes / numel:.2f}",
            )
        )
    return rows


def _cmd_inspect(args: argparse.Namespace) -> int:

    file = read_compressed(args.file)  # decodes and checks everything
    if args.json:
        print(json.dumps(file.header, indent=2))
        return 0
    table = Table(title=f"{args.file}: {file.spec.name}")
    for col in ("tensor", "shape", "dtype", "codec", "bytes", "bits/weight"):
        table.add_column(col, justify="right" if col in ("bytes", "bits/weight") else "left")
    for row in _rows(file.header):
        table.add_row(*row)
    console = Console(width=120)
    console.print(table)
    size = args.file.stat().st_size
    dense = sum(t.numel() * t.element_size() for t in file.tensors.values())
    console.print(f"file {size:,} bytes; decoded tensors {dense:,} bytes ({dense / size:.1f}x)")
    return 0
