"""Noise verdicts: closed-form spread figures, each rule on synthetic machine samples, and a
quiet measurement on a deterministic fake clock (no real timing is asserted)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch

from slimtorch.errors import ConfigError
from slimtorch.profile import noise, timing
from slimtorch.profile.noise import (
    MachineSample,
    Noise,
    coefficient_of_variation,
    judge_noise,
    noise_hint,
    other_busy_cores,
    probe_slowdown,
    torch_threads,
)


def _alternating(n: int, mean: float, d: float) -> list[float]:
    """``mean - d, mean + d, ...``: mean ``mean``, population std ``d`` (n even)."""
    return [mean - d if i % 2 == 0 else mean + d for i in range(n)]


QUIET_BEFORE = MachineSample(wall_s=0.0, self_cpu_s=0.0, busy_cpu_s=100.0, load1=0.0)
QUIET_AFTER = MachineSample(wall_s=1.0, self_cpu_s=1.0, busy_cpu_s=101.0, load1=0.0)


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([2.0, 2.0, 2.0], 0.0),
        ([1.0, 3.0], 0.5),
        ([1.0, 2.0, 3.0, 4.0], math.sqrt(1.25) / 2.5),
        (_alternating(10, 1.0, 0.1), 0.1),
        ([0.0, 0.0], 0.0),
    ],
)
def test_coefficient_of_variation_closed_form(samples: list[float], expected: float) -> None:
    assert coefficient_of_variation(samples) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_coefficient_of_variation_needs_samples() -> None:
    with pytest.raises(ConfigError):
        coefficient_of_variation([])


def test_quiet_synthetic_measurement_is_not_flagged() -> None:
    samples = _alternating(20, 1e-3, 1e-4)  # CV 0.1, below NOISY_CV
    verdict = judge_noise(
        samples, 2, 4, QUIET_BEFORE, QUIET_AFTER, ([1.0, 1.0, 1.1], [1.0, 1.05, 1.0])
    )
    assert not verdict.noisy and verdict.reasons == ()
    assert verdict.cv == pytest.approx(0.1)
    assert verdict.p50_s == pytest.approx(1e-3)  # median of 10 x 0.9 ms and 10 x 1.1 ms
    assert verdict.p90_s == pytest.approx(1.1e-3)
    assert verdict.samples == 20
    assert verdict.other_cores == pytest.approx(0.0)  # all busy time was our own
    assert verdict.probe_slowdown == pytest.approx(1.0)
    assert (verdict.load_before, verdict.window_s) == (0.0, 1.0)


def test_spread_above_the_threshold_is_flagged() -> None:
    verdict = judge_noise(_alternating(10, 1.0, 0.3), threads=1, cores=4)
    assert verdict.noisy and verdict.reasons == ("spread: CV 0.30 > 0.25",)


def test_spread_needs_three_samples() -> None:
    assert not judge_noise([1.0, 3.0], threads=1, cores=4).noisy  # CV 0.5, but 2 samples


def test_contention_counts_other_processes_on_spare_cores() -> None:
    after = MachineSample(wall_s=1.0, self_cpu_s=0.5, busy_cpu_s=102.5, load1=0.0)
    assert other_busy_cores(QUIET_BEFORE, after) == pytest.approx(2.0)
    busy = judge_noise(None, 2, 2, QUIET_BEFORE, after)  # no spare core: 2 > 0 + 0.5
    assert busy.noisy and busy.reasons[0].startswith("contention: other processes kept 2.0")
    assert not judge_noise(None, 1, 4, QUIET_BEFORE, after).noisy  # 3 spare cores


def test_short_window_or_no_accounting_is_not_judged() -> None:
    short = MachineSample(wall_s=0.1, self_cpu_s=0.0, busy_cpu_s=110.0, load1=0.0)
    assert other_busy_cores(QUIET_BEFORE, short) is None  # under ACCOUNTING_MIN_WINDOW_S
    blind = MachineSample(wall_s=1.0, self_cpu_s=0.0, busy_cpu_s=None, load1=0.0)
    assert other_busy_cores(QUIET_BEFORE, blind) is None


@pytest.mark.parametrize(("load", "flagged"), [(2.4, False), (2.6, True), (9.0, True)])
def test_load_average_beyond_our_own_threads(load: float, flagged: bool) -> None:
    before = MachineSample(0.0, 0.0, None, load)
    verdict = judge_noise(None, 2, 2, before, QUIET_AFTER)  # flags load - 2 > 0 + 0.5
    assert verdict.noisy is flagged


def test_probe_slowdown_rule() -> None:
    assert probe_slowdown([1.0, 1.0, 1.0], [3.0, 3.0, 1.0]) == 3.0
    assert probe_slowdown([], []) is None
    verdict = judge_noise(None, 1, 4, probe_s=([1.0, 1.0, 1.0], [3.0, 3.0, 1.0]))
    assert verdict.reasons == ("probe: a fixed workload ran 3.0x slower than its best",)


def test_more_threads_than_cores_is_flagged() -> None:
    assert judge_noise(None, 8, 2).reasons == ("oversubscribed: 8 threads on 2 cores",)


def test_noise_round_trips_through_a_dict() -> None:
    verdict = judge_noise(_alternating(10, 1.0, 0.3), 2, 4, QUIET_BEFORE, QUIET_AFTER)
    assert Noise.from_dict(verdict.to_dict()) == verdict


def test_hint_only_when_noisy() -> None:
    quiet = judge_noise([1.0, 1.0, 1.0], 1, 4)
    noisy = judge_noise(None, 8, 2)
    assert noise_hint([quiet, None]) is None
    hint = noise_hint([quiet, noisy])
    assert hint is not None and "--threads 1" in hint and "oversubscribed" in hint


def test_torch_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None) as n:
        assert n == before
    with pytest.raises(ConfigError, match="threads"), torch_threads(0):
        pass


class _FakeClock:
    """``perf_counter_ns`` advancing a fixed 1 ms per reading."""

    def __init__(self) -> None:
        self.ticks: Iterator[int] = iter(range(0, 10**12, 1_000_000))

    def perf_counter_ns(self) -> int:
        return next(self.ticks)


def test_quiet_fake_clock_measurement_is_not_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = iter([QUIET_BEFORE, QUIET_AFTER])
    monkeypatch.setattr(
        timing, "time", SimpleNamespace(perf_counter_ns=_FakeClock().perf_counter_ns)
    )
    monkeypatch.setattr(noise, "sample_machine", lambda cpus=None: next(samples))
    monkeypatch.setattr(noise, "run_probe", lambda repeats=5: [1e-4] * repeats)
    monkeypatch.setattr(noise, "usable_cpus", lambda: frozenset(range(4)))
    stats = timing.measure_latency(lambda x: x, 0, warmup=2, runs=10, threads=1)
    assert stats.samples_s == (1e-3,) * 10  # each call spans one clock step
    assert (stats.threads, stats.noisy) == (1, False)
    assert stats.cv == pytest.approx(0.0, abs=1e-12)
    assert stats.noise is not None and stats.noise.reasons == ()
    assert stats.noise.cores == 4 and stats.noise.probe_slowdown == 1.0
