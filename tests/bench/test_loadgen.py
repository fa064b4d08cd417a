"""The load generator on a virtual clock: exact latencies, queueing theory and the peak search.

Oracles: closed forms (a fixed service time gives fixed latencies and a capacity of
1 / service), an independent Lindley-recursion queue, the Pollaczek-Khinchine mean wait of an
M/D/1 queue, and numpy's percentiles.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from slimtorch.bench.clock import RealClock, SimulatedSUT, VirtualClock
from slimtorch.bench.loadgen import (
    find_peak_performance,
    run_scenario,
    run_server,
    server_schedule,
)
from slimtorch.bench.results import SUMMARY_PERCENTILES, summarize_latencies
from slimtorch.bench.samples import ListSamples
from slimtorch.bench.settings import TestSettings
from slimtorch.errors import ConfigError

QSL = ListSamples(list(range(50)))
SERVICE_S = 0.002  # capacity 1 / 2 ms = 500 queries/s


def _virtual(service_s: float = SERVICE_S, per_sample_s: float = 0.0):
    clock = VirtualClock()
    return clock, SimulatedSUT(clock, service_s, per_sample_s)


def test_singlestream_latency_is_the_service_time() -> None:
    clock, sut = _virtual(0.001, 0.0005)
    s = TestSettings("singlestream", min_query_count=10, min_duration_s=1.0)
    r = run_scenario(sut, QSL, s, clock=clock)
    assert r.valid and r.reasons == ()
    assert r.query_count == math.ceil(1.0 / 0.0015)  # runs until the minimum duration is met
    assert r.latencies_s == pytest.approx([0.0015] * r.query_count)
    assert r.metric == "p90 latency" and r.metric_value == pytest.approx(0.0015)


def test_multistream_queries_hold_eight_samples() -> None:
    clock, sut = _virtual(0.001, 0.0005)
    s = TestSettings("multistream", min_query_count=20, min_duration_s=0.0)
    r = run_scenario(sut, QSL, s, clock=clock)
    assert (r.query_count, r.sample_count) == (20, 160)
    assert r.metric == "p99 latency"
    assert r.metric_value == pytest.approx(0.001 + 8 * 0.0005)


def test_offline_throughput_is_batch_over_service() -> None:
    clock, sut = _virtual(0.004, 0.001)
    s = TestSettings("offline", offline_min_samples=640, offline_batch_size=64, min_duration_s=0)
    r = run_scenario(sut, QSL, s, clock=clock)
    per_batch = 0.004 + 64 * 0.001
    assert (r.query_count, r.sample_count) == (10, 640)
    assert r.metric_value == pytest.approx(64 / per_batch)
    assert r.latency.max_s == pytest.approx(10 * per_batch)  # completion of the last batch


def _lindley_latencies(arrivals: np.ndarray, service: float) -> np.ndarray:
    """Sojourn times of a FIFO single-server queue: W[n+1] = max(0, W[n] + S - gap[n+1])."""
    wait, out, gaps = 0.0, [], np.diff(arrivals, prepend=arrivals[0])
    for i, gap in enumerate(gaps):
        wait = 0.0 if i == 0 else max(0.0, wait + service - gap)
        out.append(wait + service)
    return np.asarray(out)


def test_server_latencies_match_a_lindley_queue() -> None:
    clock, sut = _virtual()
    s = TestSettings("server", min_query_count=100, min_duration_s=20.0,
                     server_target_qps=450.0, server_target_latency_s=1.0)  # fmt: skip
    r = run_server(sut, QSL, s, clock)
    expected = _lindley_latencies(server_schedule(s, 450.0), SERVICE_S)
    np.testing.assert_allclose(r.latencies_s, expected, atol=1e-9)
    assert r.valid and r.query_count == len(expected)


def test_server_mean_latency_matches_md1_pollaczek_khinchine() -> None:
    clock, sut = _virtual()
    rho = 0.5
    s = TestSettings("server", min_duration_s=200.0, server_target_qps=rho / SERVICE_S,
                     server_target_latency_s=1.0, seed=5)  # fmt: skip
    r = run_server(sut, QSL, s, clock)
    # M/D/1: mean wait = rho * S / (2 (1 - rho)); latency = wait + S
    expected = rho * SERVICE_S / (2 * (1 - rho)) + SERVICE_S
    assert r.latency.mean_s == pytest.approx(expected, rel=0.03)


def test_peak_search_finds_the_capacity_of_a_2ms_system() -> None:
    clock, sut = _virtual()
    s = TestSettings("server", min_duration_s=20.0, server_target_latency_s=0.05,
                     peak_rel_tol=0.01, server_target_qps=100.0)  # fmt: skip
    r = find_peak_performance(sut, QSL, s, clock)
    capacity = 1 / SERVICE_S
    assert r.valid and r.metric == "peak queries/s"
    assert 0.85 * capacity <= r.metric_value <= capacity
    valid = [t.target_qps for t in r.trials if t.valid]
    invalid = [t.target_qps for t in r.trials if not t.valid]
    assert max(valid) == r.metric_value and max(valid) < min(invalid)
    assert min(invalid) / max(valid) - 1 <= 0.01
    assert r.percentile_latency_s <= 0.05
    # deterministic: the same search on a fresh clock gives the same peak
    clock2, sut2 = _virtual()
    assert find_peak_performance(sut2, QSL, s, clock2).metric_value == r.metric_value


def test_peak_search_starting_too_high_halves_down() -> None:
    clock, sut = _virtual()
    s = TestSettings("server", min_duration_s=10.0, server_target_latency_s=0.05,
                     server_target_qps=5000.0)  # fmt: skip
    r = find_peak_performance(sut, QSL, s, clock)
    assert [t.target_qps for t in r.trials[:2]] == [5000.0, 2500.0]
    assert 0.8 * 500 <= r.metric_value <= 500
    assert any(t.stopped_early for t in r.trials)  # overloaded trials end early


def test_dynamic_batching_raises_server_capacity() -> None:
    # a + b n per call; batches of up to 8: capacity 8 / (a + 8 b) = 2000 q/s, vs 1/(a+b) = 444
    a, b = 0.002, 0.00025
    common = dict(min_duration_s=10.0, server_target_latency_s=0.05, server_target_qps=100.0)
    clock, sut = _virtual(a, b)
    plain = find_peak_performance(sut, QSL, TestSettings("server", **common), clock)
    clock, sut = _virtual(a, b)
    batched = TestSettings("server", server_max_batch=8, **common)
    peak = find_peak_performance(sut, QSL, batched, clock).metric_value
    assert plain.metric_value <= 1 / (a + b)
    assert 3 * plain.metric_value < peak <= 8 / (a + 8 * b)


def test_unmet_minimums_make_a_run_invalid() -> None:
    clock, sut = _virtual(0.1)
    s = TestSettings("singlestream", min_query_count=1000, min_duration_s=0.5,
                     max_duration_s=1.0)  # fmt: skip
    r = run_scenario(sut, QSL, s, clock=clock)
    assert not r.valid and r.query_count == 10
    assert any(x.startswith("min queries not met") for x in r.reasons)
    clock, sut = _virtual(0.1)
    over = run_server(sut, QSL, TestSettings("server", min_duration_s=5.0,
                                             server_target_qps=50.0), clock)  # fmt: skip
    assert not over.valid and any("over the bound" in x for x in over.reasons)


def test_latency_summary_matches_numpy() -> None:
    values = np.random.default_rng(0).lognormal(-7, 1, size=1001)
    summary = summarize_latencies(values.tolist())
    for q in SUMMARY_PERCENTILES:
        assert summary.percentiles[q] == float(np.percentile(values, q))
    assert (summary.min_s, summary.max_s) == (values.min(), values.max())
    assert summary.mean_s == pytest.approx(values.mean())
    known = summarize_latencies([float(v) for v in range(1, 101)]).percentiles
    assert (known[50.0], known[90.0], known[99.0]) == pytest.approx((50.5, 90.1, 99.01))


def test_real_clock_latencies_include_the_work() -> None:
    def sut(_batch: object) -> None:
        time.sleep(0.001)

    s = TestSettings("server", min_query_count=20, min_duration_s=0.1, server_target_qps=50.0,
                     server_target_latency_s=10.0, warmup_queries=1)  # fmt: skip
    r = run_scenario(sut, QSL, s, clock=RealClock())
    assert r.query_count >= 20 and min(r.latencies_s) >= 0.001


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"scenario": "bogus"}, "scenario"),
        ({"scenario": "server", "server_target_qps": 0.0}, "server_target_qps"),
        ({"scenario": "server", "server_target_qps": -3.0}, "server_target_qps"),
        ({"scenario": "server", "server_target_latency_s": 0.0}, "server_target_latency_s"),
        ({"scenario": "offline", "min_query_count": 0}, "min_query_count"),
        ({"scenario": "offline", "preset": "huge"}, "preset"),
        ({"scenario": "singlestream", "min_duration_s": 5.0, "max_duration_s": 1.0}, "max_dur"),
        ({"scenario": "server", "peak_rel_tol": 0.0}, "peak_rel_tol"),
    ],
)
def test_bad_settings_raise_one_line_errors(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        TestSettings(**kwargs)
    assert "\n" not in str(info.value)


def test_run_server_rejects_a_bad_rate() -> None:
    clock, sut = _virtual()
    with pytest.raises(ConfigError, match="rate"):
        run_server(sut, QSL, TestSettings("server"), clock, rate=-1.0)


def test_mlperf_preset_has_mlperf_minimums() -> None:
    s = {sc: TestSettings(sc, preset="mlperf") for sc in ("singlestream", "multistream")}
    assert (s["singlestream"].min_query_count, s["multistream"].min_query_count) == (1024, 662)
    server = TestSettings("server", preset="mlperf")
    assert (server.min_query_count, server.min_duration_s, server.max_duration_s) == (
        270336,
        600.0,
        None,
    )
    assert TestSettings("offline", preset="mlperf").offline_min_samples == 24576
    assert TestSettings.from_dict(server.to_dict()) == server
