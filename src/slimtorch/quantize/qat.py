"""Quantization-aware training: fake quantization with the straight-through estimator.

Steps: wrap every conv/linear (``ptq.prepare``, BatchNorm kept), calibrate the activation
quantizers on a few batches (initial scales), then fine-tune with ``slimtorch.train.fit``.
Weights are fake-quantized from their float master copy on every forward (STE; with
``lsq=True`` weight and activation step sizes are learned, Esser et al. 2020). After
``freeze_bn_epoch`` epochs BatchNorm statistics are frozen by folding each BatchNorm into its
layer (Jacob et al. 2018, Sec. 3.2: training then sees exactly the folded weights the integer
model will use); any BatchNorm still unfolded at the end is folded then. The result exports
with ``integer.to_integer``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    >>> data = [(torch.randn(16, 4), torch.randint(0, 2, (16,))) for _ in range(2)]
    >>> qmodel, report, fit_report = quantize_qat(model, data, None, QATConfig(epochs=2))
    >>> isinstance(qmodel[1], nn.Identity), len(fit_report.history)
    (True, 2)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slimtorch.errors import ConfigError
from slimtorch.quantize.fold import find_bn_pairs, fold_bn_weights
from slimtorch.quantize.ptq import PTQConfig, calibrate, freeze, prepare, weight_report
from slimtorch.quantize.report import QuantReport
from slimtorch.train import EpochStats, FitConfig, FitReport, fit

QAT_VERSION = 1
DEFAULT_QAT_LR = 1e-4  # fine-tuning rate: a tenth of the zoo's Adam training rate


@dataclass(frozen=True)
class QATConfig:
    """Quantization-aware training.

    Args:
        ptq: bits, granularity, observer and calibration batches (``fold_bn`` is ignored:
            QAT folds BatchNorm itself at ``freeze_bn_epoch``).
        epochs: fine-tuning epochs.
        lr: learning rate (Adam).
        lsq: learn step sizes (LSQ) instead of min/max weight scales and fixed activation scales.
        freeze_bn_epoch: fold (freeze) BatchNorm after this many epochs; 0 folds before
            training; None folds after the last epoch.
        seed: training seed.
        version: config version.
    """

    ptq: PTQConfig = field(default_factory=PTQConfig)
    epochs: int = 3
    lr: float = DEFAULT_QAT_LR
    lsq: bool = False
    freeze_bn_epoch: int | None = 1
    seed: int = 0
    version: int = QAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs: expected a positive integer, got {self.epochs!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr: expected a positive number, got {self.lr!r}")
        if self.freeze_bn_epoch is not None and self.freeze_bn_epoch < 0:
            raise ConfigError(f"freeze_bn_epoch: expected >= 0 or None, got {self.freeze_bn_epoch}")
        if self.ptq.activation_bits is None:
            raise ConfigError("QAT needs activation_bits (the integer model quantizes activations)")


def _ensure_bias(layer: nn.Module) -> None:
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0]))


def fold_wrapped_bn(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Fold BatchNorms into the (wrapped) layers in place, keeping the same Parameters."""
    for layer_name, bn_name in pairs:
        bn = model.get_submodule(bn_name)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            continue
        layer = model.get_submodule(layer_name).layer
        w, b = fold_bn_weights(layer.weight, layer.bias, bn)
        with torch.no_grad():
            layer.weight.copy_(w)
            layer.bias.copy_(b)
        parent, _, child = bn_name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())


def quantize_qat(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None,
    config: QATConfig = QATConfig(),
    progress: bool = False,
) -> tuple[nn.Module, QuantReport, FitReport]:
    """Fine-tune a fake-quantized copy of ``model``.

    Args:
        model: the float model (unchanged).
        train_loader: training batches (the first ``ptq.calib_batches`` also calibrate).
        val_loader: optional validation batches.
        config: QAT settings.
        progress: show progress bars.

    Returns:
        ``(fake-quantized model with BatchNorm folded, weight report, fit report)``.
    """
    pairs = find_bn_pairs(model)
    qmodel = prepare(model, dataclasses.replace(config.ptq, fold_bn=False), lsq=config.lsq)
    for layer_name, _ in pairs:
        _ensure_bias(qmodel.get_submodule(layer_name).layer)
    calibrate(qmodel, train_loader, config.ptq.calib_batches)
    freeze(qmodel)
    if config.freeze_bn_epoch == 0:
        fold_wrapped_bn(qmodel, pairs)

    def maybe_fold(m: nn.Module, stats: EpochStats) -> None:
        if config.freeze_bn_epoch is not None and stats.epoch + 1 == config.freeze_bn_epoch:
            fold_wrapped_bn(m, pairs)

    fit_cfg = FitConfig(epochs=config.epochs, lr=config.lr, seed=config.seed)
    fit_report = fit(
        qmodel, train_loader, val_loader, fit_cfg, progress, callbacks=[maybe_fold], label="qat"
    )
    fold_wrapped_bn(qmodel, pairs)
    qmodel.eval()
    report = weight_report(qmodel, method="linear-qat")
    report.extra.update(epochs=config.epochs, lsq=config.lsq, folded_bn=[b for _, b in pairs])
    return qmodel, report, fit_report
