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

from slimtorch.accuracy_check import accuracy_warning, quantize_suggestions
from slimtorch.checkpoint import load_checkpoint
from slimtorch.cli.fields import ConfigOptions, Custom
from slimtorch.cli.options import add_threads_option, threads_from_args
from slimtorch.core.size import effective_parameters
from slimtorch.data import load_data, make_loaders, recorded_split
from slimtorch.data.record import check_given_data, data_record
from slimtorch.errors import ConfigError
from slimtorch.io import atomic_write_text
from slimtorch.profile.noise import torch_threads
from slimtorch.quantize.integer import to_integer
from slimtorch.quantize.intformat import save_integer_model
from slimtorch.quantize.kmeans import KMeansConfig, kmeans_quantize_model
from slimtorch.quantize.mixed import sensitivity_scan
from slimtorch.quantize.ptq import PTQConfig, quantize_ptq
from slimtorch.quantize.qat import QATConfig, quantize_qat
from slimtorch.quantize.report import save_histogram_png
from slimtorch.quantize.trained import finetune_centroids, recalibrate_bn
from slimtorch.train import evaluate

INTEGER_BACKENDS = ("x86", "fbgemm", "reference")
SENSITIVITY_BITS = (2, 4, 8)
REDUCE_RANGE_CHOICES = {"auto": "auto", "on": True, "off": False}  # PTQConfig.reduce_range


PTQ_OPTIONS = ConfigOptions(
    PTQConfig,
    only=(
        "weight_bits",
        "weight_granularity",
        "activation_bits",
        "observer",
        "percentile",
        "calib_batches",
        "reduce_range",
        "exclude",
    ),
    flags={
        "weight_bits": "--bits",
        "weight_granularity": "--granularity",
        "observer": "--calibrate",
    },
    custom={
        "activation_bits": Custom(
            parse=lambda t: int(t) or None,
            text=lambda v: "none (weight-only)" if v is None else str(v),
            metavar="BITS",
        ),
        "reduce_range": Custom(
            parse=lambda t: _choice(t, REDUCE_RANGE_CHOICES, "--reduce-range"),
            text=lambda v: {True: "on", False: "off"}.get(v, v),
            choices=tuple(REDUCE_RANGE_CHOICES),
        ),
    },
    group="linear quantization (PTQConfig; --activation-bits 0 = weight-only)",
)
QAT_OPTIONS = ConfigOptions(
    QATConfig,
    only=("epochs", "lr", "lsq", "freeze_bn_epoch"),
    group="quantization-aware training with --qat (QATConfig)",
)
KMEANS_OPTIONS = ConfigOptions(
    KMeansConfig, only=("bits", "init", "exclude"), group="k-means weight sharing (KMeansConfig)"
)


def _choice(text: str, choices: dict[str, Any], flag: str) -> Any:
    if text not in choices:
        raise ConfigError(f"{flag}: expected one of {', '.join(choices)}, got {text!r}")
    return choices[text]


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
    for options in (PTQ_OPTIONS, KMEANS_OPTIONS, QAT_OPTIONS):
        options.add(p)
    p.add_argument("--qat", action="store_true", help="quantization-aware training after PTQ")
    p.add_argument(
        "--integer",
        action="store_true",
        help="export the int8 integer-only model to OUT/int8.safetensors",
    )
    p.add_argument(
        "--backend",
        choices=INTEGER_BACKENDS,
        default=INTEGER_BACKENDS[0],
        help="integer kernels used to evaluate the int8 model (default x86)",
    )
    _add_centroid_options(p)
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help=f"also scan accuracy per layer at {SENSITIVITY_BITS} bits",
    )
    p.add_argument("--data", default=None, help="data set (default: the checkpoint's)")
    p.add_argument(
        "--seed", type=int, default=None, help="data split seed (default: the checkpoint's)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--out", required=True, help="output folder")
    add_threads_option(p, "calibration, fine-tuning and evaluation")
    p.set_defaults(func=run)


def _add_centroid_options(p: argparse.ArgumentParser) -> None:
    """k-means after clustering: BatchNorm re-estimation and centroid fine-tuning."""
    g = p.add_argument_group("k-means fine-tuning (finetune_centroids)")
    g.add_argument(
        "--finetune-epochs",
        type=int,
        default=0,
        help="k-means: epochs of centroid fine-tuning (default 0)",
    )
    g.add_argument(
        "--recalibrate-bn",
        action="store_true",
        help="k-means: re-estimate BatchNorm running statistics on the training split after "
        "clustering (recovers most of the loss at 2-3 bits)",
    )
    g.add_argument(
        "--finetune-all",
        action="store_true",
        help="k-means fine-tuning: also train biases and norms (default: centroids only); "
        "cosine lr and the best epoch by validation accuracy are kept",
    )


def _linear(args, model, loaders, out: Path, record: dict) -> tuple[Any, Any, dict[str, Any]]:

    train, val, test = loaders
    config = PTQ_OPTIONS.build(args)
    extra: dict[str, Any] = {}
    if args.qat:
        qat = QAT_OPTIONS.build(args, ptq=config)
        qmodel, report, _ = quantize_qat(model, train, val, qat, progress=True)
    else:
        qmodel, report = quantize_ptq(model, train, config)
    if args.integer:
        extra = _export_integer(args, config, qmodel, train, test, out, record)
    return qmodel, report, extra


def _export_integer(args, config, qmodel, train, test, out: Path, record: dict) -> dict[str, Any]:

    if config.weight_bits > 8 or not config.activation_bits or config.activation_bits > 8:
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

    train, val, _ = loaders
    if args.qat or args.integer:
        raise ConfigError("--qat and --integer apply to --method linear")
    qmodel, report = kmeans_quantize_model(model, KMEANS_OPTIONS.build(args))
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

    result = sensitivity_scan(
        model, loaders[1], bits=SENSITIVITY_BITS, method=args.method, exclude=tuple(args.exclude)
    )

    atomic_write_text(out / "sensitivity.json", json.dumps(result.to_dict(), indent=2))
    result.plot(out / "sensitivity.png")
    return {"sensitivity": str(out / "sensitivity.json")}


def _warnings(args, report, extra: dict[str, Any], num_classes: int) -> list[dict[str, Any]]:
    """Accuracy warnings (``AccuracyWarning.to_dict()``) for the quantized model and, with
    ``--integer``, the int8 integer-only model."""

    config = (PTQ_OPTIONS if args.method == "linear" else KMEANS_OPTIONS).build(args)
    tips = quantize_suggestions(args, config)
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
