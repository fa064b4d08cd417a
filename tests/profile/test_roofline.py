"""Roofline math on synthetic peaks; measurement, cache and plot as properties."""

from __future__ import annotations

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


def _fake_measure(calls: list[int]):  # type: ignore[no-untyped-def]
    def measure(seconds: float = 1.0, threads: int | None = None) -> MachinePeaks:
        calls.append(threads or 0)
        return MachinePeaks(1e9 * len(calls), 2e9, threads or 1, "2025-01-01", "fake")

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
