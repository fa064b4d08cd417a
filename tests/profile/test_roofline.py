"""Roofline math on synthetic peaks; measurement, cache and plot as properties."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtorch.errors import ConfigError
from slimtorch.profile import roofline
from slimtorch.profile.roofline import (
    MachinePeaks,
    cpu_model,
    default_cache_path,
    load_or_measure_machine,
    measure_machine,
    plot_roofline,
    roofline_point,
    roofline_time_s,
)

PEAKS = MachinePeaks(
    bandwidth_bytes_per_s=20e9,
    peak_flops_per_s=100e9,
    threads=2,
    measured_at="2025-01-01T00:00:00+00:00",
    how="synthetic",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_ridge_is_peak_over_bandwidth() -> None:
    assert roofline_point(1, 1, PEAKS).ridge_intensity == pytest.approx(5.0)


def test_below_ridge_is_memory_bound() -> None:
    p = roofline_point(flops=2000, bytes_moved=1000, peaks=PEAKS)  # I = 2 < 5
    assert p.intensity == 2.0
    assert p.bound == "memory"
    assert p.attainable_flops_per_s == pytest.approx(2.0 * 20e9)


def test_at_and_above_ridge_is_compute_bound() -> None:
    assert roofline_point(5000, 1000, PEAKS).bound == "compute"
    p = roofline_point(50_000, 1000, PEAKS)
    assert (p.bound, p.attainable_flops_per_s) == ("compute", 100e9)


def test_edge_counts() -> None:
    no_bytes = roofline_point(10, 0, PEAKS)
    assert (no_bytes.intensity, no_bytes.bound) == (math.inf, "compute")
    no_flops = roofline_point(0, 10, PEAKS)
    assert (no_flops.attainable_flops_per_s, no_flops.bound) == (0.0, "memory")
    with pytest.raises(ConfigError):
        roofline_point(-1, 10, PEAKS)


@given(st.integers(0, 10**12), st.integers(1, 10**12))
def test_attainable_is_the_lower_roof(flops: int, bytes_moved: int) -> None:
    p = roofline_point(flops, bytes_moved, PEAKS)
    roofs = (PEAKS.peak_flops_per_s, p.intensity * PEAKS.bandwidth_bytes_per_s)
    assert p.attainable_flops_per_s == min(roofs)
    assert (p.bound == "memory") == (p.intensity < p.ridge_intensity)


def test_roofline_time_is_the_slower_resource() -> None:
    assert roofline_time_s(100 * 10**9, 10**9, PEAKS) == pytest.approx(1.0)  # compute
    assert roofline_time_s(10**9, 40 * 10**9, PEAKS) == pytest.approx(2.0)  # memory


def test_measure_machine_tiny_budget_gives_finite_positive_figures() -> None:
    before = torch.get_num_threads()
    peaks = measure_machine(0.01, threads=1, stream_bytes=2**20, matmul_n=64)
    assert math.isfinite(peaks.bandwidth_bytes_per_s) and peaks.bandwidth_bytes_per_s > 0
    assert math.isfinite(peaks.peak_flops_per_s) and peaks.peak_flops_per_s > 0
    assert peaks.threads == 1
    assert torch.get_num_threads() == before
    assert "x.sum()" in peaks.how and "matmul" in peaks.how
    assert peaks.measured_at[:4].isdigit()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _fake_measure(calls: list[int], noisy: bool = False):  # type: ignore[no-untyped-def]
    """A measure_machine stand-in: bandwidth counts the calls; stamped like a real one."""

    def measure(seconds: float = 1.0, threads: int | None = None) -> MachinePeaks:
        calls.append(threads or 0)
        return MachinePeaks(
            1e9 * len(calls), 2e9, threads or 1, _now(), "fake", torch.__version__,
            cpu_model(), 0.5, noisy,
        )  # fmt: skip

    return measure


def test_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(roofline, "measure_machine", _fake_measure(calls))
    cache = tmp_path / "sub" / "machine.json"
    first = load_or_measure_machine(cache, threads=2)
    second = load_or_measure_machine(cache, threads=2)
    assert first == second and len(calls) == 1
    assert json.loads(cache.read_text())["bandwidth_bytes_per_s"] == 1e9
    assert [p.name for p in cache.parent.iterdir()] == ["machine.json"]  # no temp left
    assert load_or_measure_machine(cache, threads=2, refresh=True).bandwidth_bytes_per_s == 2e9
    assert load_or_measure_machine(cache, threads=1).threads == 1  # other thread count
    assert len(calls) == 3


def test_corrupt_cache_is_remeasured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(roofline, "measure_machine", _fake_measure(calls))
    cache = tmp_path / "machine.json"
    cache.write_text('{"version": 1, "bandwi')
    assert load_or_measure_machine(cache, threads=1).how == "fake"
    assert json.loads(cache.read_text())["how"] == "fake"


def test_measurement_records_when_and_how() -> None:
    peaks = measure_machine(0.01, threads=1, stream_bytes=2**20, matmul_n=64)
    then = datetime.datetime.fromisoformat(peaks.measured_at)
    assert abs((datetime.datetime.now(datetime.UTC) - then).total_seconds()) < 60
    assert (peaks.torch_version, peaks.cpu_model) == (torch.__version__, cpu_model())
    assert peaks.noise is not None and peaks.noise.threads == 1
    assert peaks.noisy == peaks.noise.noisy
    assert peaks.load_average == peaks.noise.load_before


def test_noisy_measurement_is_used_but_never_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(roofline, "measure_machine", _fake_measure(calls, noisy=True))
    cache = tmp_path / "machine.json"
    assert load_or_measure_machine(cache, threads=1).noisy
    assert not cache.exists()
    load_or_measure_machine(cache, threads=1)
    assert len(calls) == 2  # nothing cached, so measured again


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("measured_at", "2000-01-01T00:00:00+00:00"),  # older than CACHE_MAX_AGE_DAYS
        ("measured_at", "not a date"),
        ("torch_version", "0.0.0"),
        ("cpu_model", "some other CPU"),
        ("threads", 7),
        ("noisy", True),
        ("host", "another-host"),
    ],
)
def test_stale_or_foreign_cache_is_remeasured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: object
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(roofline, "measure_machine", _fake_measure(calls))
    cache = tmp_path / "machine.json"
    load_or_measure_machine(cache, threads=2)
    load_or_measure_machine(cache, threads=2)
    assert len(calls) == 1  # the cache is used while it matches
    record = json.loads(cache.read_text())
    cache.write_text(json.dumps({**record, field: value}))
    assert load_or_measure_machine(cache, threads=2).bandwidth_bytes_per_s == 2e9
    assert len(calls) == 2


def test_cache_records_when_and_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(roofline, "measure_machine", _fake_measure([]))
    cache = tmp_path / "machine.json"
    load_or_measure_machine(cache, threads=2)
    record = json.loads(cache.read_text())
    assert record["version"] == roofline.CACHE_VERSION
    assert datetime.datetime.fromisoformat(record["measured_at"]).tzinfo is not None
    assert (record["threads"], record["torch_version"]) == (2, torch.__version__)
    assert (record["cpu_model"], record["load_average"]) == (cpu_model(), 0.5)
    assert record["how"] == "fake" and record["noisy"] is False


def test_cache_dir_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIMTORCH_CACHE_DIR", str(tmp_path))
    assert default_cache_path() == tmp_path / "machine.json"
    monkeypatch.delenv("SLIMTORCH_CACHE_DIR")
    assert default_cache_path() == Path.home() / ".cache" / "slimtorch" / "machine.json"


def test_plot_writes_png(tmp_path: Path) -> None:
    points = [
        ("gemv", roofline_point(2 * 10**6, 4 * 10**6, PEAKS)),
        ("gemm", roofline_point(2 * 10**9, 10**7, PEAKS)),
        ("no bytes", roofline_point(10, 0, PEAKS)),
        ("no flops", roofline_point(0, 10, PEAKS)),
    ]
    out = tmp_path / "roofline.png"
    plot_roofline(points, PEAKS, out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["roofline.png"]
