"""``slimtorch profile``: the CLI shell around :func:`slimtorch.profile.profile_model`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from slimtorch.cli.options import (
    add_model_options,
    add_threads_option,
    check_input_size,
    int_list,
    model_kwargs,
    parse_shape,
    threads_from_args,
)
from slimtorch.core.size import WeightFormat
from slimtorch.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``profile`` subcommand to ``sub``."""
    p = sub.add_parser(
        "profile",
        help="parameters, size in bits, MACs/FLOPs, memory, latency, energy, roofline",
        description="Profile one model, or two side by side with ratios. MODEL is a zoo name, "
        "a checkpoint folder (or its model.json), or package.module:factory.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="one or two models to profile")
    p.add_argument(
        "--input-shape",
        default=None,
        help="example input shape with batch, e.g. 1,1,8,8 (default: from the model's "
        "in_channels and image_size; required for factories)",
    )
    p.add_argument(
        "--input-dtype",
        default="float32",
        choices=("float32", "int64"),
        help="example input dtype: float32 (uniform [0,1)) or int64 (zeros, e.g. token ids)",
    )
    p.add_argument("--json", type=Path, help="write the full profile as JSON here")
    p.add_argument("--csv", type=Path, help="write the per-layer table as CSV here")
    p.add_argument("--plot", type=Path, help="write a PNG of per-layer MACs, parameters, latency")
    p.add_argument("--roofline-plot", type=Path, help="write a PNG roofline of the layers here")
    p.add_argument("--no-latency", action="store_true", help="skip all timing")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs (default 5)")
    p.add_argument("--runs", type=int, default=30, help="timed runs (default 30)")
    p.add_argument(
        "--batch-sizes",
        type=int_list,
        default=(1, 8, 32, 128),
        help="throughput sweep batch sizes, comma-separated (default 1,8,32,128); "
        "empty string to skip",
    )
    p.add_argument(
        "--no-roofline",
        action="store_true",
        help="skip measuring this machine's bandwidth and peak FLOP/s",
    )
    p.add_argument(
        "--optimizer",
        default="adam",
        help="optimizer assumed for training memory: adam, sgd, sgd-momentum",
    )
    p.add_argument(
        "--weight-bits",
        type=int,
        default=None,
        help="size every *.weight tensor as if stored at this many bits (default: its dtype)",
    )
    p.add_argument(
        "--sparse-layout",
        default="auto",
        choices=("auto", "dense", "csr", "bitmask", "relative"),
        help="how zero weights are stored for the size figure: auto picks the smallest of "
        "dense, csr and bitmask; relative is Deep Compression's gap coding (default auto)",
    )
    p.add_argument(
        "--act-bits",
        type=int,
        default=32,
        help="activation bit width for the energy estimate (default 32)",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing to the terminal")
    add_threads_option(p, "the timings and the machine peaks")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``slimtorch profile``."""
    from slimtorch.profile import ProfileConfig, profile_model
    from slimtorch.profile.output import (
        compare_table,
        print_profile,
        profile_noise_hint,
        wide_console,
    )
    from slimtorch.resolve import example_input, resolve_model

    if len(args.models) > 2:
        raise ConfigError(f"profile: give one model, or two to compare; got {len(args.models)}")
    config = ProfileConfig(
        latency=not args.no_latency,
        warmup=args.warmup,
        runs=args.runs,
        throughput_batch_sizes=tuple(args.batch_sizes),
        roofline=not args.no_roofline,
        optimizer=args.optimizer,
        act_bits=args.act_bits,
        formats=_weight_formats(args),
        threads=threads_from_args(args),
    )
    profiles = []
    for source in args.models:
        resolved = resolve_model(source, **model_kwargs(args))
        shape = parse_shape(args.input_shape) if args.input_shape else None
        if shape is not None:
            check_input_size(shape, args.input_dtype)  # before anything is allocated
        x = example_input(resolved, shape, args.input_dtype)
        check_input_size(tuple(x.shape), args.input_dtype, args.batch_sizes)
        profiles.append(
            profile_model(resolved.model, x, config, name=resolved.label, progress=not args.quiet)
        )
    console = wide_console()
    if not args.quiet:
        for p in profiles:
            print_profile(p, console)
        if len(profiles) == 2:
            console.print(compare_table(*profiles))
        hint = profile_noise_hint(profiles)
        if hint:
            console.print(f"hint: {hint}", markup=False, highlight=False)
    _write_outputs(args, profiles)
    return 0


def _weight_formats(args: argparse.Namespace) -> dict[str, object]:
    if args.weight_bits is None and args.sparse_layout == "auto":
        return {}
    bits = 32 if args.weight_bits is None else args.weight_bits
    if not 1 <= bits <= 32:
        raise ConfigError(f"--weight-bits must be in 1..32, got {bits}")
    return {r".*\.weight": WeightFormat(bits=bits, sparse=args.sparse_layout)}


def _write_outputs(args: argparse.Namespace, profiles: list[Any]) -> None:
    from slimtorch.profile.output import plot_profile, write_csv, write_json

    single = profiles[0] if len(profiles) == 1 else profiles
    if args.json:
        write_json(single, args.json)
    if args.csv:
        write_csv(single, args.csv)
    if args.plot:
        plot_profile(single, args.plot)
    if args.roofline_plot:
        from slimtorch.profile.roofline import plot_roofline, roofline_point

        p = profiles[0]
        if p.machine is None:
            raise ConfigError("--roofline-plot needs the machine peaks; drop --no-roofline")
        points = [
            (lp.name, roofline_point(lp.flops, lp.bytes_moved, p.machine))
            for lp in p.layers
            if lp.intensity is not None
        ]
        plot_roofline(points, p.machine, args.roofline_plot)
