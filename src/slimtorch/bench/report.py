"""Reports: an ``mlperf_log_summary.txt``-style summary, JSON, a speedup table, latency CDFs.

A :class:`BenchRecord` is one model's outcome: its scenario result, and, when accuracy mode
ran, its quality and division verdict. Several records side by side give the comparison
table, where each model's speedup is over the baseline record (the first, by default):
``value / baseline`` for rates, ``baseline / value`` for latencies, so > 1 is always faster.

Example:
    >>> from slimtorch.bench.clock import SimulatedSUT, VirtualClock
    >>> from slimtorch.bench.loadgen import run_scenario
    >>> from slimtorch.bench.samples import ListSamples
    >>> from slimtorch.bench.settings import TestSettings
    >>> def run(service):
    ...     c = VirtualClock(); s = TestSettings("singlestream", min_duration_s=0.0)
    ...     return run_scenario(SimulatedSUT(c, service), ListSamples([0]), s, clock=c)
    >>> records = [BenchRecord(run(0.004)), BenchRecord(run(0.001))]
    >>> [round(x, 6) for x in speedups(records)]
    [1.0, 4.0]
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from rich import box
from rich.table import Table

from slimtorch.bench.accuracy import DivisionVerdict, QualityResult
from slimtorch.bench.results import ScenarioResult
from slimtorch.errors import ConfigError
from slimtorch.io import atomic_write_bytes, atomic_write_text
from slimtorch.profile.noise import noise_hint, noisy_mark, threads_text

SCENARIO_TITLES = {
    "singlestream": "SingleStream",
    "multistream": "MultiStream",
    "server": "Server",
    "offline": "Offline",
}
RULE = "=" * 48
NS_PER_S = 1e9


@dataclass(frozen=True)
class BenchRecord:
    """One model's benchmark outcome."""

    result: ScenarioResult
    quality: QualityResult | None = None
    verdict: DivisionVerdict | None = None

    @property
    def label(self) -> str:
        """The model's name."""
        return self.result.label


def _ns(seconds: float) -> str:
    return f"{round(seconds * NS_PER_S)}"


def _yes(flag: bool) -> str:
    return "Yes" if flag else "NO"


def _validity_lines(r: ScenarioResult) -> list[str]:
    lines = [f"Result is : {'VALID' if r.valid else 'INVALID'}"]
    if r.settings.scenario == "server":
        constraint = not any("bound" in s or "stopped early" in s for s in r.reasons)
        lines.append(f"  Performance constraints satisfied : {_yes(constraint)}")
    lines.append(f"  Min duration satisfied : {_yes(not _has(r, 'min duration'))}")
    queries = not (_has(r, "min queries") or _has(r, "min samples"))
    lines.append(f"  Min queries satisfied : {_yes(queries)}")
    lines += [f"  * {reason}" for reason in r.reasons]
    return lines


def _has(r: ScenarioResult, prefix: str) -> bool:
    return any(s.startswith(prefix) for s in r.reasons)


def _metric_line(r: ScenarioResult) -> str:
    if r.higher_is_better:
        return f"{r.metric} : {r.metric_value:.6g}"
    return f"{r.metric} (ns) : {_ns(r.metric_value)}"


def _stats_lines(r: ScenarioResult) -> list[str]:
    lat = r.latency
    what = "Per-sample completion time" if r.settings.scenario == "offline" else "Per-query latency"
    lines = [
        f"Completed queries : {r.query_count}",
        f"Completed samples : {r.sample_count}",
        f"Duration (s) : {r.duration_s:.3f}",
        f"Completed samples per second : {r.sample_count / r.duration_s:.6g}"
        if r.duration_s > 0
        else "Completed samples per second : inf",
        f"{what}:",
        f"Min latency (ns) : {_ns(lat.min_s)}",
        f"Max latency (ns) : {_ns(lat.max_s)}",
        f"Mean latency (ns) : {_ns(lat.mean_s)}",
    ]
    lines += [f"{q:.2f} percentile latency (ns) : {_ns(v)}" for q, v in lat.percentiles.items()]
    if r.scheduled_qps is not None:
        lines.insert(0, f"Scheduled queries per second : {r.scheduled_qps:.6g}")
    return lines + _noise_lines(r)


def _noise_lines(r: ScenarioResult) -> list[str]:
    if r.noise is None:
        return []
    n = r.noise
    lines = [f"Threads : {r.threads}"]
    if n.cv is not None:
        lines.append(f"Latency coefficient of variation : {n.cv:.3f}")
    lines.append(f"Noisy : {'YES' if n.noisy else 'No'}")
    return lines + [f"  * {reason}" for reason in n.reasons]


def _trial_lines(r: ScenarioResult) -> list[str]:
    if not r.trials:
        return []
    q = r.settings.target_latency_percentile
    lines = [RULE, "Peak search (FindPeakPerformance)", RULE]
    for t in r.trials:
        note = " (stopped early)" if t.stopped_early else ""
        lines.append(
            f"target_qps {t.target_qps:.6g} : p{q:g} {t.percentile_latency_s * 1e3:.3f} ms, "
            f"{t.queries} queries, {'VALID' if t.valid else 'INVALID'}{note}"
        )
    return lines


def _quality_lines(record: BenchRecord) -> list[str]:
    if record.quality is None:
        return []
    q = record.quality
    lines = [RULE, "Accuracy", RULE, f"{q.metric} : {q.value:.6g} (n={q.n})"]
    v = record.verdict
    if v is not None:
        lines.append(
            f"Division : {v.division}; reference {v.reference.value:.6g}, "
            f"ratio {v.ratio:.4f}, target {v.target:g} : {v.verdict}"
        )
    return lines


def format_summary(record: BenchRecord | ScenarioResult) -> str:
    """The run as an ``mlperf_log_summary.txt``-style text (latencies in ns, as LoadGen).

    Args:
        record: a ``BenchRecord`` (or a bare ``ScenarioResult``).

    Returns:
        The summary text, ending in a newline.
    """
    record = record if isinstance(record, BenchRecord) else BenchRecord(record)
    r = record.result
    params = [f"{k} : {v}" for k, v in r.settings.to_dict().items()]
    lines = [
        RULE,
        "MLPerf-style Results Summary (slimtorch.bench)",
        RULE,
        f"SUT name : {r.label}",
        f"Scenario : {SCENARIO_TITLES[r.settings.scenario]}",
        "Mode     : PerformanceOnly",
        _metric_line(r),
        *_validity_lines(r),
        "",
        RULE,
        "Additional Stats",
        RULE,
        *_stats_lines(r),
        *_trial_lines(r),
        *_quality_lines(record),
        "",
        RULE,
        "Test Parameters Used",
        RULE,
        *params,
    ]
    return "\n".join(lines) + "\n"


def record_to_dict(record: BenchRecord, latencies: bool = True) -> dict[str, Any]:
    """A JSON-ready dict of the record (per-query latencies included unless asked not to)."""
    r = record.result
    d = asdict(r)
    d["settings"] = r.settings.to_dict()
    d["latency"]["percentiles"] = {f"{q:g}": v for q, v in r.latency.percentiles.items()}
    d["valid"] = r.valid
    d["latencies_s"] = list(r.latencies_s) if latencies else None
    d["quality"] = asdict(record.quality) if record.quality else None
    d["division"] = record.verdict.to_dict() if record.verdict else None
    return d


def records_hint(records: Sequence[BenchRecord]) -> str | None:
    """One hint line when any record is noisy (None otherwise)."""
    return noise_hint([rec.result.noise for rec in records])


def to_json(
    records: Sequence[BenchRecord], baseline: int = 0, data: dict[str, Any] | None = None
) -> str:
    """All records with their speedups over ``records[baseline]``, as JSON text (``data``:
    the evaluation data, when given)."""
    ups = speedups(records, baseline)
    payload = {
        **({"data": data} if data is not None else {}),
        "baseline": records[baseline].label,
        "records": [
            {**record_to_dict(rec), "speedup": up} for rec, up in zip(records, ups, strict=True)
        ],
    }
    return json.dumps(payload, indent=2) + "\n"


def speedups(records: Sequence[BenchRecord], baseline: int = 0) -> list[float]:
    """Each record's speedup over ``records[baseline]`` (> 1 is faster).

    Args:
        records: results of the same scenario.
        baseline: index of the baseline record.

    Returns:
        One ratio per record (the baseline's is 1.0).
    """
    if not records:
        raise ConfigError("no benchmark records to compare")
    if not 0 <= baseline < len(records):
        raise ConfigError(f"baseline: index {baseline} out of range for {len(records)} records")
    scenarios = {rec.result.settings.scenario for rec in records}
    if len(scenarios) > 1:
        raise ConfigError(f"cannot compare different scenarios: {', '.join(sorted(scenarios))}")
    base = records[baseline].result
    out = []
    for rec in records:
        v, b = rec.result.metric_value, base.metric_value
        ratio = (v / b if b else math.inf) if base.higher_is_better else (b / v if v else math.inf)
        out.append(ratio)
    return out


def _metric_cell(r: ScenarioResult) -> str:
    value = f"{r.metric_value:,.1f}" if r.higher_is_better else f"{r.metric_value * 1e3:.3f} ms"
    return value + noisy_mark(r.noise)


def compare_rows(records: Sequence[BenchRecord], baseline: int = 0) -> list[list[str]]:
    """Table cells: model, metric, validity, p50/p99 latency, quality, division, speedup."""
    rows = []
    for rec, up in zip(records, speedups(records, baseline), strict=True):
        r, q, v = rec.result, rec.quality, rec.verdict
        rows.append(
            [
                rec.label,
                _metric_cell(r),
                "VALID" if r.valid else "INVALID",
                f"{r.latency.percentiles[50.0] * 1e3:.3f} ms",
                f"{r.latency.percentiles[99.0] * 1e3:.3f} ms",
                f"{q.value:.4f}" if q else "-",
                f"{v.verdict} ({v.ratio:.4f})" if v else "-",
                f"{up:.2f}x",
            ]
        )
    return rows


def _headers(records: Sequence[BenchRecord]) -> list[str]:
    r = records[0].result
    quality = records[0].quality.metric if records[0].quality else "quality"
    return ["model", r.metric, "result", "p50", "p99", quality, "division", "speedup"]


def _threads_note(records: Sequence[BenchRecord]) -> str:
    threads = sorted({rec.result.threads for rec in records if rec.result.threads is not None})
    if not threads:
        return ""
    return f", {threads_text(threads[0])}" if len(threads) == 1 else f", {threads} threads"


def compare_table(records: Sequence[BenchRecord], baseline: int = 0) -> Table:
    """A rich table of the records side by side with speedups over the baseline."""
    title = SCENARIO_TITLES[records[0].result.settings.scenario]
    heading = f"{title}: speedup over {records[baseline].label}{_threads_note(records)}"
    table = Table(title=heading, box=box.SIMPLE)
    for i, h in enumerate(_headers(records)):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in compare_rows(records, baseline):
        table.add_row(*row)
    return table


def compare_markdown(records: Sequence[BenchRecord], baseline: int = 0) -> str:
    """The comparison as a Markdown table (the format of BENCHMARKS.md)."""
    headers = _headers(records)
    lines = ["| " + " | ".join(headers) + " |", "|---" + "|---:" * (len(headers) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in compare_rows(records, baseline)]
    if _threads_note(records):
        lines += ["", f"Timed with {_threads_note(records).removeprefix(', ')}."]
    return "\n".join(lines) + "\n"


def write_json(
    records: Sequence[BenchRecord],
    path: str | Path,
    baseline: int = 0,
    data: dict[str, Any] | None = None,
) -> Path:
    """Write :func:`to_json` atomically."""
    return atomic_write_text(path, to_json(records, baseline, data))


def write_summary(records: Sequence[BenchRecord], path: str | Path) -> Path:
    """Write every record's summary, one after another, atomically."""
    return atomic_write_text(path, "\n".join(format_summary(r) for r in records))


def plot_latency_cdf(records: Sequence[BenchRecord], path: str | Path) -> Path:
    """A PNG of each model's latency CDF (log-scaled milliseconds), atomically written."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for rec in records:
        lat = np.sort(np.asarray(rec.result.latencies_s)) * 1e3
        ax.step(lat, np.arange(1, len(lat) + 1) / len(lat), where="post", label=rec.label)
    r = records[0].result
    title = SCENARIO_TITLES[r.settings.scenario]
    what = "completion time" if r.settings.scenario == "offline" else "query latency"
    ax.set(xscale="log", xlabel=f"{what} (ms)", ylabel="fraction of queries", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())
