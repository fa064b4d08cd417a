"""``slimtorch evaluate``: loss and top-1 accuracy of a checkpoint (or an int8 / .slim file)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import slimtorch.bench  # noqa: F401  (registers the int8 and .slim adapters)
from slimtorch.bench.sut import load_target, recorded_data
from slimtorch.checkpoint import load_checkpoint
from slimtorch.cli.options import SPLITS, add_recorded_data_options, add_split_option
from slimtorch.cli.train import check_model_takes_data
from slimtorch.data import load_data, make_loaders, recorded_split
from slimtorch.data.record import check_given_data
from slimtorch.errors import ConfigError
from slimtorch.io import atomic_write_text
from slimtorch.train import evaluate

EVALUATE_BATCH_SIZE = 256  # no gradients: larger batches than training's


def register(sub: argparse._SubParsersAction) -> None:
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
    add_split_option(p)
    add_recorded_data_options(p, batch_size=EVALUATE_BATCH_SIZE)
    p.add_argument("--json", type=Path, help="also write the result as JSON here")
    p.set_defaults(func=_cmd_evaluate)


def _load_scored(path: Path) -> tuple[object, str, dict, dict]:
    """``(model, name, metrics, spec kwargs)`` of a checkpoint, or of another artefact a bench
    adapter loads (an ``int8.safetensors`` or its folder, a ``.slim`` file) with the data
    record it carries as its metrics."""

    if not path.exists() or path.suffix == ".json" or (path / "model.json").exists():
        model, spec, metrics = load_checkpoint(path)
        return model, spec.name, metrics, spec.kwargs

    target = load_target(str(path))
    if target.kind != "classifier" or target.model is None:
        raise ConfigError(f"{path}: not a classifier; evaluate scores classifiers")
    record = recorded_data(str(path))
    return target.model, target.label, record.to_dict() if record else {}, {}


def _cmd_evaluate(args: argparse.Namespace) -> int:

    model, name, metrics, spec_kwargs = _load_scored(args.checkpoint)
    data, seed = recorded_split(metrics, str(args.checkpoint), args.data, args.seed)
    splits = load_data(data, seed=seed)
    check_given_data(args.data, splits, metrics, spec_kwargs, str(args.checkpoint))
    check_model_takes_data(model, splits, data)
    loaders = dict(zip(SPLITS, make_loaders(splits, args.batch_size, seed), strict=True))
    result = evaluate(model, loaders[args.split])
    print(
        f"{name} on {splits.name} [{args.split}]: accuracy {result.accuracy:.4f}, "
        f"loss {result.loss:.4f} (n={result.n})"
    )
    if args.json:
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
