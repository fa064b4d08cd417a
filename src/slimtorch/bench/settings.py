"""Test settings for the load generator: one frozen dataclass, laptop and MLPerf presets.

MLPerf's own values come from the MLPerf Inference rules and LoadGen's ``mlperf.conf``
(v4.x): a 600 s minimum run for every scenario; at least 1,024 queries for SingleStream, 662
for MultiStream, 270,336 for Server and 24,576 samples for Offline; the 90th-percentile latency
for SingleStream and the 99th for MultiStream and Server; 8 samples per MultiStream query; a
15 ms Server latency bound for ResNet-50. The ``laptop`` preset keeps every run to seconds.

Example:
    >>> s = TestSettings("multistream")
    >>> (s.samples_per_query, s.target_latency_percentile)
    (8, 99.0)
    >>> TestSettings("server", preset="mlperf").min_query_count
    270336
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from slimtorch.errors import ConfigError

SETTINGS_VERSION = 1
SCENARIOS = ("singlestream", "multistream", "server", "offline")
PRESETS = ("laptop", "mlperf")

# MLPerf Inference rules / LoadGen mlperf.conf (v4.x).
MLPERF_MIN_DURATION_S = 600.0
MLPERF_MIN_QUERY_COUNT = {"singlestream": 1024, "multistream": 662, "server": 270336, "offline": 1}
MLPERF_OFFLINE_MIN_SAMPLES = 24576
MLPERF_LATENCY_PERCENTILE = {
    "singlestream": 90.0,
    "multistream": 99.0,
    "server": 99.0,
    "offline": 90.0,
}
MLPERF_MULTISTREAM_SAMPLES_PER_QUERY = 8
MLPERF_RESNET50_SERVER_LATENCY_S = 0.015

# Laptop preset: seconds per run, enough queries for a stable p90/p99 on small models.
LAPTOP_MIN_DURATION_S = 1.0
LAPTOP_MAX_DURATION_S = 30.0
LAPTOP_MAX_OVER_MIN = 10.0  # the laptop cap is at least 10x the minimum duration
LAPTOP_MIN_QUERY_COUNT = {"singlestream": 256, "multistream": 128, "server": 256, "offline": 1}
LAPTOP_OFFLINE_MIN_SAMPLES = 2048
DEFAULT_SERVER_TARGET_QPS = 100.0
DEFAULT_OFFLINE_BATCH_SIZE = 64
DEFAULT_PEAK_REL_TOL = 0.05
DEFAULT_WARMUP_QUERIES = 10

# Sanity caps on user-set counts: the official MLPerf minimums are far below them (24,576
# offline samples, 270,336 queries), and a larger request would run for days or exhaust memory.
MAX_QUERY_COUNT = 10**7
MAX_BATCH = 2**16


def _scenario_defaults(scenario: str, preset: str) -> dict[str, Any]:
    mlperf = preset == "mlperf"
    return {
        "min_query_count": (MLPERF_MIN_QUERY_COUNT if mlperf else LAPTOP_MIN_QUERY_COUNT)[scenario],
        "min_duration_s": MLPERF_MIN_DURATION_S if mlperf else LAPTOP_MIN_DURATION_S,
        "samples_per_query": MLPERF_MULTISTREAM_SAMPLES_PER_QUERY
        if scenario == "multistream"
        else 1,
        "target_latency_percentile": MLPERF_LATENCY_PERCENTILE[scenario],
        "offline_min_samples": MLPERF_OFFLINE_MIN_SAMPLES if mlperf else LAPTOP_OFFLINE_MIN_SAMPLES,
    }


@dataclass(frozen=True)
class TestSettings:
    """How one scenario is run; fields left ``None`` take the scenario's and preset's default.

    Attributes:
        scenario: ``singlestream`` (p90 latency, 1 sample per query), ``multistream`` (p99
            latency, 8 samples per query), ``server`` (Poisson arrivals; the peak rate whose
            p99 latency meets the bound) or ``offline`` (samples/s).
        preset: ``laptop`` (runs of seconds) or ``mlperf`` (MLPerf's minimum query counts and
            600 s).
        min_query_count: queries (Offline: queries of ``offline_batch_size``) a run needs.
        min_duration_s: seconds a run needs (VALID only when both minimums are met).
        max_duration_s: stop a run after this many seconds; a run stopped before its
            minimums is INVALID (``mlperf``: no limit; ``laptop``: 30 s or 10x
            ``min_duration_s``, whichever is larger).
        samples_per_query: samples per query (1, or 8 for MultiStream).
        target_latency_percentile: the latency percentile that is the metric (or the bound).
        server_target_qps: Server arrival rate, and the starting point of the peak search.
        server_target_latency_s: Server bound on the percentile latency (MLPerf's ResNet-50
            bound).
        server_max_batch: the Server worker takes up to this many waiting queries per call
            (1: no batching; more: a dynamic-batching server).
        offline_min_samples: samples an Offline run needs.
        offline_batch_size: samples per system-under-test call in Offline.
        peak_rel_tol: the Server peak search stops when ``upper / lower - 1`` is below this.
        warmup_queries: untimed queries before the run.
        seed: seeds the sample order and the arrival times.
        version: settings format version.

    Example:
        >>> TestSettings("offline", offline_min_samples=100).offline_min_samples
        100
    """

    __test__ = False  # named like LoadGen's TestSettings; not a pytest test class

    scenario: str = field(default=SCENARIOS[0], metadata={"choices": SCENARIOS})
    preset: str = field(default=PRESETS[0], metadata={"choices": PRESETS})
    min_query_count: int | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    samples_per_query: int | None = None
    target_latency_percentile: float | None = None
    server_target_qps: float = DEFAULT_SERVER_TARGET_QPS
    server_target_latency_s: float = MLPERF_RESNET50_SERVER_LATENCY_S
    server_max_batch: int = 1
    offline_min_samples: int | None = None
    offline_batch_size: int = DEFAULT_OFFLINE_BATCH_SIZE
    peak_rel_tol: float = DEFAULT_PEAK_REL_TOL
    warmup_queries: int = DEFAULT_WARMUP_QUERIES
    seed: int = 0
    version: int = SETTINGS_VERSION

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ConfigError(
                f"scenario: expected one of {', '.join(SCENARIOS)}, got {self.scenario!r}"
            )
        if self.preset not in PRESETS:
            raise ConfigError(f"preset: expected one of {', '.join(PRESETS)}, got {self.preset!r}")
        for key, value in _scenario_defaults(self.scenario, self.preset).items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        if self.max_duration_s is None and self.preset == "laptop":
            cap = max(LAPTOP_MAX_DURATION_S, LAPTOP_MAX_OVER_MIN * self.min_duration_s)
            object.__setattr__(self, "max_duration_s", cap)
        self._validate()

    def _validate(self) -> None:
        counts = {"min_query_count": MAX_QUERY_COUNT, "offline_min_samples": MAX_QUERY_COUNT}
        counts |= dict.fromkeys(("samples_per_query", "server_max_batch"), MAX_BATCH)
        counts["offline_batch_size"] = MAX_BATCH
        for name, cap in counts.items():
            if not 1 <= int(getattr(self, name)) <= cap:
                raise ConfigError(
                    f"{name}: expected an integer in [1, {cap:,}], got {getattr(self, name)}"
                )
        _check(self.min_duration_s >= 0, "min_duration_s", ">= 0", self.min_duration_s)
        if self.max_duration_s is not None:
            _check(
                self.max_duration_s >= max(self.min_duration_s, 1e-9),
                "max_duration_s",
                f"> 0 and >= min_duration_s ({self.min_duration_s})",
                self.max_duration_s,
            )
        _check(
            0 < self.target_latency_percentile <= 100,
            "target_latency_percentile",
            "in (0, 100]",
            self.target_latency_percentile,
        )
        _check(_finite_positive(self.server_target_qps), "server_target_qps", "> 0",
               self.server_target_qps)  # fmt: skip
        _check(_finite_positive(self.server_target_latency_s), "server_target_latency_s", "> 0",
               self.server_target_latency_s)  # fmt: skip
        _check(0 < self.peak_rel_tol < 1, "peak_rel_tol", "in (0, 1)", self.peak_rel_tol)
        _check(self.warmup_queries >= 0, "warmup_queries", ">= 0", self.warmup_queries)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestSettings:
        """Settings from :meth:`to_dict` output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"settings: unknown field(s) {', '.join(unknown)}")
        return cls(**data)


def _finite_positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def _check(ok: bool, name: str, expected: str, got: object) -> None:
    if not ok:
        raise ConfigError(f"{name}: expected {expected}, got {got}")
