"""Reports: summary text, JSON, speedups, Markdown and the CDF plot, against known runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slimtorch.bench.accuracy import DivisionConfig, QualityResult, check_division
from slimtorch.bench.clock import SimulatedSUT, VirtualClock
from slimtorch.bench.loadgen import run_scenario
from slimtorch.bench.report import (
    BenchRecord,
    compare_markdown,
    format_summary,
    plot_latency_cdf,
    speedups,
    to_json,
    write_summary,
)
from slimtorch.bench.samples import ListSamples
from slimtorch.bench.settings import TestSettings
from slimtorch.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QSL = ListSamples([0, 1, 2])


def _run(scenario: str, service: float, **kw: object):
    clock = VirtualClock()
    s = TestSettings(scenario, min_duration_s=kw.pop("min_duration_s", 0.0), **kw)
    return run_scenario(SimulatedSUT(clock, service, 0.0), QSL, s, clock=clock, label=f"m{service}")


def test_summary_lists_scenario_metric_validity_and_percentiles() -> None:
    r = _run("server", 0.002, min_duration_s=2.0, server_target_qps=300.0)
    text = format_summary(r)
    assert "Scenario : Server" in text and f"SUT name : {r.label}" in text
    assert ("Result is : VALID" if r.valid else "Result is : INVALID") in text
    lat = np.asarray(r.latencies_s)
    for q in (50, 90, 99):
        line = f"{q:.2f} percentile latency (ns) : {round(np.percentile(lat, q) * 1e9)}"
        assert line in text
    assert "server_target_qps : 300.0" in text and "Min queries satisfied : Yes" in text


def test_summary_of_an_invalid_run_says_why() -> None:
    r = _run("singlestream", 0.1, min_query_count=100, min_duration_s=1.0, max_duration_s=1.0)
    text = format_summary(r)
    assert "Result is : INVALID" in text
    assert "Min queries satisfied : NO" in text and "min queries not met (10 < 100)" in text


def test_speedups_orient_latency_and_throughput() -> None:
    slow, fast = _run("singlestream", 0.004), _run("singlestream", 0.001)
    assert speedups([BenchRecord(slow), BenchRecord(fast)]) == pytest.approx([1.0, 4.0])
    assert speedups([BenchRecord(slow), BenchRecord(fast)], baseline=1) == pytest.approx(
        [0.25, 1.0]
    )
    off_slow = _run("offline", 0.004, offline_min_samples=128)
    off_fast = _run("offline", 0.002, offline_min_samples=128)
    assert speedups([BenchRecord(off_slow), BenchRecord(off_fast)])[1] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="scenarios"):
        speedups([BenchRecord(slow), BenchRecord(off_fast)])


def test_json_and_markdown_carry_results_and_verdicts(tmp_path: Path) -> None:
    ref_q, cand_q = QualityResult("top1", 0.98, True, 269), QualityResult("top1", 0.96, True, 269)
    closed = DivisionConfig("closed", 0.99)
    records = [
        BenchRecord(_run("singlestream", 0.002), ref_q, check_division(ref_q, ref_q, closed)),
        BenchRecord(_run("singlestream", 0.001), cand_q, check_division(cand_q, ref_q, closed)),
    ]
    data = json.loads(to_json(records))
    assert data["baseline"] == "m0.002"
    a, b = data["records"]
    assert (a["speedup"], b["speedup"]) == pytest.approx((1.0, 2.0))
    assert b["division"]["verdict"] == "FAIL" and b["quality"]["value"] == 0.96
    assert b["latencies_s"] == pytest.approx(list(records[1].result.latencies_s))
    assert b["settings"]["scenario"] == "singlestream" and b["valid"] is True
    md = compare_markdown(records).splitlines()
    assert len(md) == 4 and md[0].startswith("| model | p90 latency |")
    assert "FAIL (0.9796)" in md[3] and md[3].endswith("2.00x |")
    path = write_summary(records, tmp_path / "s.txt")
    assert path.read_text().count("MLPerf-style Results Summary") == 2


def test_plot_writes_a_png(tmp_path: Path) -> None:
    records = [BenchRecord(_run("singlestream", s)) for s in (0.001, 0.002)]
    path = plot_latency_cdf(records, tmp_path / "cdf.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
