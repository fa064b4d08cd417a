"""``slimtorch prune``: the CLI shell around :func:`slimtorch.prune.engine.prune_model`.

The pruning options are generated from :class:`~slimtorch.prune.config.PruneConfig` and, with
``--surgery``, :class:`~slimtorch.prune.physical.SurgeryConfig` (``--sparsity``,
``--finetune-epochs`` and ``--lr`` feed both); ``--layer``, ``--seed`` and the scan options
are the command's own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from slimtorch.accuracy_check import accuracy_warning, prune_suggestions
from slimtorch.checkpoint import load_checkpoint, save_checkpoint
from slimtorch.cli.fields import ConfigOptions, Custom
from slimtorch.cli.options import (
    add_checkpoint_out_options,
    add_recorded_data_options,
    add_threads_option,
    check_out_dir,
    checked_by_config,
    threads_from_args,
)
from slimtorch.core.granularity import format_granularity
from slimtorch.data import load_data, make_loaders, recorded_split
from slimtorch.data.record import check_given_data, data_record
from slimtorch.errors import ConfigError
from slimtorch.io import atomic_write_text
from slimtorch.profile.noise import torch_threads
from slimtorch.prune.config import ALLOCATIONS, CRITERIA, LR_SCHEDULERS, SCHEDULES, PruneConfig
from slimtorch.prune.engine import prune_model
from slimtorch.prune.physical import IMPORTANCES, SurgeryConfig, surgery_prune
from slimtorch.prune.report import report_table, write_report_json
from slimtorch.prune.sensitivity import plot_sensitivity, scan_and_propose
from slimtorch.prune.surgery import pruned_spec

DEFAULT_RATIOS = "0.25,0.5,0.7,0.8,0.9,0.95"

# Names and granularities reach the config as typed, so a wrong one is the config's one-line
# error (exit 2), like a wrong number.
PRUNE_OPTIONS = ConfigOptions(
    PruneConfig,
    skip=("layers", "seed"),  # --layer NAME=S (repeatable) and --seed (default: the checkpoint's)
    custom={
        "granularity": Custom(parse=str, text=format_granularity, metavar="GRANULARITY"),
        "criterion": checked_by_config(CRITERIA),
        "allocation": checked_by_config(ALLOCATIONS),
        "schedule": checked_by_config(SCHEDULES),
        "scheduler": checked_by_config(LR_SCHEDULERS),
    },
    group="pruning (PruneConfig)",
)
SURGERY_OPTIONS = ConfigOptions(
    SurgeryConfig,
    skip=("seed",),
    flags={"ratio": "--sparsity"},
    custom={"importance": checked_by_config(IMPORTANCES)},
    group="channel surgery with --surgery (SurgeryConfig; --sparsity is its ratio)",
)


def _layer_override(text: str) -> tuple[str, float]:
    name, _, value = text.rpartition("=")
    try:
        ratio = float(value)
    except ValueError:
        ratio = None
    if not name or ratio is None:
        raise argparse.ArgumentTypeError(f"expected NAME_OR_REGEX=SPARSITY, got {text!r}")
    return name, ratio


def _ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ratios, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``prune`` subcommand to ``sub``."""
    p = sub.add_parser(
        "prune",
        help="prune a checkpoint (masks, criteria, schedules, sensitivity) and fine-tune it",
        description="Prune a trained checkpoint, fine-tune with the masks kept, and write the "
        "pruned checkpoint (zeros baked in) plus prune_report.json to --out.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint folder (or its model.json)")
    add_checkpoint_out_options(p)
    pruning = p.add_argument_group(PRUNE_OPTIONS.group)  # PRUNE_OPTIONS.add fills it
    PRUNE_OPTIONS.add(p)
    pruning.add_argument(
        "--layer",
        action="append",
        type=_layer_override,
        default=[],
        metavar="NAME=S",
        help="per-layer sparsity by qualified name or regex (repeatable; PruneConfig.layers)",
    )
    add_recorded_data_options(p)
    _add_sensitivity_options(p)
    p.add_argument(
        "--surgery",
        action="store_true",
        help="physically remove channels (a smaller dense model, traced with torch.fx): "
        "--sparsity is the fraction of channels removed from every prunable channel group",
    )
    SURGERY_OPTIONS.add(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars or table")
    add_threads_option(p, "fine-tuning and evaluation")
    p.set_defaults(func=run)


def _add_sensitivity_options(p: argparse.ArgumentParser) -> None:
    """``--sensitivity`` and the scan's ``--ratios`` / ``--target``."""
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="scan each layer alone at --ratios, plot sensitivity.png, and prune with the "
        "per-layer ratios that reach --sparsity overall (of parameters, or MACs with --target "
        "macs) with the least predicted loss",
    )
    p.add_argument(
        "--ratios",
        type=_ratios,
        default=_ratios(DEFAULT_RATIOS),
        help=f"with --sensitivity: ratios to scan (default {DEFAULT_RATIOS})",
    )
    p.add_argument(
        "--target",
        choices=("params", "macs"),
        default="params",
        help="with --sensitivity: --sparsity counts parameters or MACs (default params)",
    )


def config_from_args(args: argparse.Namespace, seed: int) -> PruneConfig:
    """The ``PruneConfig`` the options describe (with ``--sensitivity``, sparsity 0: the scan's
    per-layer proposal is passed to ``prune_model`` instead)."""
    sparsity = {"sparsity": 0.0} if args.sensitivity else {}
    return PRUNE_OPTIONS.build(args, layers=dict(args.layer), seed=seed, **sparsity)


def surgery_config_from_args(args: argparse.Namespace, seed: int) -> SurgeryConfig:
    """The ``SurgeryConfig`` the options describe (``--surgery``)."""
    return SURGERY_OPTIONS.build(args, seed=seed)


def run(args: argparse.Namespace) -> int:
    """Run ``slimtorch prune`` with ``--threads`` torch threads (recorded in the report)."""
    with torch_threads(threads_from_args(args)):
        return _prune(args)


def _prune(args: argparse.Namespace) -> int:

    check_out_dir(args.out, args.overwrite)
    model, spec, metrics = load_checkpoint(args.checkpoint)
    data, seed = recorded_split(metrics, str(args.checkpoint), args.data, args.seed)
    if args.surgery:
        return _run_surgery(args, model, spec, data, seed, metrics)
    config = config_from_args(args, seed)
    splits = load_data(data, seed=seed)
    check_given_data(args.data, splits, metrics, spec.kwargs, str(args.checkpoint))
    train, val, test = make_loaders(splits, args.batch_size, seed=seed)
    sparsities = None
    if args.sensitivity:
        sparsities = _sensitivity(model, config, args, train, val)
    result = prune_model(model, config, train, val, test, not args.quiet, sparsities)
    report = result.report
    final = report.accuracy_finetuned or report.accuracy_pruned
    tips = prune_suggestions(config, args.sensitivity)
    warning = accuracy_warning("prune", report.accuracy_before, final, splits.num_classes, tips)
    summary = {**data_record(data, seed, splits), "pruned_from": str(args.checkpoint)}
    summary.update(test_accuracy=report.accuracy_finetuned or report.accuracy_pruned)
    summary.update(sparsity=report.sparsity, prune_config=config.to_dict())
    save_checkpoint(args.out, model, spec, summary, overwrite=args.overwrite)
    write_report_json(report, Path(args.out) / "prune_report.json", _warnings_json(warning))
    if not args.quiet:
        Console(width=120).print(report_table(report))
    _print_warning(warning)
    print(f"pruned checkpoint {args.out} (sparsity {report.sparsity:.1%})")
    return 0


def _warnings_json(warning: Any) -> dict[str, Any]:
    """``{"warnings": [...], "threads": n}`` for the JSON report (no warnings: accuracy survived;
    ``threads``: torch threads the fine-tuning ran with)."""
    warnings = [] if warning is None else [warning.to_dict()]
    return {"warnings": warnings, "threads": torch.get_num_threads()}


def _print_warning(warning: Any) -> None:
    if warning is not None:
        print(f"warning: {warning.message()}")


def _sensitivity(model, config, args, train, val) -> dict[str, float]:
    """Scan, plot, propose; writes sensitivity.json and sensitivity.png to --out."""

    if val is None:
        raise ConfigError("--sensitivity needs a validation split to score the scan")
    result = scan_and_propose(
        model, config, train, val, args.ratios, args.target, args.sparsity, not args.quiet
    )
    out = Path(args.out)
    plot_sensitivity(result["curves"], out / "sensitivity.png", result["baseline"])
    atomic_write_text(out / "sensitivity.json", json.dumps(result, indent=2) + "\n")
    return result["proposal"]


def _run_surgery(args, model: Any, spec: Any, data: str, seed: int, metrics: dict) -> int:
    """``--surgery``: remove channels for real, fine-tune, save a reloadable checkpoint."""

    config = surgery_config_from_args(args, seed)
    splits = load_data(data, seed=seed)
    check_given_data(args.data, splits, metrics, spec.kwargs, str(args.checkpoint))
    loaders = make_loaders(splits, args.batch_size, seed=seed)
    example = splits.train[0][0].unsqueeze(0)
    small, report = surgery_prune(model, example, config, loaders, progress=not args.quiet)
    final = report.accuracy_finetuned if report.accuracy_finetuned is not None else None
    metrics = {
        **data_record(data, seed, splits),
        "pruned_from": str(args.checkpoint),
        "test_accuracy": final if final is not None else report.accuracy_pruned,
        "surgery": {"ratio": config.ratio, "importance": config.importance},
    }
    save_checkpoint(args.out, small, pruned_spec(spec, small), metrics, overwrite=args.overwrite)
    tips = prune_suggestions(config, surgery=True)
    after = final if final is not None else report.accuracy_pruned
    warning = accuracy_warning("surgery", report.accuracy_before, after, splits.num_classes, tips)
    payload = {k: getattr(report, k) for k in report.__dataclass_fields__}
    payload.update(_warnings_json(warning))
    atomic_write_text(Path(args.out) / "prune_report.json", json.dumps(payload, indent=2) + "\n")
    if not args.quiet:
        _print_surgery_table(report, config.ratio)
    ft = "-" if final is None else f"{final:.4f}"
    print(
        f"pruned checkpoint {args.out}: params {report.params_before:,} -> "
        f"{report.params_after:,}, MACs {report.macs_before:,} -> {report.macs_after:,}, "
        f"test accuracy {report.accuracy_before:.4f} -> {report.accuracy_pruned:.4f} "
        f"(fine-tuned {ft})"
    )
    _print_warning(warning)
    return 0


def _print_surgery_table(report: Any, ratio: float) -> None:
    """Each layer's weight shape before and after channel surgery."""

    t = Table(title=f"channel surgery: {ratio:.0%} of channels removed per group")
    for col in ("layer", "weight before", "weight after"):
        t.add_column(col)
    for row in report.layers:
        t.add_row(*row)
    Console(width=120).print(t)
