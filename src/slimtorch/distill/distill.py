"""The distillation step: a teacher's knowledge as ``fit``'s loss, in any training stage.

:class:`Distiller` plugs into :func:`slimtorch.train.fit` through its hooks, so every
fine-tuning stage of pruning or quantization can distill (by default from a frozen copy of the
model taken before compression) and a smaller student can learn from a trained teacher:

- a forward pre-hook on the student records each batch's input; ``loss_fn`` runs the frozen
  teacher on it and mixes soft targets, hard labels, hints and attention transfer;
- forward hooks record the named layers' outputs for hints / attention transfer;
- FitNets adapters are created at the first batch (their sizes come from the features) and
  trained by their own Adam optimizer, stepped in ``after_backward``.

Example:
    >>> import torch
    >>> from slimtorch.train import FitConfig, fit
    >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    >>> student = torch.nn.Linear(4, 2)
    >>> with Distiller(student, teacher=torch.nn.Linear(4, 2)) as kd:
    ...     report = fit(student, data, None, FitConfig(epochs=1), progress=False,
    ...                  loss_fn=kd.loss_fn, after_backward=kd.after_backward)
    >>> len(report.history)
    1
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from slimtorch.distill.losses import (
    AT_BETA,
    HintAdapter,
    attention_transfer_loss,
    hint_loss,
    kd_loss,
)
from slimtorch.errors import ConfigError
from slimtorch.train import Batches, FitConfig, FitReport, ModelHook, fit

DISTILL_CONFIG_VERSION = 1
DEFAULT_FIT_CONFIG = FitConfig()
LayerPairs = tuple[tuple[str, str], ...]  # (student module name, teacher module name)


@dataclass(frozen=True)
class DistillConfig:
    """What the student learns from the teacher.

    Attributes:
        temperature: softmax temperature T of the soft targets (> 0; 4 is common practice).
        alpha: weight of the soft-target term in [0, 1]; ``1 - alpha`` goes to the labels.
        hints: FitNets pairs ``(student module, teacher module)`` by qualified name.
        hint_weight: weight of the summed hint losses (>= 0).
        attention: attention-transfer pairs ``(student module, teacher module)``.
        attention_weight: weight of the summed attention losses (>= 0); ``AT_BETA / 2`` as in
            the authors' code.
        adapter_lr: Adam learning rate of the hint adapters.
        version: config schema version.

    Example:
        >>> DistillConfig(hints=(("conv2", "layer2"),)).hint_weight
        1.0
    """

    temperature: float = 4.0
    alpha: float = 0.9
    hints: LayerPairs = ()
    hint_weight: float = 1.0
    attention: LayerPairs = ()
    attention_weight: float = AT_BETA / 2
    adapter_lr: float = 1e-3
    version: int = DISTILL_CONFIG_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "hints", _pairs("hints", self.hints))
        object.__setattr__(self, "attention", _pairs("attention", self.attention))
        checks = [
            (_finite(self.temperature) and self.temperature > 0, "temperature must be > 0"),
            (_finite(self.alpha) and 0 <= self.alpha <= 1, "alpha must be in [0, 1]"),
            (_finite(self.hint_weight) and self.hint_weight >= 0, "hint_weight must be >= 0"),
            (
                _finite(self.attention_weight) and self.attention_weight >= 0,
                "attention_weight must be >= 0",
            ),
            (_finite(self.adapter_lr) and self.adapter_lr > 0, "adapter_lr must be > 0"),
            (self.version == DISTILL_CONFIG_VERSION, f"version must be {DISTILL_CONFIG_VERSION}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"DistillConfig: {message}, got {self}")

    def to_dict(self) -> dict[str, Any]:
        """The fields (pairs as lists), ready for JSON or TOML."""
        d = asdict(self)
        d["hints"] = [list(p) for p in self.hints]
        d["attention"] = [list(p) for p in self.attention]
        return d


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _pairs(field_name: str, pairs: Any) -> LayerPairs:
    try:
        out = tuple((str(s), str(t)) for s, t in pairs)
    except (TypeError, ValueError):
        raise ConfigError(
            f"DistillConfig.{field_name} must be (student_layer, teacher_layer) pairs"
        ) from None
    return out


def snapshot_teacher(model: nn.Module) -> nn.Module:
    """A frozen, eval-mode deep copy of ``model``: the teacher for later fine-tuning.

    Example:
        >>> t = snapshot_teacher(torch.nn.Linear(2, 2))
        >>> t.training, t.weight.requires_grad
        (False, False)
    """
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _module(model: nn.Module, name: str, role: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        known = ", ".join(n for n in list(modules)[1:12] if n)
        raise ConfigError(f"{role} has no module {name!r}; it has e.g. {known}")
    return modules[name]


class Distiller:
    """Teacher, hooks and adapters for distilling into ``student`` through ``fit``'s hooks.

    Args:
        student: the model being trained (pruned, quantized or just smaller).
        teacher: a trained model on the same inputs; None snapshots ``student`` now (create
            the Distiller before compressing to distill from the uncompressed model).
        config: temperature, alpha, hints, attention transfer.

    Use as a context manager (or call :meth:`close`) so the hooks are removed afterwards.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        config: DistillConfig = DistillConfig(),
    ) -> None:
        self.student = student
        self.teacher = snapshot_teacher(student if teacher is None else teacher)
        self.config = config
        self._input: tuple[Any, ...] | None = None
        self._feats: dict[tuple[str, str], Tensor] = {}
        self.adapters = nn.ModuleList()
        self._adapter_opt: torch.optim.Optimizer | None = None
        self._handles = [student.register_forward_pre_hook(self._record_input)]
        for s_name, t_name in {*config.hints, *config.attention}:
            self._watch(student, s_name, "student")
            self._watch(self.teacher, t_name, "teacher")

    def _record_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._input = args

    def _watch(self, model: nn.Module, name: str, role: str) -> None:
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            self._feats[(role, name)] = output

        self._handles.append(_module(model, name, role).register_forward_hook(hook))

    def teacher_logits(self) -> Tensor:
        """Run the teacher on the student's last input (no gradients)."""
        if self._input is None:
            raise ConfigError("Distiller.loss_fn ran before any student forward pass")
        with torch.no_grad():
            return self.teacher(*self._input)

    def loss_fn(self, model: nn.Module, outputs: Tensor, targets: Tensor) -> Tensor:
        """``fit``'s loss hook: KD (+ hints + attention transfer) for this batch."""
        cfg = self.config
        t_logits = self.teacher_logits()  # [N, C]; also fills the teacher's features
        loss = kd_loss(outputs, t_logits, targets, cfg.temperature, cfg.alpha)
        if cfg.hints and cfg.hint_weight > 0:
            feats = [
                (self._feats[("student", s)], self._feats[("teacher", t)]) for s, t in cfg.hints
            ]
            self._ensure_adapters(feats, outputs.device)
            hints = sum(hint_loss(s, t, a) for (s, t), a in zip(feats, self.adapters, strict=True))
            loss = loss + cfg.hint_weight * hints
        if cfg.attention and cfg.attention_weight > 0:
            at = sum(
                attention_transfer_loss(self._feats[("student", s)], self._feats[("teacher", t)])
                for s, t in cfg.attention
            )
            loss = loss + cfg.attention_weight * at
        return loss

    def _ensure_adapters(self, feats: list[tuple[Tensor, Tensor]], device: torch.device) -> None:
        if self._adapter_opt is not None:
            return
        for s, t in feats:
            self.adapters.append(HintAdapter.for_features(s, t).to(device))
        self._adapter_opt = torch.optim.Adam(self.adapters.parameters(), lr=self.config.adapter_lr)

    def after_backward(self, model: nn.Module) -> None:
        """``fit``'s after_backward hook: one step of the hint adapters' optimizer."""
        if self._adapter_opt is not None:
            self._adapter_opt.step()
            self._adapter_opt.zero_grad(set_to_none=True)

    def close(self) -> None:
        """Remove every hook from the student and the teacher."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._input = None
        self._feats.clear()

    def __enter__(self) -> Distiller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compose_hooks(*hooks: ModelHook | None) -> ModelHook:
    """One ``fit`` hook that calls each given hook in order (None entries skipped).

    Example:
        >>> calls = []
        >>> compose_hooks(lambda m: calls.append(1), None, lambda m: calls.append(2))(None)
        >>> calls
        [1, 2]
    """
    active: list[Callable[[nn.Module], None]] = [h for h in hooks if h is not None]

    def hook(model: nn.Module) -> None:
        for h in active:
            h(model)

    return hook


def distill(
    student: nn.Module,
    teacher: nn.Module,
    train_loader: Batches,
    val_loader: Batches | None = None,
    fit_config: FitConfig = DEFAULT_FIT_CONFIG,
    config: DistillConfig = DistillConfig(),
    progress: bool = True,
    *,
    after_backward: ModelHook | None = None,
    after_step: ModelHook | None = None,
) -> FitReport:
    """Train ``student`` in place to match ``teacher`` (and the labels).

    Args:
        student: the model to train.
        teacher: the trained teacher (copied and frozen; the original is not touched).
        train_loader: ``(x, y)`` batches.
        val_loader: optional validation batches.
        fit_config: optimizer, epochs, seed, as for ``fit``.
        config: the distillation objective.
        progress: show a progress bar.
        after_backward: extra hook after backward (e.g. mask gradients of a pruned student).
        after_step: extra hook after each optimizer step (e.g. re-apply masks).

    Returns:
        ``fit``'s :class:`~slimtorch.train.FitReport`.
    """
    with Distiller(student, teacher, config) as kd:
        return fit(
            student,
            train_loader,
            val_loader,
            fit_config,
            progress,
            loss_fn=kd.loss_fn,
            after_backward=compose_hooks(kd.after_backward, after_backward),
            after_step=after_step,
            label="distill",
        )
