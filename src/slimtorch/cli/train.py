"""``slimtorch train``: train a zoo model or a user factory on a data set; save a checkpoint."""

from __future__ import annotations

import argparse

import torch

from slimtorch.checkpoint import save_checkpoint
from slimtorch.cli.fields import ConfigOptions
from slimtorch.cli.options import (
    add_batch_size_option,
    add_checkpoint_out_options,
    add_model_options,
    check_out_dir,
    model_kwargs,
)
from slimtorch.data import load_data, make_loaders
from slimtorch.data.record import data_record
from slimtorch.errors import ConfigError, ModelError, first_line
from slimtorch.models import ModelSpec, create_model
from slimtorch.train import FitConfig, evaluate, fit

FIT_OPTIONS = ConfigOptions(FitConfig, group="training (FitConfig)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a zoo model or your own factory on a data set",
        description="Train a model and save a checkpoint "
        "(model.safetensors + model.json) in --out.",
    )
    p.add_argument(
        "--model",
        default="lenet5",
        help="zoo name (lenet300, lenet5, vgg, mobilenetv2, resnet) or "
        "package.module:factory (default lenet5)",
    )
    p.add_argument(
        "--data",
        default="digits",
        help="digits (built in), a .npz file with x and y, a folder with one "
        "subfolder per class, or idx:IMAGES,LABELS (default digits)",
    )
    add_checkpoint_out_options(p)
    FIT_OPTIONS.add(p)
    add_batch_size_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)
    p.set_defaults(func=_cmd_train)


def _shape_kwargs(model: str, sample_shape: tuple[int, ...], data: str) -> dict[str, int]:
    """in_channels / image_size from the data's sample shape [C, H, H]."""
    if len(sample_shape) == 3 and sample_shape[1] == sample_shape[2]:
        return {"in_channels": sample_shape[0], "image_size": sample_shape[1]}
    if ":" in model:
        return {}  # a user factory knows its own input
    raise ConfigError(
        f"--data {data}: samples have shape {list(sample_shape)}, but zoo models take square "
        "images [C, H, H]; reshape the data or pass your own --model package.module:factory"
    )


def _cmd_train(args: argparse.Namespace) -> int:

    check_out_dir(args.out, args.overwrite)
    config = FIT_OPTIONS.build(args)
    seed = config.seed  # also splits the data and initializes the model
    splits = load_data(args.data, seed=seed)
    kwargs = {"num_classes": splits.num_classes}
    kwargs.update(_shape_kwargs(args.model, splits.input_shape, args.data))
    kwargs.update(model_kwargs(args))
    spec = ModelSpec(name=args.model, kwargs=kwargs)
    torch_seed(seed)
    model = create_model(spec.name, **spec.kwargs)  # the user named it: theirs to run
    train_loader, val_loader, test_loader = make_loaders(splits, args.batch_size, seed=seed)
    check_model_takes_data(model, splits, args.data)
    report = fit(model, train_loader, val_loader, config, progress=not args.quiet, label="train")
    test = evaluate(model, test_loader)
    metrics = {
        **data_record(args.data, seed, splits),  # data, seed, input_shape, num_classes
        "epochs": config.epochs,
        "best_val_accuracy": report.best_val_accuracy,
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
    }
    path = save_checkpoint(args.out, model, spec, metrics, overwrite=args.overwrite)
    print(
        f"{spec.name} on {splits.name}: test accuracy {test.accuracy:.4f} "
        f"(n={test.n}); checkpoint {path}"
    )
    return 0


def check_model_takes_data(model: object, splits: object, data: str) -> None:
    """One forward pass on a real sample: a shape mismatch is a one-line error."""

    x = splits.train[0][0].unsqueeze(0)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # the model is the user's: report any failure in one line
        first = first_line(exc)
        shape = "x".join(map(str, x.shape))
        raise ModelError(f"the model fails on --data {data} (input {shape}): {first}") from None
    finally:
        model.train(was_training)
    if out.ndim != 2 or out.shape[1] < splits.num_classes:
        raise ModelError(
            f"the model's output {list(out.shape)} does not cover the {splits.num_classes} "
            f"classes of --data {data}; expected [N, {splits.num_classes}]"
        )


def torch_seed(seed: int) -> None:
    """Seed torch's global generator (model initialization)."""

    torch.manual_seed(seed)
