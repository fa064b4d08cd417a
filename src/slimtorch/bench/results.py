"""What a load-generator run produces: latency summaries, Server trials, scenario results.

Example:
    >>> summarize_latencies([0.001, 0.002, 0.003]).max_s
    0.003
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from slimtorch.bench.settings import TestSettings
from slimtorch.profile.noise import Noise, NoiseWatch
from slimtorch.profile.timing import percentile

# Scenarios whose latencies are back-to-back calls (their spread is the machine's); Server
# latencies include queueing and Offline ones are completion times, spread by design.
SPREAD_SCENARIOS = ("singlestream", "multistream")

# The percentiles LoadGen's mlperf_log_summary.txt lists.
SUMMARY_PERCENTILES = (50.0, 90.0, 95.0, 97.0, 99.0, 99.9)


@dataclass(frozen=True)
class LatencySummary:
    """Latency statistics in seconds; ``percentiles`` maps q -> value (numpy-exact)."""

    count: int
    min_s: float
    max_s: float
    mean_s: float
    percentiles: dict[float, float]


def summarize_latencies(latencies_s: Sequence[float]) -> LatencySummary:
    """Min, max, mean and the LoadGen summary percentiles of ``latencies_s`` (non-empty).

    Example:
        >>> summarize_latencies([1.0, 2.0, 3.0, 4.0]).percentiles[50.0]
        2.5
    """
    values = [float(v) for v in latencies_s]
    return LatencySummary(
        count=len(values),
        min_s=min(values),
        max_s=max(values),
        mean_s=sum(values) / len(values),
        percentiles={q: percentile(values, q) for q in SUMMARY_PERCENTILES},
    )


@dataclass(frozen=True)
class ServerTrial:
    """One Server run at one arrival rate during a peak search."""

    target_qps: float
    percentile_latency_s: float
    valid: bool
    queries: int
    stopped_early: bool


@dataclass(frozen=True)
class ScenarioResult:
    """The outcome of one scenario run (or of a Server peak search).

    Attributes:
        label: the system under test's name.
        settings: the settings it ran under.
        metric: what ``metric_value`` is (e.g. ``"p90 latency"``, ``"samples/s"``).
        metric_value: the scenario's figure (seconds for latencies; per second for rates).
        higher_is_better: True for rates, False for latencies.
        valid: VALID (True) or INVALID (False).
        reasons: why the run is INVALID (empty when VALID).
        query_count: queries completed.
        sample_count: samples completed.
        duration_s: first issue to last completion.
        percentile_latency_s: latency at ``settings.target_latency_percentile``.
        latency: summary of ``latencies_s``.
        latencies_s: per-query latency (Offline: per-sample completion time), in issue order.
        scheduled_qps: Server: queries scheduled per second (the realized Poisson rate).
        trials: Server peak search: every rate tried, in order.
        threads: torch threads the run used.
        noisy: the run was flagged noisy (see :mod:`slimtorch.profile.noise`).
        noise: the verdict and the figures it was judged on.
    """

    label: str
    settings: TestSettings
    metric: str
    metric_value: float
    higher_is_better: bool
    valid: bool
    reasons: tuple[str, ...]
    query_count: int
    sample_count: int
    duration_s: float
    percentile_latency_s: float
    latency: LatencySummary
    latencies_s: tuple[float, ...] = field(repr=False)
    scheduled_qps: float | None = None
    trials: tuple[ServerTrial, ...] = ()
    threads: int | None = None
    noisy: bool = False
    noise: Noise | None = None


def with_noise(result: ScenarioResult, watch: NoiseWatch) -> ScenarioResult:
    """``result`` with the thread count and the noise verdict of the watch around its run.

    The latencies' spread is judged in SingleStream and MultiStream only (see
    ``SPREAD_SCENARIOS``); every scenario is judged on contention, load and the probe.
    """
    spread = result.settings.scenario in SPREAD_SCENARIOS
    noise = watch.judge(result.latencies_s if spread else None)
    return replace(result, threads=noise.threads, noisy=noise.noisy, noise=noise)
