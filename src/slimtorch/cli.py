"""The ``slimtorch`` command line: each subcommand builds the same config the Python API takes.

User mistakes (bad paths, names, shapes, option values) print one line and exit with status 2;
no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from slimtorch.cli_errors import describe_user_error
from slimtorch.cli_options import add_model_options, check_out_dir, model_kwargs
from slimtorch.errors import ConfigError, SlimtorchError, first_line

EXIT_USER_ERROR = 2

# Each capability registers its own subcommands: ``module.register(subparsers)`` adds a parser
# whose ``func(args) -> int`` runs it. Keep those modules light (import heavy code inside func).
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "slimtorch.bench.cli",
    "slimtorch.compress.cli",
    "slimtorch.encode.cli",
    "slimtorch.distill.cli",
    "slimtorch.llm.cli",
    "slimtorch.prune.cli",
    "slimtorch.quantize.cli",
)
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="slimtorch",
        description="Make neural networks small and fast: measure, prune, quantize, encode, "
        "distill, benchmark.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _train_parser(sub)
    _evaluate_parser(sub)
    importlib.import_module("slimtorch.profile.cli").register(sub)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    for name, command in sub.choices.items():
        if name not in CODE_FREE_COMMANDS:
            add_trust_code_option(command)
    return parser


CODE_FREE_COMMANDS = ("llm",)  # GGUF and Hugging Face folders name no Python code


def add_trust_code_option(p: argparse.ArgumentParser) -> None:
    """``--trust-code``: let files this command opens name a model factory outside the zoo."""
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="let a checkpoint's model.json, a .slim header or a recipe file name a model "
        "factory outside the slimtorch zoo (package.module:factory), which is then imported "
        "and run; only for files you trust. Without it such files are refused. Factories "
        "from the standard library or slimtorch's dependencies are refused either way",
    )


def _version() -> str:
    from slimtorch import __version__

    return f"slimtorch {__version__}"


def _train_parser(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--out", required=True, type=Path, help="output folder for the checkpoint")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--optimizer", default="adam", help="adam, adamw or sgd (default adam)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default 0)")
    p.add_argument("--scheduler", default="none", help="none or cosine (default none)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed for split, init and order (default 0)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a checkpoint already in --out (default: refuse)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)
    p.set_defaults(func=_cmd_train)


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="accuracy of a checkpoint on a data set split",
        description="Evaluate a checkpoint's loss and top-1 accuracy.",
    )
    p.add_argument(
        "checkpoint",
        type=Path,
        help="checkpoint folder or its model.json, or another artefact: an int8.safetensors "
        "(or the quantize --out folder holding it) or a .slim file",
    )
    p.add_argument(
        "--data",
        default=None,
        help="data source, as for train (default: the one the checkpoint was trained on)",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test"),
        help="which split to score (default test)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="split seed (default: the checkpoint's training seed, so the test split is held out)",
    )
    p.add_argument("--json", type=Path, help="also write the result as JSON here")
    p.set_defaults(func=_cmd_evaluate)


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
    from slimtorch.checkpoint import save_checkpoint
    from slimtorch.data import load_data, make_loaders
    from slimtorch.data.record import data_record
    from slimtorch.models import ModelSpec, create_model
    from slimtorch.train import FitConfig, evaluate, fit

    check_out_dir(args.out, args.overwrite)
    config = FitConfig(
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        scheduler=args.scheduler,
        seed=args.seed,
    )
    splits = load_data(args.data, seed=args.seed)
    kwargs = {"num_classes": splits.num_classes}
    kwargs.update(_shape_kwargs(args.model, splits.input_shape, args.data))
    kwargs.update(model_kwargs(args))
    spec = ModelSpec(name=args.model, kwargs=kwargs)
    torch_seed(args.seed)
    model = create_model(spec.name, **spec.kwargs)  # the user named it: theirs to run
    train_loader, val_loader, test_loader = make_loaders(splits, args.batch_size, seed=args.seed)
    _check_model_takes_data(model, splits, args.data)
    report = fit(model, train_loader, val_loader, config, progress=not args.quiet, label="train")
    test = evaluate(model, test_loader)
    metrics = {
        **data_record(args.data, args.seed, splits),  # data, seed, input_shape, num_classes
        "epochs": args.epochs,
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


def _check_model_takes_data(model: object, splits: object, data: str) -> None:
    """One forward pass on a real sample: a shape mismatch is a one-line error."""
    import torch

    from slimtorch.errors import ModelError

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
    import torch

    torch.manual_seed(seed)


def _load_scored(path: Path) -> tuple[object, str, dict, dict]:
    """``(model, name, metrics, spec kwargs)`` of a checkpoint, or of another artefact a bench
    adapter loads (an ``int8.safetensors`` or its folder, a ``.slim`` file) with the data
    record it carries as its metrics."""
    from slimtorch.checkpoint import load_checkpoint

    if not path.exists() or path.suffix == ".json" or (path / "model.json").exists():
        model, spec, metrics = load_checkpoint(path)
        return model, spec.name, metrics, spec.kwargs
    import slimtorch.bench  # noqa: F401  (registers the int8 and .slim adapters)
    from slimtorch.bench.sut import load_target, recorded_data

    target = load_target(str(path))
    if target.kind != "classifier" or target.model is None:
        raise ConfigError(f"{path}: not a classifier; evaluate scores classifiers")
    record = recorded_data(str(path))
    return target.model, target.label, record.to_dict() if record else {}, {}


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from slimtorch.data import load_data, make_loaders, recorded_split
    from slimtorch.data.record import check_given_data
    from slimtorch.io import atomic_write_text
    from slimtorch.train import evaluate

    model, name, metrics, spec_kwargs = _load_scored(args.checkpoint)
    data, seed = recorded_split(metrics, str(args.checkpoint), args.data, args.seed)
    splits = load_data(data, seed=seed)
    check_given_data(args.data, splits, metrics, spec_kwargs, str(args.checkpoint))
    _check_model_takes_data(model, splits, data)
    loaders = dict(
        zip(("train", "val", "test"), make_loaders(splits, args.batch_size, seed), strict=True)
    )
    result = evaluate(model, loaders[args.split])
    print(
        f"{name} on {splits.name} [{args.split}]: accuracy {result.accuracy:.4f}, "
        f"loss {result.loss:.4f} (n={result.n})"
    )
    if args.json:
        import json

        payload = {
            "model": name,
            "data": splits.name,
            "split": args.split,
            "accuracy": result.accuracy,
            "loss": result.loss,
            "n": result.n,
        }
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
    return 0


# Options that name what a command writes: main() checks they can be written before it runs.
OUTPUT_OPTIONS = ("out", "json", "csv", "plot", "roofline_plot", "summary", "markdown", "report")


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse an unwritable output (``--out``, ``--json``, ...) before any work is done."""
    from slimtorch.io import check_writable

    for dest in OUTPUT_OPTIONS:
        value = getattr(args, dest, None)
        if not isinstance(value, (str, Path)) or not str(value):
            continue
        option = "--" + dest.replace("_", "-")
        if dest != "out" and Path(value).is_dir():  # only --out may name a folder
            raise ConfigError(f"{option} {value}: is a folder; expected a file to write")
        check_writable(value, option)


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Show warnings as ``slimtorch CMD: warning: message`` (no source line) while active."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"slimtorch {command}: warning: {message}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``slimtorch`` console script.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    from slimtorch.models.trust import trust_code_scope

    command = " ".join(filter(None, (args.command, getattr(args, "llm_command", None))))
    try:
        check_outputs(args)
        with trust_code_scope(getattr(args, "trust_code", False)), one_line_warnings(command):
            return int(args.func(args))
    except SlimtorchError as exc:
        print(f"slimtorch {command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (OSError, UnicodeDecodeError, MemoryError, RuntimeError) as exc:
        message = describe_user_error(exc, argv)
        if message is None:
            raise  # a bug: keep the traceback
        print(f"slimtorch {command}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("slimtorch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
