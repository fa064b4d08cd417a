"""A load generator in the spirit of MLCommons LoadGen: four scenarios and a peak search.

The system under test (SUT) is any callable taking what the query sample library's
``load(indices)`` returns (a stacked tensor for a model, a list for a generator); its output
is ignored here (accuracy mode scores it, see ``bench.accuracy``). A query's latency runs from
the moment it was scheduled to the moment the SUT returned:

- **SingleStream**: one sample per query; the next query is issued when the previous one
  completes. Metric: 90th-percentile latency.
- **MultiStream**: the same with 8 samples per query. Metric: 99th-percentile latency.
- **Server**: queries arrive as a seeded Poisson process at ``server_target_qps``; one worker
  serves them first-in first-out (up to ``server_max_batch`` waiting queries per call), so
  queueing delay counts. VALID when the 99th-percentile latency is within
  ``server_target_latency_s``. :func:`find_peak_performance` searches for the highest VALID
  rate, as LoadGen's FindPeakPerformance mode does.
- **Offline**: every sample is issued at time 0; the SUT takes them in batches of
  ``offline_batch_size``. Metric: samples per second.

A run is VALID only when it met ``min_query_count`` and ``min_duration_s`` (and, for Server,
the latency bound). Time comes from a clock (``bench.clock``): real by default, or a virtual
clock advanced by a simulated SUT, which makes every result exact and machine-independent.

Example:
    >>> from slimtorch.bench.clock import SimulatedSUT, VirtualClock
    >>> from slimtorch.bench.samples import ListSamples
    >>> clock = VirtualClock()
    >>> sut = SimulatedSUT(clock, service_s=0.002)
    >>> s = TestSettings("singlestream", min_query_count=10, min_duration_s=0.0)
    >>> r = run_scenario(sut, ListSamples(list(range(5))), s, clock=clock)
    >>> r.valid, round(r.metric_value, 9), r.query_count
    (True, 0.002, 10)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from slimtorch.bench.clock import Clock, RealClock
from slimtorch.bench.results import ScenarioResult, ServerTrial, summarize_latencies
from slimtorch.bench.samples import QuerySampleLibrary, SampleOrder, poisson_arrivals
from slimtorch.bench.settings import TestSettings
from slimtorch.errors import ConfigError
from slimtorch.profile.timing import percentile

SUT = Callable[[Any], Any]
MAX_PEAK_DOUBLINGS = 24  # 100 qps * 2**24: far beyond any SUT this harness will see
MAX_PEAK_HALVINGS = 16
WARMUP_SEED_OFFSET = 7919  # the warm-up draws from its own stream, leaving the run's order alone


def _minimum_reasons(settings: TestSettings, queries: int, duration: float) -> list[str]:
    reasons = []
    if queries < settings.min_query_count:
        reasons.append(f"min queries not met ({queries} < {settings.min_query_count})")
    if duration < settings.min_duration_s:
        reasons.append(f"min duration not met ({duration:.3f} s < {settings.min_duration_s} s)")
    return reasons


def _past(clock: Clock, start: float, limit: float | None) -> bool:
    return limit is not None and clock.now() - start >= limit


def _warmup(sut: SUT, qsl: QuerySampleLibrary, settings: TestSettings, per_call: int) -> None:
    order = SampleOrder(len(qsl), settings.seed + WARMUP_SEED_OFFSET)
    for _ in range(settings.warmup_queries):
        sut(qsl.load(order.take(per_call)))


def _result(
    label: str, settings: TestSettings, latencies: list[float], **kw: Any
) -> ScenarioResult:
    if not latencies:
        raise ConfigError(f"{label}: the run completed no query (max_duration_s too small?)")
    q = settings.target_latency_percentile
    return ScenarioResult(
        label=label,
        settings=settings,
        percentile_latency_s=percentile(latencies, q),
        latency=summarize_latencies(latencies),
        latencies_s=tuple(latencies),
        **kw,
    )


def run_stream(
    sut: SUT, qsl: QuerySampleLibrary, settings: TestSettings, clock: Clock, label: str = "sut"
) -> ScenarioResult:
    """SingleStream or MultiStream: issue a query, wait for it, issue the next.

    Args:
        sut: the system under test.
        qsl: the samples.
        settings: a ``singlestream`` or ``multistream`` ``TestSettings``.
        clock: real or virtual time.
        label: the SUT's name in the result.

    Returns:
        A ``ScenarioResult`` whose metric is the target-percentile latency in seconds.
    """
    per_query = settings.samples_per_query
    _warmup(sut, qsl, settings, per_query)
    order, latencies = SampleOrder(len(qsl), settings.seed), []
    start = clock.now()
    while (
        len(latencies) < settings.min_query_count or clock.now() - start < settings.min_duration_s
    ):
        if _past(clock, start, settings.max_duration_s):
            break
        batch = qsl.load(order.take(per_query))
        issued = clock.now()
        sut(batch)
        latencies.append(clock.now() - issued)
    duration = clock.now() - start
    reasons = _minimum_reasons(settings, len(latencies), duration)
    q = settings.target_latency_percentile
    return _result(
        label,
        settings,
        latencies,
        metric=f"p{q:g} latency",
        metric_value=percentile(latencies, q),
        higher_is_better=False,
        valid=not reasons,
        reasons=tuple(reasons),
        query_count=len(latencies),
        sample_count=len(latencies) * per_query,
        duration_s=duration,
    )


def run_offline(
    sut: SUT, qsl: QuerySampleLibrary, settings: TestSettings, clock: Clock, label: str = "sut"
) -> ScenarioResult:
    """Offline: all samples scheduled at time 0, served in batches; metric samples/s.

    The run keeps adding batches until it holds ``offline_min_samples`` samples and lasted
    ``min_duration_s`` (LoadGen sizes its one query the same way from the expected rate).
    Each sample's latency is the completion time of its batch, counted from the start.

    Args:
        sut: the system under test.
        qsl: the samples.
        settings: an ``offline`` ``TestSettings``.
        clock: real or virtual time.
        label: the SUT's name in the result.

    Returns:
        A ``ScenarioResult`` whose metric is samples per second.
    """
    size = settings.offline_batch_size
    _warmup(sut, qsl, settings, size)
    order, latencies, calls = SampleOrder(len(qsl), settings.seed), [], 0
    start = clock.now()
    while len(latencies) < settings.offline_min_samples or (
        clock.now() - start < settings.min_duration_s
    ):
        if _past(clock, start, settings.max_duration_s):
            break
        sut(qsl.load(order.take(size)))
        calls += 1
        latencies.extend([clock.now() - start] * size)
    duration = clock.now() - start
    reasons = _minimum_reasons(settings, calls, duration)
    if len(latencies) < settings.offline_min_samples:
        reasons.append(f"min samples not met ({len(latencies)} < {settings.offline_min_samples})")
    return _result(
        label,
        settings,
        latencies,
        metric="samples/s",
        metric_value=len(latencies) / duration if duration > 0 else math.inf,
        higher_is_better=True,
        valid=not reasons,
        reasons=tuple(reasons),
        query_count=calls,
        sample_count=len(latencies),
        duration_s=duration,
    )


def server_schedule(settings: TestSettings, rate: float) -> np.ndarray:
    """Arrival times for one Server run at ``rate``: enough queries for both minimums.

    Example:
        >>> s = TestSettings("server", min_query_count=10, min_duration_s=1.0)
        >>> t = server_schedule(s, 100.0); bool(t[-1] >= 1.0 and len(t) >= 10)
        True
    """
    count = max(settings.min_query_count, math.ceil(rate * settings.min_duration_s * 1.2) + 16)
    while True:
        t = poisson_arrivals(rate, count, settings.seed)
        enough = np.nonzero(t >= settings.min_duration_s)[0]
        if len(enough):
            return t[: max(settings.min_query_count, int(enough[0]) + 1)]
        count *= 2


def _certainly_over(n: int, q: float) -> int:
    """How many latencies above the bound make the q-th percentile of n exceed it for sure."""
    return n - math.floor((n - 1) * q / 100)


def _serve(
    sut: SUT,
    qsl: QuerySampleLibrary,
    arrivals: np.ndarray,
    clock: Clock,
    settings: TestSettings,
) -> tuple[list[float], str | None]:
    """Serve the arrivals FIFO with one worker; stop early once the run is surely INVALID."""
    n, bound = len(arrivals), settings.server_target_latency_s
    give_up = _certainly_over(n, settings.target_latency_percentile)
    indices = SampleOrder(len(qsl), settings.seed).take(n)
    start = clock.now()
    due = (arrivals + start).tolist()
    latencies: list[float] = []
    over, i = 0, 0
    while i < n:
        clock.sleep_until(due[i])
        now, j = clock.now(), i + 1
        last = min(n, i + settings.server_max_batch)
        while j < last and due[j] <= now:
            j += 1
        sut(qsl.load(indices[i:j]))
        done = clock.now()
        for t in due[i:j]:
            latencies.append(done - t)
            over += done - t > bound
        i = j
        if over >= give_up:
            return latencies, "stopped early: the percentile latency is certainly over the bound"
        if _past(clock, start, settings.max_duration_s):
            return latencies, "max duration reached"
    return latencies, None


def run_server(
    sut: SUT,
    qsl: QuerySampleLibrary,
    settings: TestSettings,
    clock: Clock,
    label: str = "sut",
    rate: float | None = None,
) -> ScenarioResult:
    """Server at one rate: Poisson arrivals, one FIFO worker, the latency bound checked.

    Args:
        sut: the system under test.
        qsl: the samples.
        settings: a ``server`` ``TestSettings``.
        clock: real or virtual time.
        label: the SUT's name in the result.
        rate: arrivals per second (default ``settings.server_target_qps``).

    Returns:
        A ``ScenarioResult``; the metric is the scheduled queries per second, VALID when the
        minimums are met and the target-percentile latency is within the bound.
    """
    rate = settings.server_target_qps if rate is None else rate
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"server target rate: expected > 0 queries/s, got {rate}")
    arrivals = server_schedule(settings, rate)
    _warmup(sut, qsl, settings, 1)
    start = clock.now()
    latencies, stop = _serve(sut, qsl, arrivals, clock, settings)
    duration = clock.now() - start
    q, bound = settings.target_latency_percentile, settings.server_target_latency_s
    p = percentile(latencies, q)
    reasons = [stop] if stop else []
    if p > bound:
        reasons.append(f"p{q:g} latency {p * 1e3:.3f} ms over the bound {bound * 1e3:.3f} ms")
    span = float(arrivals[min(len(latencies), len(arrivals)) - 1])
    reasons += _minimum_reasons(settings, len(latencies), span)
    scheduled = len(arrivals) / float(arrivals[-1])
    return _result(
        label,
        replace(settings, server_target_qps=rate),
        latencies,
        metric="scheduled queries/s",
        metric_value=scheduled,
        higher_is_better=True,
        valid=not reasons,
        reasons=tuple(reasons),
        query_count=len(latencies),
        sample_count=len(latencies),
        duration_s=duration,
        scheduled_qps=scheduled,
    )


def find_peak_performance(
    sut: SUT,
    qsl: QuerySampleLibrary,
    settings: TestSettings,
    clock: Clock,
    label: str = "sut",
) -> ScenarioResult:
    """The highest Server rate that is VALID, found as LoadGen's FindPeakPerformance does.

    Starting at ``settings.server_target_qps``, the rate doubles while runs stay VALID (or
    halves until one is), then a binary search narrows ``[lower VALID, upper INVALID]`` until
    ``upper / lower - 1 <= settings.peak_rel_tol``. Every trial reuses the same seeded arrival
    gaps, scaled to its rate, so latency grows monotonically with the rate.

    Args:
        sut: the system under test.
        qsl: the samples.
        settings: a ``server`` ``TestSettings``.
        clock: real or virtual time.
        label: the SUT's name in the result.

    Returns:
        The result of the run at the peak rate, with ``metric_value`` = that rate (0 and
        INVALID when no rate down to ``target / 2**16`` is VALID) and every trial in ``trials``.
    """
    trials: list[ServerTrial] = []

    def trial(rate: float) -> ScenarioResult:
        r = run_server(sut, qsl, settings, clock, label, rate)
        stopped = any(s.startswith("stopped early") for s in r.reasons)
        trials.append(ServerTrial(rate, r.percentile_latency_s, r.valid, r.query_count, stopped))
        return r

    lo = settings.server_target_qps
    best, hi = trial(lo), None
    if best.valid:
        for _ in range(MAX_PEAK_DOUBLINGS):
            r = trial(2 * lo)
            if not r.valid:
                hi = 2 * lo
                break
            lo, best = 2 * lo, r
    else:
        hi = lo
        for _ in range(MAX_PEAK_HALVINGS):
            lo = hi / 2
            r = trial(lo)
            if r.valid:
                best = r
                break
            hi = lo
        else:
            reason = f"no VALID rate down to {lo:.4g} queries/s"
            return replace(best, metric="peak queries/s", metric_value=0.0, valid=False,
                           reasons=(*best.reasons, reason), trials=tuple(trials))  # fmt: skip
    while hi is not None and hi / lo - 1 > settings.peak_rel_tol:
        mid = (lo + hi) / 2
        r = trial(mid)
        lo, hi, best = (mid, hi, r) if r.valid else (lo, mid, best)
    return replace(best, metric="peak queries/s", metric_value=lo, trials=tuple(trials))


def run_scenario(
    sut: SUT,
    qsl: QuerySampleLibrary,
    settings: TestSettings,
    *,
    clock: Clock | None = None,
    label: str = "sut",
    find_peak: bool = False,
) -> ScenarioResult:
    """Run ``settings.scenario`` on ``sut`` (performance mode).

    Args:
        sut: the system under test: ``sut(qsl.load(indices))``; the output is not used.
        qsl: the samples (``TensorSamples``, ``ListSamples`` or your own).
        settings: the scenario and its settings.
        clock: ``RealClock()`` (default) or a ``VirtualClock`` advanced by a simulated SUT.
        label: the SUT's name in the result.
        find_peak: Server only: search for the peak VALID rate instead of running at
            ``settings.server_target_qps``.

    Returns:
        A ``ScenarioResult``.

    Example:
        >>> from slimtorch.bench.clock import SimulatedSUT, VirtualClock
        >>> from slimtorch.bench.samples import ListSamples
        >>> c = VirtualClock()
        >>> s = TestSettings("offline", offline_min_samples=640, min_duration_s=0.0)
        >>> r = run_scenario(SimulatedSUT(c, 0.0, 0.001), ListSamples([0]), s, clock=c)
        >>> round(r.metric_value, 6)
        1000.0
    """
    clock = clock or RealClock()
    if settings.scenario in ("singlestream", "multistream"):
        return run_stream(sut, qsl, settings, clock, label)
    if settings.scenario == "offline":
        return run_offline(sut, qsl, settings, clock, label)
    if find_peak:
        return find_peak_performance(sut, qsl, settings, clock, label)
    return run_server(sut, qsl, settings, clock, label)
