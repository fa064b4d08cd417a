"""``ProfileConfig``: what :func:`slimtorch.profile.profile_model` measures, and how."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from slimtorch.core.size import WeightFormat
from slimtorch.errors import ConfigError
from slimtorch.profile.memory import OPTIMIZER_STATES

PROFILE_FORMAT_VERSION = 1
MAX_RUNS = 10**6  # timed runs or warm-ups: beyond this a profile runs for hours, not a figure more


@dataclass(frozen=True)
class ProfileConfig:
    """What to measure.

    Args:
        latency: time the model: whole-model latency (warm-up, repeated runs,
            median/p90/p99), then per-layer latency and the throughput sweep if asked; off
            skips all timing.
        warmup: untimed runs before timing.
        runs: timed runs for the latency figure.
        layer_latency: with ``latency``, also time every leaf module (hooks around each
            forward).
        throughput_batch_sizes: with ``latency``, batch sizes for the throughput sweep; empty
            to skip it.
        roofline: place layers on the machine's roofline (bandwidth and peak FLOP/s measured
            once and cached).
        optimizer: optimizer assumed by the training-memory estimate: ``adam`` (2 states per
            parameter), ``sgd-momentum`` (1) or ``sgd`` (0).
        act_bits: bit width of activations for the energy estimate.
        formats: weight storage formats by parameter/module name or regex (first match wins);
            parameters without a match are sized at their own dtype, dense or sparse,
            whichever is smaller.
        threads: torch intra-op threads for every timing and the machine peaks (restored
            afterwards); None keeps torch's current setting. Recorded with each figure.
    """

    latency: bool = True
    warmup: int = 5
    runs: int = 30
    layer_latency: bool = True
    throughput_batch_sizes: tuple[int, ...] = (1, 8, 32, 128)
    roofline: bool = True
    optimizer: str = "adam"
    act_bits: int = 32
    formats: Mapping[str, WeightFormat] = field(default_factory=dict)
    threads: int | None = None
    version: int = PROFILE_FORMAT_VERSION

    def __post_init__(self) -> None:
        if not (0 <= self.warmup <= MAX_RUNS and 1 <= self.runs <= MAX_RUNS):
            raise ConfigError(
                f"profile: runs must be in [1, {MAX_RUNS:,}] and warmup in [0, {MAX_RUNS:,}], "
                f"got runs={self.runs}, warmup={self.warmup}"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"profile: threads must be >= 1, got {self.threads}")
        if any(b < 1 for b in self.throughput_batch_sizes):
            raise ConfigError("profile: throughput batch sizes must be positive integers")
        if not 1 <= self.act_bits <= 32:
            raise ConfigError(f"profile: act_bits must be in 1..32, got {self.act_bits}")
        if self.optimizer not in OPTIMIZER_STATES:
            raise ConfigError(
                f"profile: optimizer must be adam, sgd or sgd-momentum, got {self.optimizer!r}"
            )
