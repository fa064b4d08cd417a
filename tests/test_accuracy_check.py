"""A step that destroys accuracy is flagged, with what to change, in `slimtorch prune` /
`quantize` outputs (JSON "warnings" and a visible line); the compress job's warnings are tested
in tests/compress/test_accuracy.py."""

from __future__ import annotations

import json

import pytest

from slimtorch.accuracy_check import (
    CHANCE_FALL_RATIO,
    MAX_DROP_POINTS,
    NEAR_CHANCE_FACTOR,
    accuracy_warning,
    destroyed,
    prune_suggestions,
)
from slimtorch.checkpoint import save_checkpoint
from slimtorch.cli.main import main
from slimtorch.data import load_digits, make_loaders
from slimtorch.models import create_model, make_spec
from slimtorch.prune.config import PruneConfig
from slimtorch.train import FitConfig, fit


def test_threshold_is_a_drop_in_points_or_a_fall_to_near_chance():
    step = MAX_DROP_POINTS / 100
    assert not destroyed(0.90, 0.90 - step + 1e-9)
    assert destroyed(0.90, 0.90 - step - 1e-6)
    edge = NEAR_CHANCE_FACTOR / 100  # near chance among 100 classes
    assert destroyed(edge / CHANCE_FALL_RATIO + 0.01, edge, num_classes=100)  # 3 points, to chance
    assert not destroyed(edge + 0.01, edge, num_classes=100)  # 1 point, a third lost
    assert not destroyed(0.5, 0.9)


def test_warning_carries_the_numbers_and_the_suggestions():
    tips = prune_suggestions(PruneConfig(sparsity=0.7))
    w = accuracy_warning("prune", 0.996, 0.108, num_classes=10, suggestions=tips)
    d = w.to_dict()
    assert d["drop_points"] == pytest.approx(88.8)
    assert d["near_chance"] and d["chance"] == pytest.approx(0.1)
    assert d["threshold_points"] == MAX_DROP_POINTS
    assert any("--finetune-epochs" in t for t in d["suggestions"])
    assert any("--schedule iterative" in t for t in d["suggestions"])
    assert any("0.7" in t and "0.5" in t for t in d["suggestions"])  # lower sparsity: 0.5
    assert d["message"].count("\n") == 0 and "0.9960 -> 0.1080" in d["message"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ck") / "lenet300"
    model = create_model("lenet300")
    train, val, _ = make_loaders(load_digits(seed=0), batch_size=64, seed=0)
    fit(model, train, val, FitConfig(epochs=3, seed=0), progress=False)
    save_checkpoint(folder, model, make_spec("lenet300"), {"data": "digits", "seed": 0})
    return folder


def test_prune_cli_warns_in_json_and_output(trained, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["prune", str(trained), "--sparsity", "0.99", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "prune_report.json").read_text())
    (w,) = report["warnings"]
    assert w["before"] == report["accuracy_before"] and w["after"] == report["accuracy_pruned"]
    assert w["drop_points"] > MAX_DROP_POINTS
    assert f"warning: {w['message']}" in capsys.readouterr().out.splitlines()
    gentle = tmp_path / "g"
    assert main(["prune", str(trained), "--sparsity", "0.1", "--out", str(gentle), "--quiet"]) == 0
    assert json.loads((gentle / "prune_report.json").read_text())["warnings"] == []
    assert "warning:" not in capsys.readouterr().out


def test_quantize_cli_warns_in_json_and_output(trained, tmp_path, capsys):
    out = tmp_path / "q"
    argv = ["quantize", str(trained), "--method", "kmeans", "--bits", "1", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    (w,) = report["warnings"]
    assert (w["before"], w["after"]) == (report["accuracy_before"], report["accuracy_after"])
    assert "--bits 3" in w["message"] and "--finetune-epochs" in w["message"]
    assert f"warning: {w['message']}" in capsys.readouterr().out.splitlines()
    assert f"warning: {w['message']}" in (out / "report.txt").read_text()
