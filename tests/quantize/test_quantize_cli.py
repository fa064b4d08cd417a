"""``slimtorch quantize`` end to end on a tiny trained checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from slimtorch.checkpoint import save_checkpoint
from slimtorch.cli.main import main
from slimtorch.data import load_digits, make_loaders
from slimtorch.models import create_model
from slimtorch.models.registry import make_spec
from slimtorch.quantize.intformat import load_integer_model
from slimtorch.train import FitConfig, fit


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "lenet300"
    model = create_model("lenet300")
    train, val, _ = make_loaders(load_digits(seed=0), batch_size=64, seed=0)
    fit(model, train, val, FitConfig(epochs=3, seed=0), progress=False)
    save_checkpoint(folder, model, make_spec("lenet300"), {"data": "digits", "seed": 0})
    return folder


def test_linear_int8_export_writes_report_histogram_and_int8_model(checkpoint, tmp_path):
    out = tmp_path / "q"
    argv = [
        "quantize",
        str(checkpoint),
        "--calibrate",
        "percentile",
        "--calib-batches",
        "4",
        "--integer",
        "--backend",
        "reference",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in report["layers"]}
    assert rows["fc1.0.weight"]["size_bits"] == 300 * 64 * 8 + 300 * 32  # values + fp32 scales
    assert abs(report["accuracy_after"] - report["accuracy_before"]) <= 0.02
    assert (out / "histogram.png").read_bytes()[:4] == b"\x89PNG"
    imodel = load_integer_model(out / "int8.safetensors")
    assert imodel(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_user_mistakes_exit_2_with_one_line(checkpoint, tmp_path, capsys):
    assert main(["quantize", str(checkpoint), "--bits", "17", "--out", str(tmp_path)]) == 2
    assert "bits: expected 1..8 or 16" in capsys.readouterr().err
    argv = [
        "quantize",
        str(checkpoint),
        "--granularity",
        "group:7",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "does not divide" in capsys.readouterr().err
