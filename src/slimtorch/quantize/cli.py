"""``slimtorch quantize``: linear PTQ/QAT, integer-only export, k-means, sensitivity scan.

Every option maps onto a config dataclass field (``PTQConfig``, ``QATConfig``,
``KMeansConfig``); outputs go to ``--out``: ``report.json`` / ``report.txt`` (per-layer bits,
size, MSE, SQNR; accuracy before and after), ``histogram.png`` (the largest layer's weights
before and after), ``int8.safetensors`` with ``--integer``, ``sensitivity.json`` / ``.png``
with ``--sensitivity``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from slimtorch.cli_options import add_threads_option, threads_from_args
from slimtorch.core.size import effective_parameters
from slimtorch.errors import ConfigError
from slimtorch.profile.noise import torch_threads

GRANULARITIES = ("tensor", "channel", "group")
CALIBRATORS = ("minmax", "moving_average", "percentile", "mse", "kl")
SENSITIVITY_BITS = (2, 4, 8)
REDUCE_RANGE_CHOICES = {"auto": "auto", "on": True, "off": False}  # PTQConfig.reduce_range


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``quantize`` subcommand."""
    p = sub.add_parser(
        "quantize",
        help="quantize a checkpoint (linear PTQ/QAT, int8 integer-only export, k-means)",
        description="Quantize a trained checkpoint and report per-layer size, error and accuracy.",
    )
    p.add_argument("checkpoint", help="checkpoint folder (model.safetensors + model.json)")
    p.add_argument(
        "--method",
        choices=("linear", "kmeans"),
        default="linear",
        help="linear (affine) quantization or k-means weight sharing (default linear)",
    )
    p.add_argument("--bits", type=int, default=8, help="weight bits: 1..8 or 16 (default 8)")
    p.add_argument(
        "--activation-bits",
        type=int,
        default=8,
        help="activation bits for linear quantization (default 8; 0 = weight-only)",
    )
    p.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        default="channel",
        help="which weights share a scale (default channel)",
    )
    p.add_argument(
        "--group-size",
        type=int,
        default=None,
        help="values per group along the flattened input (with --granularity group)",
    )
    p.add_argument(
        "--calibrate",
        choices=CALIBRATORS,
        default="minmax",
        help="activation observer (default minmax)",
    )
    p.add_argument(
        "--percentile",
        type=float,
        default=99.99,
        help="percentile for --calibrate percentile (default 99.99)",
    )
    p.add_argument(
        "--calib-batches",
        type=int,
        default=32,
        help="calibration batches from the training split (default 32)",
    )
    p.add_argument(
        "--reduce-range",
        choices=tuple(REDUCE_RANGE_CHOICES),
        default="auto",
        help="8-bit activations use 7 bits so torch's int8 engines cannot saturate on CPUs "
        "without VNNI (auto: only where this CPU's engine saturates; default auto)",
    )
    p.add_argument("--qat", action="store_true", help="quantization-aware training after PTQ")
    p.add_argument("--epochs", type=int, default=3, help="QAT epochs (default 3)")
    p.add_argument("--lr", type=float, default=1e-4, help="QAT learning rate (default 1e-4)")
    p.add_argument("--lsq", action="store_true", help="QAT learns step sizes (LSQ)")
    p.add_argument(
        "--freeze-bn-epoch",
        type=int,
        default=1,
        help="QAT folds (freezes) BatchNorm after this many epochs (default 1)",
    )
    p.add_argument(
        "--integer",
        action="store_true",
        help="export the int8 integer-only model to OUT/int8.safetensors",
    )
    p.add_argument(
        "--backend",
        choices=("x86", "fbgemm", "reference"),
        default="x86",
        help="integer kernels used to evaluate the int8 model (default x86)",
    )
    p.add_argument(
        "--init",
        choices=("linear", "density", "random"),
        default="linear",
        help="k-means centroid initialization (default linear)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=0,
        help="k-means: epochs of centroid fine-tuning (default 0)",
    )
    p.add_argument(
        "--recalibrate-bn",
        action="store_true",
        help="k-means: re-estimate BatchNorm running statistics on the training split after "
        "clustering (recovers most of the loss at 2-3 bits)",
    )
    p.add_argument(
        "--finetune-all",
        action="store_true",
        help="k-means fine-tuning: also train biases and norms (default: centroids only); "
        "cosine lr and the best epoch by validation accuracy are kept",
    )
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help=f"also scan accuracy per layer at {SENSITIVITY_BITS} bits",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        help="regex of layer names to keep in float (repeatable)",
    )
    p.add_argument("--data", default=None, help="data set (default: the checkpoint's)")
    p.add_argument(
        "--seed", type=int, default=None, help="data split seed (default: the checkpoint's)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--out", required=True, help="output folder")
    add_threads_option(p, "calibration, fine-tuning and evaluation")
    p.set_defaults(func=run)


def _ptq_config(args: argparse.Namespace) -> Any:
    from slimtorch.quantize.primitives import granularity_from_name
    from slimtorch.quantize.ptq import PTQConfig

    if args.granularity != "group" and args.group_size is not None:
        raise ConfigError("--group-size: only with --granularity group")
    return PTQConfig(
        weight_bits=args.bits,
        weight_granularity=granularity_from_name(args.granularity, args.group_size),
        activation_bits=args.activation_bits or None,
        observer=args.calibrate,
        percentile=args.percentile,
        calib_batches=args.calib_batches,
        exclude=tuple(args.exclude),
        reduce_range=REDUCE_RANGE_CHOICES[args.reduce_range],
    )


def _linear(args, model, loaders, out: Path, record: dict) -> tuple[Any, Any, dict[str, Any]]:
    from slimtorch.quantize.ptq import quantize_ptq
    from slimtorch.quantize.qat import QATConfig, quantize_qat

    train, val, test = loaders
    config = _ptq_config(args)
    extra: dict[str, Any] = {}
    if args.qat:
        qat = QATConfig(
            ptq=config,
            epochs=args.epochs,
            lr=args.lr,
            lsq=args.lsq,
            freeze_bn_epoch=args.freeze_bn_epoch,
        )
        qmodel, report, _ = quantize_qat(model, train, val, qat, progress=True)
    else:
        qmodel, report = quantize_ptq(model, train, config)
    if args.integer:
        extra = _export_integer(args, qmodel, train, test, out, record)
    return qmodel, report, extra


def _export_integer(args, qmodel, train, test, out: Path, record: dict) -> dict[str, Any]:
    from slimtorch.quantize.integer import to_integer
    from slimtorch.quantize.intformat import save_integer_model
    from slimtorch.train import evaluate

    if args.bits > 8 or not args.activation_bits or args.activation_bits > 8:
        raise ConfigError("--integer: needs --bits and --activation-bits of at most 8")
    example = next(iter(train))[0]
    imodel = to_integer(qmodel, example, backend=args.backend)
    path = save_integer_model(imodel, out / "int8.safetensors", record)  # remembers its data
    acc = evaluate(imodel, test).accuracy
    runs_on = imodel.runs_on  # "reference" where the engine would saturate (warned)
    kernels = args.backend if runs_on == args.backend else f"{args.backend} -> {runs_on}"
    print(f"int8 integer-only model ({kernels}): test accuracy {acc:.4f} -> {path}")
    return {
        "integer_accuracy": acc,
        "integer_backend": args.backend,
        "integer_runs_on": runs_on,
        "integer_reduce_range": imodel.reduce_range,
        "integer_path": str(path),
    }


def _kmeans(args, model, loaders) -> tuple[Any, Any, dict[str, Any]]:
    from slimtorch.quantize.kmeans import KMeansConfig, kmeans_quantize_model
    from slimtorch.quantize.trained import finetune_centroids, recalibrate_bn

    train, val, _ = loaders
    if args.qat or args.integer:
        raise ConfigError("--qat and --integer apply to --method linear")
    qmodel, report = kmeans_quantize_model(
        model, KMeansConfig(bits=args.bits, init=args.init, exclude=tuple(args.exclude))
    )
    if args.recalibrate_bn:
        recalibrate_bn(qmodel, train)
    if args.finetune_epochs:
        extra = {"train_other": True, "scheduler": "cosine", "keep_best": val is not None}
        finetune_centroids(
            qmodel, train, val, epochs=args.finetune_epochs, **(extra if args.finetune_all else {})
        )
    return (
        qmodel,
        report,
        {
            "finetune_epochs": args.finetune_epochs,
            "recalibrate_bn": args.recalibrate_bn,
            "finetune_all": args.finetune_all,
        },
    )


def _histogram(model, qmodel, out: Path, method: str) -> None:
    from slimtorch.quantize.report import save_histogram_png

    float_weights = {
        n: p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1
    }
    if not float_weights:
        return
    name = max(float_weights, key=lambda n: float_weights[n].numel())
    layer = name.rpartition(".")[0]
    qlayer = qmodel.get_submodule(layer) if layer else qmodel
    if hasattr(qlayer, "quantized_weight"):  # linear fake-quant wrapper
        after = qlayer.quantized_weight().detach()
        before = qlayer.layer.weight.detach()  # after BatchNorm folding
    else:
        before, after = float_weights[name].detach(), _effective(qmodel, name)
    save_histogram_png(out / "histogram.png", before, after, f"{name} ({method})")


def _effective(qmodel, name: str):
    params = effective_parameters(qmodel)
    if name in params:
        return params[name].detach()
    layer = qmodel.get_submodule(name.rpartition(".")[0])
    return layer.weight.detach() if hasattr(layer, "weight") else params[name]


def _sensitivity(args, model, loaders, out: Path) -> dict[str, Any]:
    from slimtorch.quantize.mixed import sensitivity_scan

    result = sensitivity_scan(
        model, loaders[1], bits=SENSITIVITY_BITS, method=args.method, exclude=tuple(args.exclude)
    )
    from slimtorch.io import atomic_write_text

    atomic_write_text(out / "sensitivity.json", json.dumps(result.to_dict(), indent=2))
    result.plot(out / "sensitivity.png")
    return {"sensitivity": str(out / "sensitivity.json")}


def _warnings(args, report, extra: dict[str, Any], num_classes: int) -> list[dict[str, Any]]:
    """Accuracy warnings (``AccuracyWarning.to_dict()``) for the quantized model and, with
    ``--integer``, the int8 integer-only model."""
    from slimtorch.accuracy_check import accuracy_warning, quantize_suggestions

    tips = quantize_suggestions(args)
    before = report.accuracy_before
    found = [
        accuracy_warning(f"quantize ({args.method})", before, report.accuracy_after,
                         num_classes, tips),
        accuracy_warning("int8 integer-only", before, extra.get("integer_accuracy"),
                         num_classes, tips),
    ]  # fmt: skip
    return [w.to_dict() for w in found if w is not None]


def run(args: argparse.Namespace) -> int:
    """Run ``slimtorch quantize`` with ``--threads`` torch threads (recorded in the report)."""
    with torch_threads(threads_from_args(args)):
        return _quantize(args)


def _quantize(args: argparse.Namespace) -> int:
    from slimtorch.checkpoint import load_checkpoint
    from slimtorch.data import load_data, make_loaders, recorded_split
    from slimtorch.data.record import check_given_data, data_record
    from slimtorch.io import atomic_write_text
    from slimtorch.train import evaluate

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; expected a folder")
    model, spec, metrics = load_checkpoint(args.checkpoint)
    model.eval()
    data, seed = recorded_split(metrics, str(args.checkpoint), args.data, args.seed)
    splits = load_data(data, seed=seed)
    check_given_data(args.data, splits, metrics, spec.kwargs, str(args.checkpoint))
    record = data_record(data, seed, splits)
    loaders = make_loaders(splits, args.batch_size, seed)
    if args.method == "linear":
        qmodel, report, extra = _linear(args, model, loaders, out, record)
    else:
        qmodel, report, extra = _kmeans(args, model, loaders)
    report.accuracy_before = evaluate(model, loaders[2]).accuracy
    report.accuracy_after = evaluate(qmodel.eval(), loaders[2]).accuracy
    report.warnings = _warnings(args, report, extra, splits.num_classes)
    report.extra.update(extra, checkpoint=str(args.checkpoint), model=spec.name, **record)
    report.extra.update(threads=torch.get_num_threads())
    if args.sensitivity:
        report.extra.update(_sensitivity(args, model, loaders, out))
    _histogram(model, qmodel, out, args.method)
    atomic_write_text(out / "report.json", json.dumps(report.to_dict(), indent=2, default=str))
    atomic_write_text(out / "report.txt", report.table() + "\n")
    print(report.table())
    print(f"wrote {out}/report.json, report.txt, histogram.png")
    return 0
