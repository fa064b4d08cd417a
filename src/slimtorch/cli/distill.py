"""``slimtorch distill``: train a student model from a trained teacher checkpoint.

Example:
    >>> import argparse
    >>> sub = argparse.ArgumentParser().add_subparsers()
    >>> register(sub)
    >>> sorted(sub.choices)
    ['distill']
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from slimtorch.checkpoint import load_checkpoint, save_checkpoint
from slimtorch.cli.fields import ConfigOptions
from slimtorch.cli.options import (
    add_checkpoint_out_options,
    add_recorded_data_options,
    check_out_dir,
)
from slimtorch.data import load_data, make_loaders, recorded_split
from slimtorch.data.record import check_given_data, data_record
from slimtorch.distill.distill import DistillConfig, distill
from slimtorch.models import ModelSpec, create_model
from slimtorch.train import FitConfig, evaluate


def _pair(text: str) -> tuple[str, str]:
    student, sep, teacher = text.partition(":")
    if not sep or not student or not teacher:
        raise argparse.ArgumentTypeError(f"expected STUDENT_LAYER:TEACHER_LAYER, got {text!r}")
    return student, teacher


def _kv(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a plain string


FIT_OPTIONS = ConfigOptions(
    FitConfig,
    only=("epochs", "lr", "optimizer", "momentum", "weight_decay", "scheduler"),
    group="student training (FitConfig; seeded with --seed)",
)
DISTILL_OPTIONS = ConfigOptions(
    DistillConfig,
    only=("temperature", "alpha", "hint_weight", "attention_weight", "adapter_lr"),
    group="distillation objective (DistillConfig)",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``distill`` subcommand."""
    p = subparsers.add_parser(
        "distill",
        help="train a (smaller) student from a trained teacher checkpoint",
        description="Knowledge distillation: the student learns from the teacher's soft "
        "targets at temperature T (Hinton et al. 2015), mixed with the labels, optionally "
        "with FitNets hints and attention transfer. Writes a checkpoint to --out.",
    )
    p.add_argument("--teacher", required=True, type=Path, help="teacher checkpoint folder")
    p.add_argument("--student", required=True, help="zoo name or package.module:factory")
    p.add_argument(
        "--student-arg",
        type=_kv,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="student construction argument, value as JSON, e.g. hidden=[100,30] (repeatable)",
    )
    add_checkpoint_out_options(p)
    add_recorded_data_options(p, owner="the teacher")
    FIT_OPTIONS.add(p)
    _add_layer_pairs(p)
    DISTILL_OPTIONS.add(p)  # into the same group
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_distill)


def _add_layer_pairs(p: argparse.ArgumentParser) -> None:
    """``--hint`` / ``--attention S:T`` (repeatable): DistillConfig.hints / .attention."""
    g = p.add_argument_group(DISTILL_OPTIONS.group)
    g.add_argument(
        "--hint", type=_pair, action="append", default=[], metavar="S:T",
        help="FitNets hint from teacher layer T to student layer S (qualified names; repeatable)",
    )  # fmt: skip
    g.add_argument(
        "--attention", type=_pair, action="append", default=[], metavar="S:T",
        help="attention transfer from teacher layer T to student layer S (repeatable)",
    )  # fmt: skip


def _configs(args: argparse.Namespace, seed: int) -> tuple[FitConfig, DistillConfig]:
    fit_config = FIT_OPTIONS.build(args, seed=seed)
    pairs = {"hints": tuple(args.hint), "attention": tuple(args.attention)}
    return fit_config, DISTILL_OPTIONS.build(args, **pairs)


def _cmd_distill(args: argparse.Namespace) -> int:

    check_out_dir(args.out, args.overwrite)
    teacher, teacher_spec, teacher_metrics = load_checkpoint(args.teacher)
    data, seed = recorded_split(teacher_metrics, str(args.teacher), args.data, args.seed)
    fit_config, config = _configs(args, seed)
    splits = load_data(data, seed=seed)
    check_given_data(args.data, splits, teacher_metrics, teacher_spec.kwargs, str(args.teacher))
    kwargs = {"num_classes": splits.num_classes}
    if len(splits.input_shape) == 3 and ":" not in args.student:
        kwargs.update(in_channels=splits.input_shape[0], image_size=splits.input_shape[1])
    kwargs.update(dict(args.student_arg))
    spec = ModelSpec(args.student, kwargs)
    torch.manual_seed(seed)
    student = create_model(spec.name, **spec.kwargs)  # the user named it: theirs to run
    train, val, test = make_loaders(splits, args.batch_size, seed=seed)
    report = distill(student, teacher, train, val, fit_config, config, not args.quiet)
    result, teacher_result = evaluate(student, test), evaluate(teacher, test)
    metrics = {**data_record(data, seed, splits), "epochs": fit_config.epochs,
               "test_accuracy": result.accuracy, "test_loss": result.loss,
               "best_val_accuracy": report.best_val_accuracy,
               "teacher": str(args.teacher), "teacher_test_accuracy": teacher_result.accuracy,
               "distill": config.to_dict()}  # fmt: skip
    save_checkpoint(args.out, student, spec, metrics, overwrite=args.overwrite)
    print(
        f"{spec.name} distilled from {args.teacher}: test accuracy {result.accuracy:.4f} "
        f"(teacher {teacher_result.accuracy:.4f}); checkpoint {args.out}"
    )
    return 0
