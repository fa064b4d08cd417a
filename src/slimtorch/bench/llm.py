"""LLM serving metrics as MLPerf's LLM benchmarks report them: TTFT, TPOT and tokens/s.

The system under test is a generator callable: ``generate(prompt)`` yields output tokens one
at a time (anything iterable works; each item is one token). For each request:

- **TTFT** (time to first token): first token's arrival minus the request's scheduled time
  (queueing included in the Server scenario).
- **TPOT** (time per output token): ``(last token - first token) / (tokens - 1)``, the
  decode rate after the first token (requests with one token have none).
- **tokens/s**: all output tokens over the run's duration.

Scenarios: ``singlestream`` (next request when the previous one completes), ``server``
(seeded Poisson arrivals, one FIFO worker, VALID when the p99 TTFT and p99 TPOT are within
their bounds: MLPerf's Llama-2-70B Server bounds, 2 s and 200 ms, by default) and ``offline``
(every request scheduled at time 0).

Example:
    >>> from slimtorch.bench.clock import VirtualClock
    >>> clock = VirtualClock()
    >>> def generate(prompt):
    ...     clock.advance(0.05); yield 1            # prefill, then the first token
    ...     for t in range(3): clock.advance(0.01); yield t
    >>> r = run_llm(generate, ["hi"], LLMSettings(min_query_count=2), clock=clock)
    >>> round(r.ttft.percentiles[50.0], 6), round(r.tpot.percentiles[50.0], 6)
    (0.05, 0.01)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from slimtorch.bench.clock import Clock, RealClock
from slimtorch.bench.results import LatencySummary, summarize_latencies
from slimtorch.bench.samples import SampleOrder, poisson_arrivals
from slimtorch.errors import ConfigError
from slimtorch.profile.noise import Noise, NoiseWatch, noisy_mark, threads_text
from slimtorch.profile.timing import percentile

LLM_SETTINGS_VERSION = 1
LLM_SCENARIOS = ("singlestream", "server", "offline")
# MLPerf Inference v4.0 Llama-2-70B Server latency constraints (99th percentile).
MLPERF_LLAMA2_70B_TTFT_S = 2.0
MLPERF_LLAMA2_70B_TPOT_S = 0.2
LLM_LATENCY_PERCENTILE = 99.0


@dataclass(frozen=True)
class LLMSettings:
    """How an LLM run is driven.

    Attributes:
        scenario: ``singlestream``, ``server`` or ``offline``.
        min_query_count: requests in the run.
        min_duration_s: Server: the arrivals span at least this long.
        server_target_qps: Server arrival rate (requests per second).
        ttft_bound_s: Server bound on the p99 TTFT.
        tpot_bound_s: Server bound on the p99 TPOT.
        seed: prompt order and arrival times.
        version: format version.
    """

    scenario: str = "singlestream"
    min_query_count: int = 8
    min_duration_s: float = 0.0
    server_target_qps: float = 1.0
    ttft_bound_s: float = MLPERF_LLAMA2_70B_TTFT_S
    tpot_bound_s: float = MLPERF_LLAMA2_70B_TPOT_S
    seed: int = 0
    version: int = LLM_SETTINGS_VERSION

    def __post_init__(self) -> None:
        if self.scenario not in LLM_SCENARIOS:
            raise ConfigError(
                f"llm scenario: expected one of {', '.join(LLM_SCENARIOS)}, got {self.scenario!r}"
            )
        if self.min_query_count < 1:
            raise ConfigError(f"min_query_count: expected >= 1, got {self.min_query_count}")
        if self.min_duration_s < 0:
            raise ConfigError(f"min_duration_s: expected >= 0, got {self.min_duration_s}")
        for name in ("server_target_qps", "ttft_bound_s", "tpot_bound_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: expected > 0, got {value}")


@dataclass(frozen=True)
class RequestTiming:
    """One request, times in seconds from the run's start."""

    scheduled_s: float
    first_token_s: float
    done_s: float
    tokens: int

    @property
    def ttft_s(self) -> float:
        """Time to first token (from the scheduled time)."""
        return self.first_token_s - self.scheduled_s

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first; None with fewer than two tokens."""
        return (self.done_s - self.first_token_s) / (self.tokens - 1) if self.tokens > 1 else None


@dataclass(frozen=True)
class LLMResult:
    """TTFT / TPOT summaries, tokens per second and the VALID verdict of an LLM run.

    ``threads``, ``noisy`` and ``noise`` say how it was timed and whether the figures can be
    trusted (:mod:`slimtorch.profile.noise`; the spread judged is the TPOT's, which excludes
    queueing and prompt length).
    """

    label: str
    settings: LLMSettings
    requests: tuple[RequestTiming, ...]
    ttft: LatencySummary
    tpot: LatencySummary | None
    output_tokens: int
    duration_s: float
    tokens_per_s: float
    valid: bool
    reasons: tuple[str, ...]
    threads: int | None = None
    noisy: bool = False
    noise: Noise | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (per-request timings included)."""
        d = asdict(self)
        d["ttft"]["percentiles"] = {str(k): v for k, v in self.ttft.percentiles.items()}
        if self.tpot is not None:
            d["tpot"]["percentiles"] = {str(k): v for k, v in self.tpot.percentiles.items()}
        return d


def _schedule(settings: LLMSettings) -> np.ndarray | None:
    """Scheduled times: Poisson (server), all zero (offline), None (issue on completion)."""
    n = settings.min_query_count
    if settings.scenario == "offline":
        return np.zeros(n)
    if settings.scenario == "server":
        n = max(n, math.ceil(settings.server_target_qps * settings.min_duration_s))
        return poisson_arrivals(settings.server_target_qps, n, settings.seed)
    return None


def _one(generate: Callable[[Any], Iterable[Any]], prompt: Any, clock: Clock) -> tuple:
    first, tokens = None, 0
    for _ in generate(prompt):
        tokens += 1
        if first is None:
            first = clock.now()
    done = clock.now()
    return (done if first is None else first), done, tokens


def run_llm(
    generate: Callable[[Any], Iterable[Any]],
    prompts: Sequence[Any],
    settings: LLMSettings,
    *,
    clock: Clock | None = None,
    label: str = "llm",
) -> LLMResult:
    """Drive a token generator and measure TTFT, TPOT and tokens/s.

    Args:
        generate: ``generate(prompt)`` yields output tokens.
        prompts: the prompts; drawn in a seeded order, each once per pass.
        settings: scenario, counts and bounds.
        clock: real (default) or virtual time.
        label: the generator's name in the result.

    Returns:
        An ``LLMResult``.
    """
    clock = clock or RealClock()
    if not prompts:
        raise ConfigError("llm: expected at least one prompt")
    due = _schedule(settings)
    n = settings.min_query_count if due is None else len(due)
    order = SampleOrder(len(prompts), settings.seed).take(n)
    start, timings = clock.now(), []
    for i, idx in enumerate(order):
        if due is not None:
            clock.sleep_until(start + float(due[i]))
        scheduled = clock.now() - start if due is None else float(due[i])
        first, done, tokens = _one(generate, prompts[int(idx)], clock)
        timings.append(RequestTiming(scheduled, first - start, done - start, tokens))
    return _llm_result(label, settings, timings, clock.now() - start)


def _llm_result(
    label: str, settings: LLMSettings, timings: list[RequestTiming], duration: float
) -> LLMResult:
    ttfts = [t.ttft_s for t in timings]
    tpots = [t.tpot_s for t in timings if t.tpot_s is not None]
    tokens = sum(t.tokens for t in timings)
    reasons = []
    if settings.scenario == "server":
        q = LLM_LATENCY_PERCENTILE
        if percentile(ttfts, q) > settings.ttft_bound_s:
            reasons.append(f"p{q:g} TTFT over the bound {settings.ttft_bound_s} s")
        if tpots and percentile(tpots, q) > settings.tpot_bound_s:
            reasons.append(f"p{q:g} TPOT over the bound {settings.tpot_bound_s} s")
    return LLMResult(
        label=label,
        settings=settings,
        requests=tuple(timings),
        ttft=summarize_latencies(ttfts),
        tpot=summarize_latencies(tpots) if tpots else None,
        output_tokens=tokens,
        duration_s=duration,
        tokens_per_s=tokens / duration if duration > 0 else math.inf,
        valid=not reasons,
        reasons=tuple(reasons),
    )


def with_llm_noise(result: LLMResult, watch: NoiseWatch) -> LLMResult:
    """``result`` with the thread count and the noise verdict of the watch around its run."""
    tpots = [t.tpot_s for t in result.requests if t.tpot_s is not None]
    noise = watch.judge(tpots or None)
    return replace(result, threads=noise.threads, noisy=noise.noisy, noise=noise)


def llm_markdown(results: Sequence[LLMResult], baseline: int = 0) -> str:
    """TTFT / TPOT percentiles and tokens/s side by side; speedup in tokens/s over the baseline.

    Example:
        >>> from slimtorch.bench.clock import VirtualClock
        >>> c = VirtualClock()
        >>> def gen(p):
        ...     c.advance(0.1); yield 0; c.advance(0.1); yield 1
        >>> print(llm_markdown([run_llm(gen, [0], LLMSettings(), clock=c, label="toy")]))
        | model | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | tokens/s | result | speedup |
        |---|---:|---:|---:|---:|---:|---:|---:|
        | toy | 100.0 ms | 100.0 ms | 100.0 ms | 100.0 ms | 10.0 | VALID | 1.00x |
    """
    if not results or not 0 <= baseline < len(results):
        raise ConfigError(f"llm_markdown: baseline {baseline} out of range for {len(results)}")
    base = results[baseline].tokens_per_s
    head = ["model", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "tokens/s", "result"]
    lines = ["| " + " | ".join([*head, "speedup"]) + " |", "|---" + "|---:" * len(head) + "|"]
    for r in results:
        tpot = r.tpot.percentiles if r.tpot else {50.0: math.nan, 99.0: math.nan}
        cells = [r.label, *(f"{v * 1e3:.1f} ms" for v in (r.ttft.percentiles[50.0],
                 r.ttft.percentiles[99.0], tpot[50.0], tpot[99.0]))]  # fmt: skip
        cells += [f"{r.tokens_per_s:,.1f}{noisy_mark(r.noise)}", "VALID" if r.valid else "INVALID"]
        lines.append("| " + " | ".join([*cells, f"{r.tokens_per_s / base:.2f}x"]) + " |")
    threads = sorted({r.threads for r in results if r.threads is not None})
    if threads:
        lines += ["", f"Timed with {', '.join(threads_text(t) for t in threads)}."]
    return "\n".join(lines)
