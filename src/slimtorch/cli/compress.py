"""``slimtorch compress``: the options of the main job and the call to
:func:`slimtorch.compress.job.compress`; the job itself lives in :mod:`slimtorch.compress.job`.

With no arguments it compresses LeNet-300-100 on the built-in digits with the ``default``
recipe into ``./slimtorch-out/``.

Example:
    >>> import argparse
    >>> sub = argparse.ArgumentParser().add_subparsers()
    >>> register(sub)
    >>> "compress" in sub.choices
    True
"""

from __future__ import annotations

import argparse
from pathlib import Path

from slimtorch.cli.options import add_threads_option, threads_from_args
from slimtorch.compress.job import DEFAULT_OUT, CompressOutcome, compress
from slimtorch.compress.report import stage_table
from slimtorch.errors import ConfigError
from slimtorch.profile.noise import noise_hint, threads_text
from slimtorch.profile.output import wide_console


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compress`` subcommand."""
    p = subparsers.add_parser(
        "compress",
        help="Deep Compression end to end: prune, quantize, Huffman-encode, decode, report",
        description="Run a compression recipe (TOML) on a trained model: train the baseline "
        "(or reuse the one cached under --out), run every stage with its measurements, write "
        "the compressed file, decode it back, re-evaluate it and report.",
    )
    p.add_argument(
        "--recipe",
        default="default",
        help="a recipe TOML file or a shipped recipe: default, lenet300-paper, lenet5-paper "
        "(default: default)",
    )
    p.add_argument(
        "--model", default=None, help="zoo name or checkpoint folder (default: recipe's)"
    )
    p.add_argument(
        "--data", default=None, help="data source, e.g. digits, digits:28 (default: recipe's)"
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default ./slimtorch-out)"
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="baseline training epochs (default: recipe's)"
    )
    p.add_argument(
        "--stage-epochs",
        type=int,
        default=None,
        help="cap every stage's fine-tuning epochs at this many (quick runs)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed (default: recipe's)")
    p.add_argument("--retrain", action="store_true", help="ignore a cached baseline; train again")
    p.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    add_threads_option(p, "each stage's latency figure")
    p.set_defaults(func=_cmd_compress)


def _cmd_compress(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out}: is a file; expected a folder")
    for name in ("epochs", "stage_epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {value}")
    outcome = compress(
        args.recipe,
        model=args.model,
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        stage_epochs=args.stage_epochs,
        seed=args.seed,
        retrain=args.retrain,
        progress=not args.quiet,
        threads=threads_from_args(args),
    )
    _print_outcome(outcome, args.quiet)
    print(f"wrote {args.out}/ ({', '.join(p.name for p in outcome.paths)})")
    return 0


def _print_outcome(outcome: CompressOutcome, quiet: bool) -> None:
    """The stage table (or, with ``quiet``, only the warnings) and the one-line verdict."""
    s = outcome.summary
    if not quiet:
        console = wide_console()
        title = (
            f"{s['model']} on {s['data']}: {s['recipe']}, latency on {threads_text(s['threads'])}"
        )
        console.print(stage_table(outcome.result.records, title, s["warnings"]))
        hint = noise_hint([r.noise for r in outcome.result.records])
        if hint:
            console.print(f"hint: {hint}", markup=False, highlight=False)
    elif s["warnings"]:
        print("\n".join(f"warning: {w['message']}" for w in s["warnings"]))
    if "ratio" in s:
        print(
            f"compressed {s['original_bytes']:,} fp32 bytes -> {s['file_bytes']:,} bytes "
            f"({s['ratio']:.1f}x); test accuracy {s['baseline_test_accuracy']:.4f} -> "
            f"{s['decoded_test_accuracy']:.4f} decoded ({s['accuracy_change_points']:+.2f} "
            f"points); decoded weights bit-exact: {s['bit_exact']}"
        )
