"""MLPerf-style benchmarking: LoadGen scenarios, accuracy mode, divisions, LLM metrics, reports.

The pieces, from the bottom up: ``settings`` (``TestSettings``), ``clock`` (real or virtual
time), ``samples`` (sample libraries, seeded order, Poisson arrivals), ``loadgen`` (the four
scenarios and the Server peak search), ``accuracy`` (accuracy mode, closed/open division),
``llm`` (TTFT, TPOT, tokens/s), ``report`` (summary, JSON, speedup table, CDF plot), ``sut``
(adapters that turn a source into a system under test) and ``harness`` (``benchmark``: what
``slimtorch bench`` runs).

Example:
    >>> from slimtorch.bench import TestSettings, benchmark
    >>> s = TestSettings("offline", offline_min_samples=64, min_duration_s=0.0)
    >>> benchmark(["lenet300"], s, progress=False)[0].result.sample_count
    64
"""

from __future__ import annotations

from slimtorch.bench.accuracy import (
    DivisionConfig,
    DivisionVerdict,
    QualityResult,
    accuracy_mode,
    check_division,
    perplexity_quality,
)
from slimtorch.bench.adapters import register_all as _register_adapters
from slimtorch.bench.clock import RealClock, SimulatedSUT, VirtualClock
from slimtorch.bench.harness import EvalData, benchmark, benchmark_llm, load_eval_data
from slimtorch.bench.llm import LLMResult, LLMSettings, run_llm
from slimtorch.bench.loadgen import find_peak_performance, run_scenario
from slimtorch.bench.report import (
    BenchRecord,
    compare_markdown,
    compare_table,
    format_summary,
    plot_latency_cdf,
    write_json,
    write_summary,
)
from slimtorch.bench.results import ScenarioResult
from slimtorch.bench.samples import ListSamples, TensorSamples, poisson_arrivals
from slimtorch.bench.settings import TestSettings
from slimtorch.bench.sut import BenchTarget, SUTAdapter, load_target, register_sut_adapter

_register_adapters()  # sparse:, int8:, kmeansN:, ptqN:, .slim, LLM generators

__all__ = [
    "BenchRecord",
    "BenchTarget",
    "DivisionConfig",
    "DivisionVerdict",
    "EvalData",
    "LLMResult",
    "LLMSettings",
    "ListSamples",
    "QualityResult",
    "RealClock",
    "SUTAdapter",
    "ScenarioResult",
    "SimulatedSUT",
    "TensorSamples",
    "TestSettings",
    "VirtualClock",
    "accuracy_mode",
    "benchmark",
    "benchmark_llm",
    "check_division",
    "compare_markdown",
    "compare_table",
    "find_peak_performance",
    "format_summary",
    "load_eval_data",
    "load_target",
    "perplexity_quality",
    "plot_latency_cdf",
    "poisson_arrivals",
    "register_sut_adapter",
    "run_llm",
    "run_scenario",
    "write_json",
    "write_summary",
]
