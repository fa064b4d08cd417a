"""``slimtorch prune``: the CLI shell around :func:`slimtorch.prune.engine.prune_model`.

Every option maps to a :class:`~slimtorch.prune.config.PruneConfig` field of the same name.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from slimtorch.cli.options import add_threads_option, threads_from_args
from slimtorch.errors import ConfigError
from slimtorch.profile.noise import torch_threads

DEFAULT_RATIOS = "0.25,0.5,0.7,0.8,0.9,0.95"


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
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--granularity",
        default="element",
        help="element, N:M (e.g. 2:4, along the input dim), vector[:AXIS], kernel, "
        "channel (= filter) or input-channel (default element)",
    )
    p.add_argument(
        "--criterion",
        default="l1",
        help="l1, l2, linf, random, bn_gamma, apoz, taylor, obd_fisher, obd_hutchinson, obs, "
        "regression_lasso, regression_greedy (default l1)",
    )
    p.add_argument(
        "--sparsity",
        type=float,
        default=0.5,
        help="fraction of each layer's groups to remove, in [0, 1); with --sensitivity, the "
        "overall fraction of parameters (or MACs, --target macs) to remove (default 0.5)",
    )
    p.add_argument(
        "--allocation", default="uniform", help="uniform or global threshold (default uniform)"
    )
    p.add_argument(
        "--layer",
        action="append",
        type=_layer_override,
        default=[],
        metavar="NAME=S",
        help="per-layer sparsity by qualified name or regex (repeatable)",
    )
    p.add_argument(
        "--exclude", action="append", default=[], metavar="REGEX", help="never prune these layers"
    )
    p.add_argument(
        "--schedule", default="oneshot", help="oneshot, iterative or gradual (default oneshot)"
    )
    p.add_argument(
        "--iterations", type=int, default=3, help="iterative/gradual prune steps (default 3)"
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=0,
        help="fine-tuning epochs (per round when iterative; total when gradual) (default 0)",
    )
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (Adam)")
    p.add_argument(
        "--scheduler",
        choices=("none", "cosine"),
        default="none",
        help="lr schedule of each fine-tuning run (cosine: annealed to 0) (default none)",
    )
    p.add_argument("--calib-batches", type=int, default=8, help="calibration batches (default 8)")
    p.add_argument("--data", default=None, help="data (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the checkpoint's)")
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="scan each layer alone at --ratios, plot sensitivity.png, and prune with the "
        "per-layer ratios that reach --sparsity overall with the least predicted loss",
    )
    p.add_argument("--ratios", type=_ratios, default=_ratios(DEFAULT_RATIOS), help="ratios to scan")
    p.add_argument(
        "--target",
        choices=("params", "macs"),
        default="params",
        help="with --sensitivity: --sparsity counts parameters or MACs (default params)",
    )
    p.add_argument(
        "--surgery",
        action="store_true",
        help="physically remove channels (a smaller dense model, traced with torch.fx): "
        "--sparsity is the fraction of channels removed from every prunable channel group",
    )
    p.add_argument(
        "--importance",
        default="l1",
        choices=("l1", "l2", "bn"),
        help="with --surgery: rank channels by filter L1/L2 norm or BatchNorm |gamma| (default l1)",
    )
    p.add_argument(
        "--round-to",
        type=int,
        default=1,
        help="with --surgery: round kept channel counts up to a multiple of this (default 1)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars or table")
    add_threads_option(p, "fine-tuning and evaluation")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace, seed: int) -> Any:
    """The ``PruneConfig`` the options describe."""
    from slimtorch.prune.config import PruneConfig

    return PruneConfig(
        granularity=args.granularity,
        criterion=args.criterion,
        sparsity=0.0 if args.sensitivity else args.sparsity,
        allocation=args.allocation,
        layers=dict(args.layer),
        exclude=tuple(args.exclude),
        schedule=args.schedule,
        iterations=args.iterations,
        finetune_epochs=args.finetune_epochs,
        lr=args.lr,
        scheduler=args.scheduler,
        calib_batches=args.calib_batches,
        seed=seed,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``slimtorch prune`` with ``--threads`` torch threads (recorded in the report)."""
    with torch_threads(threads_from_args(args)):
        return _prune(args)


def _prune(args: argparse.Namespace) -> int:
    from rich.console import Console

    from slimtorch.accuracy_check import accuracy_warning, prune_suggestions
    from slimtorch.checkpoint import load_checkpoint, save_checkpoint
    from slimtorch.data import load_data, make_loaders, recorded_split
    from slimtorch.data.record import check_given_data, data_record
    from slimtorch.prune.engine import prune_model
    from slimtorch.prune.report import report_table, write_report_json

    _check_out(args.out, args.overwrite)
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


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if (out / "model.json").exists() and not overwrite:
        raise ConfigError(f"--out {out}: already holds a checkpoint; pass --overwrite")


def _sensitivity(model, config, args, train, val) -> dict[str, float]:
    """Scan, plot, propose; writes sensitivity.json and sensitivity.png to --out."""
    import json

    from slimtorch.io import atomic_write_text
    from slimtorch.prune.sensitivity import plot_sensitivity, scan_and_propose

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
    import json

    from rich.console import Console
    from rich.table import Table

    from slimtorch.accuracy_check import accuracy_warning, prune_suggestions
    from slimtorch.checkpoint import save_checkpoint
    from slimtorch.data import load_data, make_loaders
    from slimtorch.data.record import check_given_data, data_record
    from slimtorch.io import atomic_write_text
    from slimtorch.prune.physical import SurgeryConfig, surgery_prune
    from slimtorch.prune.surgery import pruned_spec

    config = SurgeryConfig(
        ratio=args.sparsity,
        importance=args.importance,
        round_to=args.round_to,
        finetune_epochs=args.finetune_epochs,
        lr=args.lr,
        seed=seed,
    )
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
        t = Table(title=f"channel surgery: {config.ratio:.0%} of channels removed per group")
        for col in ("layer", "weight before", "weight after"):
            t.add_column(col)
        for row in report.layers:
            t.add_row(*row)
        Console(width=120).print(t)
    ft = "-" if final is None else f"{final:.4f}"
    print(
        f"pruned checkpoint {args.out}: params {report.params_before:,} -> "
        f"{report.params_after:,}, MACs {report.macs_before:,} -> {report.macs_after:,}, "
        f"test accuracy {report.accuracy_before:.4f} -> {report.accuracy_pruned:.4f} "
        f"(fine-tuned {ft})"
    )
    _print_warning(warning)
    return 0
