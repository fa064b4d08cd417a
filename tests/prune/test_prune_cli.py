"""`slimtorch prune`: writes a reloadable pruned checkpoint and a report; bad input exits 2."""

from __future__ import annotations

import json

import pytest
import torch

from slimtorch.checkpoint import load_checkpoint, save_checkpoint
from slimtorch.cli.main import main
from slimtorch.models import ModelSpec, build_model


@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec(name="lenet300", kwargs={})
    return save_checkpoint(tmp_path / "base", build_model(spec), spec, {"data": "digits"})


def test_prune_cli_writes_checkpoint_and_report(tmp_path, checkpoint):
    out = tmp_path / "pruned"
    argv = ["prune", str(checkpoint), "--out", str(out), "--sparsity", "0.8", "--quiet",
            "--schedule", "iterative", "--iterations", "2", "--finetune-epochs", "1",
            "--layer", "classifier=0.3"]  # fmt: skip
    assert main(argv) == 0
    model, _, metrics = load_checkpoint(out)
    assert float((model.fc2[0].weight == 0).float().mean()) == pytest.approx(0.8)
    assert float((model.classifier.weight == 0).float().mean()) == pytest.approx(0.3)
    report = json.loads((out / "prune_report.json").read_text())
    assert {r["name"] for r in report["layers"]} == {"fc1.0", "fc2.0", "classifier"}
    assert report["accuracy_before"] is not None and report["accuracy_finetuned"] is not None
    assert metrics["prune_config"]["schedule"] == "iterative"


def test_prune_cli_sensitivity_writes_plot_and_meets_the_target(tmp_path, checkpoint):
    out = tmp_path / "sens"
    argv = ["prune", str(checkpoint), "--out", str(out), "--sensitivity", "--sparsity", "0.6",
            "--ratios", "0.5,0.9", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert (out / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "prune_report.json").read_text())
    assert 1 - report["params_after"] / report["params_before"] >= 0.6 - 0.01  # biases kept


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sparsity", "1.0"], "[0, 1)"),
        (["--granularity", "4:4"], "0 < N < M"),
        (["--layer", "conv.*=0.5"], "matches no prunable layer"),
        (["--exclude", "nothing"], "matches no layer"),
    ],
)
def test_prune_cli_bad_input_exits_2(tmp_path, checkpoint, capsys, extra, message):
    assert main(["prune", str(checkpoint), "--out", str(tmp_path / "x"), "--quiet", *extra]) == 2
    assert message in capsys.readouterr().err
