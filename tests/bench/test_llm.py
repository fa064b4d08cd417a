"""LLM metrics on a virtual clock: TTFT, TPOT and tokens/s against closed forms."""

from __future__ import annotations

import pytest

from slimtorch.bench.clock import VirtualClock
from slimtorch.bench.llm import LLMSettings, run_llm
from slimtorch.errors import ConfigError

PREFILL_S, DECODE_S = 0.05, 0.01


def _generator(clock: VirtualClock):
    def generate(prompt: int):
        clock.advance(PREFILL_S * prompt)  # prefill scales with the prompt "length"
        yield 0
        for t in range(9):
            clock.advance(DECODE_S)
            yield t

    return generate


def test_singlestream_ttft_tpot_tokens_per_second() -> None:
    clock = VirtualClock()
    r = run_llm(_generator(clock), [1, 2], LLMSettings(min_query_count=10), clock=clock)
    ttfts = sorted(t.ttft_s for t in r.requests)
    assert ttfts == pytest.approx([PREFILL_S] * 5 + [2 * PREFILL_S] * 5)
    assert all(t.tpot_s == pytest.approx(DECODE_S) for t in r.requests)
    busy = 5 * PREFILL_S + 5 * 2 * PREFILL_S + 10 * 9 * DECODE_S
    assert r.output_tokens == 100
    assert r.tokens_per_s == pytest.approx(100 / busy)
    assert r.valid


def test_server_ttft_counts_queueing_and_bounds_decide_validity() -> None:
    clock = VirtualClock()
    # each request takes 0.14 s; arriving at 50/s the queue grows, TTFT far over 0.5 s
    s = LLMSettings("server", min_query_count=200, server_target_qps=50.0, ttft_bound_s=0.5)
    r = run_llm(_generator(clock), [1], s, clock=clock)
    assert not r.valid and any("TTFT" in x for x in r.reasons)
    assert r.ttft.max_s > 10 * PREFILL_S
    assert r.tpot.max_s == pytest.approx(DECODE_S)  # queueing never touches TPOT
    relaxed = LLMSettings("server", min_query_count=50, server_target_qps=0.5)
    assert run_llm(_generator(clock), [1], relaxed, clock=clock).valid


def test_offline_schedules_everything_at_zero() -> None:
    clock = VirtualClock()
    r = run_llm(_generator(clock), [1], LLMSettings("offline", min_query_count=3), clock=clock)
    per = PREFILL_S + 9 * DECODE_S
    assert [t.ttft_s for t in r.requests] == pytest.approx([PREFILL_S, per + PREFILL_S,
                                                            2 * per + PREFILL_S])  # fmt: skip


def test_llm_settings_errors() -> None:
    with pytest.raises(ConfigError, match="scenario"):
        LLMSettings("multistream")
    with pytest.raises(ConfigError, match="server_target_qps"):
        LLMSettings("server", server_target_qps=0.0)
    with pytest.raises(ConfigError, match="prompt"):
        run_llm(lambda p: iter(()), [], LLMSettings())
