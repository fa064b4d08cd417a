"""``budget_cost``: MACs from slimtorch's tracer, latency from a calibrated lookup table."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from slimtorch.core.trace import trace_model
from slimtorch.errors import ConfigError
from slimtorch.models import create_model
from slimtorch.search.cost import budget_cost


def test_macs_cost_is_the_tracers_count() -> None:
    model, x = create_model("vgg"), torch.zeros(1, 1, 8, 8)
    assert budget_cost("macs", x)(model) == trace_model(model.eval(), x).total_macs


def test_unknown_cost_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cost: expected one of latency, macs"):
        budget_cost("flops", torch.zeros(1, 4))


def test_latency_cost_is_a_positive_time_from_the_table(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SLIMTORCH_CACHE", str(tmp_path))
    model, x = nn.Sequential(nn.Linear(16, 8), nn.ReLU()), torch.zeros(1, 16)
    cost = budget_cost("latency", x, latency_batch=2, calibrate_on=model)
    seconds = cost(model)
    assert math.isfinite(seconds) and 0 < seconds < 1
    assert list((tmp_path / "latency").glob("*.json"))  # measured once, cached per machine
