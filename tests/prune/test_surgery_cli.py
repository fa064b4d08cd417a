"""`slimtorch prune --surgery`: a physically smaller checkpoint that reloads and runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from slimtorch.checkpoint import load_checkpoint
from slimtorch.cli.main import main
from slimtorch.core.trace import trace_model
from slimtorch.errors import ConfigError
from slimtorch.prune.physical import SurgeryConfig


def test_surgery_halves_channels_and_reloads(tmp_path: Path) -> None:
    base, small = tmp_path / "vgg", tmp_path / "small"
    assert main(["train", "--model", "vgg", "--epochs", "1", "--out", str(base), "--quiet"]) == 0
    args = [
        "prune",
        str(base),
        "--surgery",
        "--sparsity",
        "0.5",
        "--finetune-epochs",
        "1",
        "--out",
        str(small),
        "--quiet",
    ]
    assert main(args) == 0
    big_model, _, _ = load_checkpoint(base)
    small_model, spec, metrics = load_checkpoint(small)
    assert spec.name == "slimtorch.prune.surgery:build_pruned"
    convs_big = [m for m in big_model.modules() if isinstance(m, torch.nn.Conv2d)]
    convs_small = [m for m in small_model.modules() if isinstance(m, torch.nn.Conv2d)]
    # Every conv but the stem loses half its inputs; every conv loses half its outputs.
    for b, s in zip(convs_big, convs_small, strict=True):
        assert s.out_channels == b.out_channels - int(0.5 * b.out_channels + 0.5)
    x = torch.rand(1, 1, 8, 8)
    report = json.loads((small / "prune_report.json").read_text())
    assert report["macs_after"] == trace_model(small_model, x).total_macs
    assert report["macs_before"] == trace_model(big_model, x).total_macs
    assert report["macs_after"] < 0.5 * report["macs_before"]
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


@pytest.mark.parametrize(
    "kwargs", [{"ratio": 1.0}, {"ratio": -0.1}, {"importance": "gamma"}, {"round_to": 0}]
)
def test_surgery_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SurgeryConfig(**kwargs)
