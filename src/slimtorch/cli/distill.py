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

from slimtorch.errors import ConfigError


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
    p.add_argument("--out", required=True, type=Path, help="output checkpoint folder")
    p.add_argument("--data", default=None, help="data source (default: the teacher's)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--optimizer", default="adam", help="adam, adamw or sgd (default adam)")
    p.add_argument("--scheduler", default="cosine", help="none or cosine (default cosine)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for split, init, order (default: the teacher's, so its test split stays "
        "held out)",
    )
    p.add_argument("--temperature", type=float, default=4.0, help="softmax T (default 4)")
    p.add_argument(
        "--alpha", type=float, default=0.9, help="soft-target weight; 0 = no KD (default 0.9)"
    )
    p.add_argument(
        "--hint", type=_pair, action="append", default=[], metavar="S:T",
        help="FitNets hint from teacher layer T to student layer S (qualified names; repeatable)",
    )  # fmt: skip
    p.add_argument("--hint-weight", type=float, default=1.0, help="hint loss weight (default 1)")
    p.add_argument(
        "--attention", type=_pair, action="append", default=[], metavar="S:T",
        help="attention transfer from teacher layer T to student layer S (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--attention-weight", type=float, default=500.0, help="attention weight (default 500)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_distill)


def _configs(args: argparse.Namespace, seed: int) -> tuple[Any, Any]:
    from slimtorch.distill.distill import DistillConfig
    from slimtorch.train import FitConfig

    fit_config = FitConfig(epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
                           scheduler=args.scheduler, seed=seed)  # fmt: skip
    config = DistillConfig(
        temperature=args.temperature,
        alpha=args.alpha,
        hints=tuple(args.hint),
        hint_weight=args.hint_weight,
        attention=tuple(args.attention),
        attention_weight=args.attention_weight,
    )
    return fit_config, config


def _cmd_distill(args: argparse.Namespace) -> int:
    import torch

    from slimtorch.checkpoint import load_checkpoint, save_checkpoint
    from slimtorch.data import load_data, make_loaders, recorded_split
    from slimtorch.data.record import check_given_data, data_record
    from slimtorch.distill.distill import distill
    from slimtorch.models import ModelSpec, create_model
    from slimtorch.train import evaluate

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
    if (args.out / "model.json").exists() and not args.overwrite:
        raise ConfigError(f"--out {args.out}: already holds a checkpoint; pass --overwrite")
    report = distill(student, teacher, train, val, fit_config, config, not args.quiet)
    result, teacher_result = evaluate(student, test), evaluate(teacher, test)
    metrics = {**data_record(data, seed, splits), "epochs": args.epochs,
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
