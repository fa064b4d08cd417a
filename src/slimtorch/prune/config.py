"""``PruneConfig``: one frozen, validated, versioned config for ``prune_model`` and the CLI."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from slimtorch.core.config import config_values
from slimtorch.core.granularity import (
    NM,
    PRUNE_KINDS,
    Element,
    Granularity,
    PerChannel,
    format_granularity,
    parse_granularity,
)
from slimtorch.errors import ConfigError
from slimtorch.prune.masks import check_sparsity

PRUNE_CONFIG_VERSION = 1
CRITERIA: tuple[str, ...] = (
    "l1",
    "l2",
    "linf",
    "random",
    "bn_gamma",
    "apoz",
    "taylor",
    "obd_fisher",
    "obd_hutchinson",
    "obs",
    "regression_lasso",
    "regression_greedy",
)
CHANNEL_ONLY = ("bn_gamma", "apoz")  # scores of whole output channels
ALLOCATIONS: tuple[str, ...] = ("uniform", "global")
SCHEDULES: tuple[str, ...] = ("oneshot", "iterative", "gradual")
LR_SCHEDULERS: tuple[str, ...] = ("none", "cosine")  # as slimtorch.train.FitConfig.scheduler


@dataclass(frozen=True)
class PruneConfig:
    """How to prune: what (granularity), by which criterion, how much where, on what schedule.

    Attributes:
        granularity: what one pruned group is: ``element``, ``N:M`` (e.g. ``2:4``, along the
            input dim), ``vector[:AXIS]``, ``kernel``, ``channel`` (output filters) or
            ``input-channel``; the spelling is parsed into its type (``Element()``,
            ``NM(2, 4)``, ``Vector(axis)``, ``Kernel()``, ``PerChannel(0 or 1)``; see
            :mod:`slimtorch.core.granularity`).
        criterion: how groups are scored, one of ``CRITERIA`` (weight norms, random,
            BatchNorm gamma, APoZ, Taylor, OBD/OBS, input-channel regression).
        sparsity: the target fraction of each pruned layer's groups, in [0, 1) (ignored for N:M).
        allocation: ``uniform`` (every layer at ``sparsity``) or ``global`` (one threshold
            across layers on the groups' mean score, removing ``sparsity`` of all groups;
            per-layer overrides do not apply).
        layers: per-layer sparsity overrides, qualified name or regex (full match) -> sparsity.
        exclude: regexes (full match) of layers never pruned.
        schedule: ``oneshot``, ``iterative`` (prune, fine-tune, repeat) or ``gradual`` (Zhu &
            Gupta's cubic ramp during fine-tuning).
        iterations: prune steps of the iterative and gradual schedules.
        finetune_epochs: fine-tuning epochs (per iteration for ``iterative``; total for
            ``gradual``, which needs at least 1).
        lr: fine-tuning learning rate (Adam).
        scheduler: the learning-rate schedule of each fine-tuning run (``none`` or ``cosine``,
            annealed to 0 over that run's epochs: every round of ``iterative`` restarts it).
        calib_batches: calibration batches for data-driven criteria.
        seed: seeds fine-tuning and random choices.

    Example:
        >>> PruneConfig(granularity="2:4").granularity
        NM(n=2, m=4)
    """

    granularity: Granularity = field(default_factory=Element)
    criterion: str = "l1"
    sparsity: float = 0.5
    allocation: str = "uniform"
    layers: dict[str, float] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    schedule: str = "oneshot"
    iterations: int = 3
    finetune_epochs: int = 0
    lr: float = 1e-3
    scheduler: str = "none"
    calib_batches: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        g = parse_granularity(self.granularity, PRUNE_KINDS, "PruneConfig.granularity")
        object.__setattr__(self, "granularity", g)
        check_sparsity(self.sparsity, "PruneConfig.sparsity")
        for pattern, s in self.layers.items():
            check_sparsity(s, f"PruneConfig.layers[{pattern!r}]")
            _compile(pattern, "layers")
        for pattern in self.exclude:
            _compile(pattern, "exclude")
        _check_choice("criterion", self.criterion, CRITERIA)
        _check_choice("allocation", self.allocation, ALLOCATIONS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("scheduler", self.scheduler, LR_SCHEDULERS)
        _check_int("iterations", self.iterations, 1)
        _check_int("finetune_epochs", self.finetune_epochs, 0)
        _check_int("calib_batches", self.calib_batches, 1)
        _check_int("seed", self.seed, 0)
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"PruneConfig.lr must be a number > 0, got {self.lr!r}")
        _check_compatible(self, g)

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``"version"``, ready for JSON."""
        d = asdict(self)
        d["granularity"] = format_granularity(self.granularity)
        d["exclude"] = list(self.exclude)
        return {"version": PRUNE_CONFIG_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PruneConfig:
        """Inverse of :meth:`to_dict`; refuses unknown fields and newer versions."""
        values = config_values(cls, d, PRUNE_CONFIG_VERSION)
        if "exclude" in values:
            values["exclude"] = tuple(values["exclude"])
        return cls(**values)


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"PruneConfig.{what}: {pattern!r} is not a valid regex: {exc}") from None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"PruneConfig.{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_int(name: str, value: int, low: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise ConfigError(f"PruneConfig.{name} must be an int >= {low}, got {value!r}")


def _check_compatible(cfg: PruneConfig, g: Granularity) -> None:
    if cfg.criterion in CHANNEL_ONLY and g != PerChannel(0):
        raise ConfigError(
            f"criterion {cfg.criterion} scores whole output channels; use --granularity channel"
        )
    if cfg.criterion == "obs" and g != Element():
        raise ConfigError("criterion obs removes single weights; use --granularity element")
    if cfg.criterion.startswith("regression") and not isinstance(g, PerChannel):
        raise ConfigError(
            f"criterion {cfg.criterion} selects input channels; use --granularity input-channel"
        )
    if cfg.allocation == "global" and (isinstance(g, NM) or cfg.criterion == "obs"):
        raise ConfigError("allocation global does not apply to N:M or OBS; use uniform")
    if cfg.schedule == "gradual" and cfg.finetune_epochs < 1:
        raise ConfigError("schedule gradual prunes while fine-tuning: finetune_epochs >= 1")
