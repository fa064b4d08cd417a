"""Supervised training and evaluation as plain functions: ``fit`` and ``evaluate``.

``fit`` runs a seeded loop (optimizer, optional cosine schedule, per-epoch validation) with
three small hooks instead of a trainer class, so compression methods can plug in:

- ``loss_fn(model, outputs, targets) -> Tensor`` replaces the cross-entropy loss (e.g. to add
  an L1 penalty on BatchNorm scales: ``lambda m, o, t: F.cross_entropy(o, t) + lam * l1(m)``);
- ``after_backward(model)`` runs between ``backward`` and ``optimizer.step`` (e.g. to mask
  gradients);
- ``after_step(model)`` runs after ``optimizer.step`` (e.g. to re-apply a pruning mask);
- ``callbacks``: ``callback(model, epoch_stats)`` after each epoch; returning True stops.

Progress: one line per epoch (``prune 1/3 finetune epoch 2/8: loss 0.1234 acc ...``, led by
``fit``'s ``label``), under a rich bar on a terminal, plain and bar-free when piped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from slimtorch.core.config import config_values
from slimtorch.errors import ConfigError, DataError
from slimtorch.progress import log_line, progress_bar

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")
SCHEDULERS: tuple[str, ...] = ("none", "cosine")
FIT_CONFIG_VERSION = 1

Batches = Iterable[Sequence[torch.Tensor]]  # yields (x [N, ...], y [N] int64)
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
ModelHook = Callable[[nn.Module], None]


@dataclass(frozen=True)
class FitConfig:
    """How ``fit`` trains (the batch size belongs to the loaders).

    Attributes:
        epochs: passes over the training loader (>= 1).
        lr: initial learning rate (> 0).
        optimizer: ``adam`` (L2 weight decay), ``adamw`` (decoupled decay) or ``sgd``.
        momentum: SGD momentum in [0, 1); unused by Adam.
        weight_decay: weight decay (>= 0).
        scheduler: ``none`` or ``cosine`` (annealed to 0 over ``epochs``, stepped per epoch).
        seed: seeds torch's RNG inside ``fit`` (shuffling without a loader generator,
            dropout); ``slimtorch train`` also splits the data and initializes the model
            with it.
        label_smoothing: label smoothing in [0, 1) of the default cross-entropy loss (a
            custom ``loss_fn``, e.g. distillation's, ignores it).

    Example:
        >>> FitConfig(epochs=3, optimizer="sgd", lr=0.1).scheduler
        'none'
    """

    epochs: int = 10
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "none"
    seed: int = 0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            (_is_int(self.epochs) and self.epochs >= 1, "epochs must be an int >= 1"),
            (_is_real(self.lr) and self.lr > 0, "lr must be a finite number > 0"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (_is_real(self.momentum) and 0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (_is_real(self.weight_decay) and self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.scheduler in SCHEDULERS, f"scheduler must be one of {', '.join(SCHEDULERS)}"),
            (_is_int(self.seed) and self.seed >= 0, "seed must be an int >= 0"),
            (
                _is_real(self.label_smoothing) and 0 <= self.label_smoothing < 1,
                "label_smoothing must be in [0, 1)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"FitConfig: {message}, got {self}")

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``"version"``, ready for JSON or TOML."""
        return {"version": FIT_CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        """Inverse of :meth:`to_dict`; refuses unknown fields and newer versions."""
        return cls(**config_values(cls, d, FIT_CONFIG_VERSION))


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class EvalResult:
    """Mean cross-entropy ``loss``, top-1 ``accuracy`` in [0, 1], and sample count ``n``."""

    loss: float
    accuracy: float
    n: int


@dataclass(frozen=True)
class EpochStats:
    """One epoch of ``fit``: training loss/accuracy (as trained), validation, lr, seconds."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    seconds: float


@dataclass(frozen=True)
class FitReport:
    """What ``fit`` did: per-epoch ``history`` and the best validation accuracy and epoch."""

    history: tuple[EpochStats, ...]
    best_val_accuracy: float | None
    best_epoch: int | None

    @property
    def seconds(self) -> float:
        """Total wall time of all epochs."""
        return sum(e.seconds for e in self.history)


@dataclass(frozen=True)
class _Hooks:
    loss_fn: LossFn
    after_backward: ModelHook | None
    after_step: ModelHook | None


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _batch_stats(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """(correct predictions, samples) of a batch of logits [N, C] and labels [N]."""
    return int((outputs.argmax(dim=1) == targets).sum()), int(targets.shape[0])


def evaluate(model: nn.Module, loader: Batches) -> EvalResult:
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``loader``.

    Runs in eval mode under ``torch.inference_mode`` and restores the model's previous mode.

    Args:
        model: a classifier mapping ``x`` to logits ``[N, num_classes]``.
        loader: yields ``(x, y)`` batches (``y`` int64 class indices).

    Returns:
        ``EvalResult(loss, accuracy, n)``.

    Raises:
        DataError: the loader yielded no samples.

    Example:
        >>> import torch
        >>> data = [(torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]))]
        >>> evaluate(torch.nn.Linear(3, 2), data).n
        4
    """
    was_training, device = model.training, _device_of(model)
    total_loss, correct, n = 0.0, 0, 0
    model.eval()
    try:
        with torch.inference_mode():
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                out = model(x)  # [B, num_classes]
                total_loss += float(F.cross_entropy(out, y, reduction="sum"))
                c, b = _batch_stats(out, y)
                correct, n = correct + c, n + b
    finally:
        model.train(was_training)
    if n == 0:
        raise DataError("evaluate: the loader yielded no samples")
    return EvalResult(loss=total_loss / n, accuracy=correct / n, n=n)


def make_optimizer(model: nn.Module, config: FitConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` names, over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("fit: the model has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return opt_cls(params, lr=config.lr, weight_decay=config.weight_decay)


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: FitConfig
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return None


def _train_epoch(
    model: nn.Module,
    loader: Batches,
    optimizer: torch.optim.Optimizer,
    hooks: _Hooks,
    advance: Callable[[], None],
) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, accuracy) as measured while training."""
    model.train()
    device = _device_of(model)
    total_loss, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)  # [B, num_classes]
        loss = hooks.loss_fn(model, out, y)  # scalar
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if hooks.after_backward is not None:
            hooks.after_backward(model)
        optimizer.step()
        if hooks.after_step is not None:
            hooks.after_step(model)
        c, b = _batch_stats(out.detach(), y)
        total_loss, correct, n = total_loss + float(loss.detach()) * b, correct + c, n + b
        advance()
    if n == 0:
        raise DataError("fit: the training loader yielded no samples")
    return total_loss / n, correct / n


def _rng_scope(model: nn.Module) -> AbstractContextManager[None]:
    """Fork torch's RNG (CPU, plus the model's CUDA device) so ``fit`` leaves it untouched."""
    device = _device_of(model)
    if device.type == "cuda":
        return torch.random.fork_rng(devices=[device], device_type="cuda")
    return torch.random.fork_rng(devices=[])


def _epoch_name(epoch: int, epochs: int, label: str) -> str:
    return f"{label} epoch {epoch + 1}/{epochs}".lstrip()


def _summary(stats: EpochStats, epochs: int, label: str = "") -> str:
    """One line: ``label epoch i/n: loss .. acc .., val loss .. acc .. (s)``."""
    val = "" if stats.val_accuracy is None else f", val loss {stats.val_loss:.4f}"
    val += "" if stats.val_accuracy is None else f" acc {stats.val_accuracy:.4f}"
    return (
        f"{_epoch_name(stats.epoch, epochs, label)}: loss {stats.train_loss:.4f} "
        f"acc {stats.train_accuracy:.4f}{val} ({stats.seconds:.1f} s)"
    )


def _report(history: list[EpochStats]) -> FitReport:
    scored = [e for e in history if e.val_accuracy is not None]
    best = max(scored, key=lambda e: e.val_accuracy or 0.0, default=None)
    return FitReport(
        history=tuple(history),
        best_val_accuracy=None if best is None else best.val_accuracy,
        best_epoch=None if best is None else best.epoch,
    )


def _epochs(
    model: nn.Module,
    train_loader: Batches,
    val_loader: Batches | None,
    config: FitConfig,
    hooks: _Hooks,
    bar: Progress,
    label: str,
) -> Iterable[EpochStats]:
    """Train epoch after epoch, yielding each epoch's stats."""
    optimizer = make_optimizer(model, config)
    scheduler = _make_scheduler(optimizer, config)
    total = len(train_loader) if hasattr(train_loader, "__len__") else None
    task = bar.add_task("train", total=total, status="")
    for epoch in range(config.epochs):
        start, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        bar.reset(task, total=total, description=_epoch_name(epoch, config.epochs, label))
        train_loss, train_acc = _train_epoch(
            model, train_loader, optimizer, hooks, lambda: bar.advance(task)
        )
        val = evaluate(model, val_loader) if val_loader is not None else None
        if scheduler is not None:
            scheduler.step()
        stats = EpochStats(
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=None if val is None else val.loss,
            val_accuracy=None if val is None else val.accuracy,
            lr=lr,
            seconds=time.perf_counter() - start,
        )
        bar.update(task, status=f"loss {train_loss:.4f}")
        yield stats


def fit(
    model: nn.Module,
    train_loader: Batches,
    val_loader: Batches | None = None,
    config: FitConfig = FitConfig(),
    progress: bool = True,
    callbacks: Sequence[Callable[[nn.Module, EpochStats], bool | None]] | None = None,
    *,
    loss_fn: LossFn | None = None,
    after_backward: ModelHook | None = None,
    after_step: ModelHook | None = None,
    label: str = "",
) -> FitReport:
    """Train ``model`` in place on ``train_loader``; validate after every epoch.

    Repeatable: torch's RNG is seeded with ``config.seed`` inside a forked RNG scope (the
    caller's RNG state is left as it was), so the same initial weights and freshly built
    loaders give bit-identical results.

    Args:
        model: a classifier mapping ``x`` to logits ``[N, num_classes]``.
        train_loader: yields ``(x, y)`` batches; it carries the batch size and shuffling.
        val_loader: optional validation batches, evaluated after every epoch.
        config: optimizer, schedule, epochs, seed.
        progress: one line per epoch; a rich bar above it when stdout is a terminal.
        callbacks: ``callback(model, stats)`` after each epoch; returning True stops training.
        loss_fn: ``loss_fn(model, outputs, targets) -> scalar``; default: cross-entropy with
            ``config.label_smoothing``.
        after_backward: ``hook(model)`` after ``backward``, before ``optimizer.step``.
        after_step: ``hook(model)`` after ``optimizer.step``.
        label: leads each epoch's line (``"prune 1/3 finetune"``: what the epochs are for).

    Returns:
        ``FitReport(history, best_val_accuracy, best_epoch)``.

    Example:
        >>> import torch
        >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
        >>> report = fit(torch.nn.Linear(4, 2), data, data, FitConfig(epochs=2), progress=False)
        >>> len(report.history), report.best_epoch in (0, 1)
        (2, True)
    """
    hooks = _Hooks(loss_fn or _cross_entropy(config.label_smoothing), after_backward, after_step)
    history: list[EpochStats] = []
    with _rng_scope(model), progress_bar(progress) as bar:
        torch.manual_seed(config.seed)
        for stats in _epochs(model, train_loader, val_loader, config, hooks, bar, label):
            history.append(stats)
            if progress:
                log_line(bar, _summary(stats, config.epochs, label))
            if any([bool(cb(model, stats)) for cb in callbacks or ()]):
                break
    return _report(history)


def _cross_entropy(label_smoothing: float) -> LossFn:
    """The default loss: mean cross-entropy of logits [N, C] against labels [N]."""

    def loss(model: nn.Module, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, label_smoothing=label_smoothing)

    return loss
