"""``slimtorch profile``: the CLI shell around :func:`slimtorch.profile.profile_model`.

What to measure is generated from :class:`~slimtorch.profile.report.ProfileConfig`
(``--no-latency``, ``--runs``, ``--batch-sizes`` ...); ``--sparse-layout`` from
:class:`~slimtorch.core.size.WeightFormat`; inputs and outputs are the command's own.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from slimtorch.cli.fields import ConfigOptions
from slimtorch.cli.options import (
    add_model_options,
    add_threads_option,
    check_input_size,
    checked_by_config,
    model_kwargs,
    parse_shape,
    threads_from_args,
)
from slimtorch.core.size import WeightFormat
from slimtorch.errors import ConfigError
from slimtorch.profile import profile_model
from slimtorch.profile.memory import OPTIMIZER_STATES
from slimtorch.profile.output import (
    compare_table,
    plot_profile,
    print_profile,
    profile_noise_hint,
    wide_console,
    write_csv,
    write_json,
)
from slimtorch.profile.report import ProfileConfig
from slimtorch.profile.roofline import plot_roofline, roofline_point
from slimtorch.resolve import example_input, resolve_model

MAX_WEIGHT_BITS = 32  # the widest float the size figure models


PROFILE_OPTIONS = ConfigOptions(
    ProfileConfig,
    skip=("formats", "threads"),  # from --weight-bits/--sparse-layout; --threads is shared
    flags={"throughput_batch_sizes": "--batch-sizes"},
    custom={"optimizer": checked_by_config(OPTIMIZER_STATES)},
    group="what to measure (ProfileConfig)",
)
WEIGHT_FORMAT_OPTIONS = ConfigOptions(
    WeightFormat,
    only=("sparse",),
    flags={"sparse": "--sparse-layout"},
    group="weight storage for the size figure (WeightFormat of every *.weight)",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``profile`` subcommand to ``sub``."""
    p = sub.add_parser(
        "profile",
        help="parameters, size in bits, MACs/FLOPs, memory, latency, energy, roofline",
        description="Profile one model, or two side by side with ratios. MODEL is a zoo name, "
        "a checkpoint folder (or its model.json), or package.module:factory.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="one or two models to profile")
    _add_input_options(p)
    p.add_argument("--json", type=Path, help="write the full profile as JSON here")
    p.add_argument("--csv", type=Path, help="write the per-layer table as CSV here")
    p.add_argument("--plot", type=Path, help="write a PNG of per-layer MACs, parameters, latency")
    p.add_argument("--roofline-plot", type=Path, help="write a PNG roofline of the layers here")
    PROFILE_OPTIONS.add(p)
    _add_weight_format_options(p)
    p.add_argument("--quiet", action="store_true", help="print nothing to the terminal")
    add_threads_option(p, "the timings and the machine peaks")
    add_model_options(p)
    p.set_defaults(func=run)


def _add_input_options(p: argparse.ArgumentParser) -> None:
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


def _add_weight_format_options(p: argparse.ArgumentParser) -> None:
    """``--weight-bits`` (plain: its default is each tensor's own dtype, not a WeightFormat
    field's default) and ``--sparse-layout`` (WeightFormat.sparse), in one group."""
    g = p.add_argument_group(WEIGHT_FORMAT_OPTIONS.group)  # WEIGHT_FORMAT_OPTIONS.add fills it
    g.add_argument(
        "--weight-bits",
        type=int,
        default=None,
        help="size every *.weight tensor as if stored at this many bits (default: its dtype)",
    )
    WEIGHT_FORMAT_OPTIONS.add(p)


def profile_config(args: argparse.Namespace) -> ProfileConfig:
    """The ``ProfileConfig`` the options describe."""
    return PROFILE_OPTIONS.build(
        args, formats=_weight_formats(args), threads=threads_from_args(args)
    )


def run(args: argparse.Namespace) -> int:
    """Run ``slimtorch profile``."""

    if len(args.models) > 2:
        raise ConfigError(f"profile: give one model, or two to compare; got {len(args.models)}")
    config = profile_config(args)
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


def _weight_formats(args: argparse.Namespace) -> dict[str, WeightFormat]:
    """The format of every ``*.weight`` tensor from ``--weight-bits`` / ``--sparse-layout``;
    none when neither is given (every tensor sized at its own dtype, smallest layout)."""
    if args.weight_bits is None:
        fmt = WEIGHT_FORMAT_OPTIONS.build(args)
        return {} if fmt == WeightFormat() else {r".*\.weight": fmt}
    if not 1 <= args.weight_bits <= MAX_WEIGHT_BITS:
        raise ConfigError(f"--weight-bits must be in 1..{MAX_WEIGHT_BITS}, got {args.weight_bits}")
    return {r".*\.weight": WEIGHT_FORMAT_OPTIONS.build(args, bits=args.weight_bits)}


def _write_outputs(args: argparse.Namespace, profiles: list[Any]) -> None:

    single = profiles[0] if len(profiles) == 1 else profiles
    if args.json:
        write_json(single, args.json)
    if args.csv:
        write_csv(single, args.csv)
    if args.plot:
        plot_profile(single, args.plot)
    if args.roofline_plot:
        p = profiles[0]
        if p.machine is None:
            raise ConfigError("--roofline-plot needs the machine peaks; drop --no-roofline")
        points = [
            (lp.name, roofline_point(lp.flops, lp.bytes_moved, p.machine))
            for lp in p.layers
            if lp.intensity is not None
        ]
        plot_roofline(points, p.machine, args.roofline_plot)
