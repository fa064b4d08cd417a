"""Timing: percentile against numpy, stats invariants, model state and hooks left intact."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtorch.errors import ConfigError
from slimtorch.profile.timing import (
    layer_latencies,
    measure_latency,
    percentile,
    throughput_sweep,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=60),
    st.floats(0, 100),
)
def test_percentile_matches_numpy(values: list[float], q: float) -> None:
    expected = float(np.percentile(np.array(values), q))
    assert percentile(values, q) == expected  # same lerp as numpy: exact


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        percentile([], 50)
    with pytest.raises(ConfigError):
        percentile([1.0], 101)


class _Recorder(nn.Module):
    """Counts calls and records the mode each forward pass saw."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.calls: list[tuple[bool, bool, tuple[int, ...]]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_inference_mode_enabled(), tuple(x.shape)))
        return self.bn(self.fc(x))


def _all_hooks_empty(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_latency_stats_are_ordered() -> None:
    calls = []

    def work(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return (x @ x).sum()

    stats = measure_latency(work, torch.randn(32, 32), warmup=2, runs=20)
    assert (stats.runs, stats.warmup, len(stats.samples_s), len(calls)) == (20, 2, 20, 22)
    assert stats.min_s <= stats.median_s <= stats.p90_s <= stats.p99_s <= stats.max_s
    assert stats.min_s <= stats.mean_s <= stats.max_s
    assert stats.median_s == percentile(stats.samples_s, 50)
    assert all(s > 0 for s in stats.samples_s)


def test_max_seconds_stops_early_but_times_once() -> None:
    def sleepy(_: Any) -> None:
        time.sleep(0.005)

    stats = measure_latency(sleepy, None, warmup=0, runs=1000, max_seconds=0.02)
    assert 1 <= stats.runs <= 5  # each call sleeps >= 5 ms
    assert min(stats.samples_s) >= 0.005
    tiny = measure_latency(sleepy, None, warmup=100, runs=10, max_seconds=1e-9)
    assert tiny.runs == 1 and tiny.warmup <= 1


def test_model_runs_in_eval_inference_and_flags_are_restored() -> None:
    model = _Recorder().train()
    model.fc.eval()  # mixed flags must come back exactly
    state = {k: v.clone() for k, v in model.state_dict().items()}
    measure_latency(model, torch.randn(8, 4), warmup=1, runs=3)
    assert {(training, inference) for training, inference, _ in model.calls} == {(False, True)}
    assert (model.training, model.fc.training, model.bn.training) == (True, False, True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key  # BN stats untouched


def test_flags_restored_when_the_model_raises() -> None:
    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("boom")

    model = Boom().train()
    with pytest.raises(ValueError, match="boom"):
        measure_latency(model, torch.ones(1), warmup=0, runs=1)
    assert model.training


def test_tuple_and_mapping_inputs() -> None:
    seen: list[tuple[int, int]] = []

    def add(a: int, b: int = 0) -> None:
        seen.append((a, b))

    measure_latency(add, (1, 2), warmup=0, runs=1)
    measure_latency(add, {"a": 3, "b": 4}, warmup=0, runs=1)
    assert seen == [(1, 2), (3, 4)]


def test_throughput_fields_are_consistent() -> None:
    model = _Recorder()
    points = throughput_sweep(model, torch.randn(1, 4), batch_sizes=(1, 3, 5), warmup=1, runs=3)
    assert [p.batch_size for p in points] == [1, 3, 5]
    for p in points:
        assert p.samples_per_s == p.batch_size / p.latency.median_s
        assert p.latency.runs == 3
    assert {shape for _, _, shape in model.calls} == {(1, 4), (3, 4), (5, 4)}


def test_throughput_rejects_unbatched_sample() -> None:
    with pytest.raises(ConfigError, match="batch dim 1"):
        throughput_sweep(nn.Linear(4, 4), torch.randn(4))
    with pytest.raises(ConfigError):
        throughput_sweep(nn.Linear(4, 4), torch.randn(1, 4), batch_sizes=(0,))


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.unused = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.block(x))  # leaves called twice per pass


def test_layer_latencies_cover_called_leaves_and_remove_hooks() -> None:
    model = _Shared().train()
    result = layer_latencies(model, torch.randn(2, 4), warmup=1, runs=3)
    assert list(result) == ["block.0", "block.1"]
    assert all(v > 0 for v in result.values())
    assert _all_hooks_empty(model)
    assert model.training


def test_layer_latency_hooks_removed_on_error() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(5, 5))  # second layer fails
    with pytest.raises(RuntimeError):
        layer_latencies(model, torch.randn(1, 4), warmup=0, runs=1)
    assert _all_hooks_empty(model)
