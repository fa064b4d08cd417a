"""``slimtorch prune --surgery``: channel pruning that physically removes channels.

The flow is: rank each coupled channel group (L1, L2 or BatchNorm gamma), remove the requested
fraction with :func:`slimtorch.prune.surgery.prune_channels`, fine-tune the smaller dense model,
and save it with :func:`slimtorch.prune.surgery.pruned_spec` so it reloads like any checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimtorch.core.trace import trace_model
from slimtorch.errors import ConfigError
from slimtorch.prune.surgery import prune_channels
from slimtorch.train import FitConfig, evaluate, fit

IMPORTANCES = ("l1", "l2", "bn")


@dataclass(frozen=True)
class SurgeryConfig:
    """Physical channel pruning.

    Args:
        ratio: fraction of channels removed from every prunable group, in [0, 1).
        importance: how channels are ranked: ``l1``, ``l2`` (filter norms) or ``bn``
            (BatchNorm |gamma|).
        round_to: kept channel counts are rounded up to a multiple of this (SIMD-friendly).
        finetune_epochs: fine-tuning epochs of the smaller model afterwards.
        lr: fine-tuning learning rate (Adam, cosine).
        seed: fine-tuning seed.
    """

    ratio: float = 0.5
    importance: str = "l1"
    round_to: int = 1
    finetune_epochs: int = 0
    lr: float = 1e-3
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"--sparsity: channel ratio must be in [0, 1), got {self.ratio}")
        if self.importance not in IMPORTANCES:
            raise ConfigError(
                f"--importance: expected one of {', '.join(IMPORTANCES)}, got {self.importance!r}"
            )
        if self.round_to < 1 or self.finetune_epochs < 0:
            raise ConfigError("--round-to must be >= 1 and --finetune-epochs >= 0")


@dataclass(frozen=True)
class SurgeryReport:
    """Before/after figures of a physical channel pruning run."""

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    accuracy_before: float
    accuracy_pruned: float
    accuracy_finetuned: float | None
    layers: tuple[tuple[str, str, str], ...]  # (module, shape before, shape after)


def _shape(m: nn.Module) -> str:
    w = getattr(m, "weight", None)
    return "x".join(map(str, w.shape)) if isinstance(w, torch.Tensor) else "-"


def surgery_prune(
    model: nn.Module,
    example_input: torch.Tensor,
    config: SurgeryConfig,
    loaders: tuple[Any, Any, Any],
    progress: bool = False,
) -> tuple[nn.Module, SurgeryReport]:
    """Remove channels for real, then fine-tune.

    Args:
        model: the trained model (not changed).
        example_input: one input batch for tracing.
        config: the settings.
        loaders: (train, val, test) loaders; test scores each step.
        progress: show fit's progress bar.

    Returns:
        The smaller model and a :class:`SurgeryReport`.

    Example:
        >>> cfg = SurgeryConfig(ratio=0.5)  # doctest: +SKIP
    """

    train, val, test = loaders
    small = prune_channels(
        model.eval(),
        example_input,
        ratio=config.ratio,
        importance=config.importance,
        round_to=config.round_to,
    )
    before, after = trace_model(model, example_input), trace_model(small, example_input)
    acc_before = evaluate(model, test).accuracy
    acc_pruned = evaluate(small, test).accuracy
    acc_ft = None
    if config.finetune_epochs:
        fit_cfg = FitConfig(
            epochs=config.finetune_epochs, lr=config.lr, scheduler="cosine", seed=config.seed
        )
        fit(small, train, val, fit_cfg, progress=progress, label="surgery finetune")
        acc_ft = evaluate(small, test).accuracy
    big = dict(model.named_modules())
    changed = tuple(
        (name, _shape(big[name]), _shape(m))
        for name, m in small.named_modules()
        if name in big and _shape(big[name]) != _shape(m)
    )
    report = SurgeryReport(
        before.total_params,
        after.total_params,
        before.total_macs,
        after.total_macs,
        acc_before,
        acc_pruned,
        acc_ft,
        changed,
    )
    return small, report
