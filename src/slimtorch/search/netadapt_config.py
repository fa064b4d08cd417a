"""NetAdapt's config and what a search returns: :class:`NetAdaptConfig`, the per-iteration
:class:`IterationRecord` (with every group's :class:`Proposal`) and :class:`NetAdaptResult`
(see :mod:`slimtorch.search.netadapt`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from slimtorch.core.config import check_fields, config_values, is_int
from slimtorch.models import ModelSpec
from slimtorch.prune.channel_importance import IMPORTANCE
from slimtorch.train import OPTIMIZERS

NETADAPT_CONFIG_VERSION = 1
# The resource reduction schedule of the authors' reference implementation (denru01/netadapt,
# master.py defaults, also its MobileNet latency script): 2.5% of the original, decaying 0.96.
REFERENCE_INIT_REDUCTION = 0.025
REFERENCE_REDUCTION_DECAY = 0.96

Latency = Callable[[nn.Module], float]
COSTS: tuple[str, ...] = ("latency", "macs")  # what a budget counts (NetAdaptConfig.cost)
STOPPED = "stopped by a callback"  # a NetAdaptResult.stop_reason: no long-term fine-tune


@dataclass(frozen=True)
class NetAdaptConfig:
    """How NetAdapt searches.

    Attributes:
        budget_ratio: the latency budget as a fraction of the original latency, in (0, 1).
        budget_seconds: an absolute latency budget in the latency callable's unit; replaces
            budget_ratio when set.
        init_reduction: the first iteration's latency reduction, as a fraction of the
            original latency, in (0, 1).
        reduction_decay: each iteration's reduction is the previous one times this, in (0, 1].
        short_term_batches: training minibatches of each proposal's short-term fine-tune
            (0: score proposals without fine-tuning).
        short_term_lr: learning rate of the short-term fine-tunes.
        long_term_epochs: epochs of the final long-term fine-tune (0: none).
        long_term_lr: learning rate of the long-term fine-tune (cosine-annealed).
        optimizer: optimizer of both fine-tunes (adam, adamw or sgd).
        batch_size: minibatch size of both fine-tunes and of scoring.
        val_samples: validation samples (a seeded subset) that score the proposals; 0: all.
        importance: which channels a proposal keeps: l1, l2 or bn (channel importance).
        min_channels: never cut a channel group below this many channels.
        round_to: proposals keep a multiple of this many channels.
        seed: seeds the validation subset and every proposal's fine-tune.
        max_iterations: stop after this many iterations even above the budget (a resumed
            search may raise it).
        cost: what the budget counts when the command line or a recipe runs the search:
            latency (this machine's measured lookup table) or macs. The Python API takes the
            cost as its ``latency`` callable instead.
        latency_batch: the batch size the latency cost is measured at.
    """

    budget_ratio: float = 0.5
    budget_seconds: float | None = None
    init_reduction: float = REFERENCE_INIT_REDUCTION
    reduction_decay: float = REFERENCE_REDUCTION_DECAY
    short_term_batches: int = 40  # ~2 epochs of digits (the reference code: 10 to 500 batches)
    short_term_lr: float = 1e-3
    long_term_epochs: int = 10
    long_term_lr: float = 1e-3
    optimizer: str = "adam"
    batch_size: int = 64
    val_samples: int = 0
    importance: str = "l1"
    min_channels: int = 1
    round_to: int = 1
    seed: int = 0
    max_iterations: int = 100
    cost: str = field(default="latency", metadata={"choices": COSTS})
    latency_batch: int = 1

    def __post_init__(self) -> None:
        check_fields(self, _checks(self))

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``"version"``, ready for JSON or TOML."""
        return {"version": NETADAPT_CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetAdaptConfig:
        """Inverse of :meth:`to_dict`; refuses unknown fields and newer versions."""
        return cls(**config_values(cls, d, NETADAPT_CONFIG_VERSION))


def _is_real(x: object, low: float, high: float) -> bool:
    ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    return ok and low < x < high


def _checks(c: NetAdaptConfig) -> list[tuple[str, bool, str]]:
    seconds = c.budget_seconds is None or _is_real(c.budget_seconds, 0, math.inf)
    return [
        ("budget_ratio", _is_real(c.budget_ratio, 0, 1), "a number in (0, 1)"),
        ("budget_seconds", seconds, "None or a number > 0"),
        ("init_reduction", _is_real(c.init_reduction, 0, 1), "a number in (0, 1)"),
        ("reduction_decay", _is_real(c.reduction_decay, 0, 1.0000001), "a number in (0, 1]"),
        ("short_term_batches", is_int(c.short_term_batches), "an int >= 0"),
        ("short_term_lr", _is_real(c.short_term_lr, 0, math.inf), "a number > 0"),
        ("long_term_epochs", is_int(c.long_term_epochs), "an int >= 0"),
        ("long_term_lr", _is_real(c.long_term_lr, 0, math.inf), "a number > 0"),
        ("optimizer", c.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
        ("batch_size", is_int(c.batch_size, 1), "an int >= 1"),
        ("cost", c.cost in COSTS, f"one of {', '.join(COSTS)}"),
        ("latency_batch", is_int(c.latency_batch, 1), "an int >= 1"),
        ("val_samples", is_int(c.val_samples), "an int >= 0"),
        ("importance", c.importance in IMPORTANCE, f"one of {', '.join(IMPORTANCE)}"),
        ("min_channels", is_int(c.min_channels, 1), "an int >= 1"),
        ("round_to", is_int(c.round_to, 1), "an int >= 1"),
        ("seed", is_int(c.seed), "an int >= 0"),
        ("max_iterations", is_int(c.max_iterations, 1), "an int >= 1"),
    ]


@dataclass(frozen=True)
class Proposal:
    """One group's proposal in one iteration: its channel count, latency, accuracy, seed."""

    group: str
    channels: int
    latency: float
    accuracy: float
    seed: int


@dataclass(frozen=True)
class IterationRecord:
    """The model after one iteration (iteration 0: the original).

    Attributes:
        iteration: 0 for the original model, then 1, 2, ...
        latency: the model's latency (the latency callable's unit).
        accuracy: validation-subset accuracy (after the short-term fine-tune).
        target: the latency this iteration had to meet (None for iteration 0).
        group: the channel group the chosen proposal cut (None for iteration 0).
        channels: channel count of every prunable group, by group name.
        proposals: every group's proposal this iteration, in group order.
    """

    iteration: int
    latency: float
    accuracy: float
    target: float | None
    group: str | None
    channels: dict[str, int]
    proposals: tuple[Proposal, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (proposals as dicts)."""
        return {**asdict(self), "proposals": [asdict(p) for p in self.proposals]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IterationRecord:
        """Inverse of :meth:`to_dict`."""
        proposals = tuple(Proposal(**p) for p in d["proposals"])
        return cls(**{**d, "channels": dict(d["channels"]), "proposals": proposals})


@dataclass(frozen=True)
class NetAdaptResult:
    """What :func:`netadapt` found.

    Attributes:
        model: the final model: an ordinary, smaller model (long-term fine-tuned unless a
            callback stopped the search).
        trajectory: one record per iteration, iteration 0 (the original) first.
        original_latency: the original model's latency.
        budget: the latency budget.
        stop_reason: ``budget met``, ``max_iterations reached``, ``no group meets the
            target`` or ``stopped by a callback``.
        val_accuracy: the final model's accuracy on the whole validation split.
        test_accuracy: its accuracy on the test split (None without one).
        spec: a :func:`~slimtorch.prune.surgery.pruned_spec` that rebuilds ``model`` for
            ``save_checkpoint`` (None when no base spec was given).
        config: the search's config.
    """

    model: nn.Module
    trajectory: tuple[IterationRecord, ...]
    original_latency: float
    budget: float
    stop_reason: str
    val_accuracy: float
    test_accuracy: float | None
    spec: ModelSpec | None
    config: NetAdaptConfig

    @property
    def latency(self) -> float:
        """The final model's latency."""
        return self.trajectory[-1].latency

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model, JSON-able."""
        return {
            "config": self.config.to_dict(),
            "original_latency": self.original_latency,
            "budget": self.budget,
            "latency": self.latency,
            "met_budget": self.latency <= self.budget,
            "stop_reason": self.stop_reason,
            "val_accuracy": self.val_accuracy,
            "test_accuracy": self.test_accuracy,
            "long_term_epochs": 0 if self.stop_reason == STOPPED else self.config.long_term_epochs,
            "trajectory": [r.to_dict() for r in self.trajectory],
        }


Callback = Callable[[IterationRecord], bool | None]
