"""The CLI end to end: real runs on the zoo, parseable outputs, one-line errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slimtorch.cli.main import main
from slimtorch.cli.options import parse_shape
from slimtorch.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slimtorch", *args], capture_output=True, text=True, timeout=300
    )


def test_parse_shape() -> None:
    assert parse_shape("1,3,32,32") == (1, 3, 32, 32)
    assert parse_shape("2x1x8x8") == (2, 1, 8, 8)
    for bad in ("", "a,b", "1,0,8", "-1,2"):
        with pytest.raises(ConfigError):
            parse_shape(bad)


def test_profile_writes_json_csv_png(tmp_path: Path) -> None:
    out = tmp_path / "p"
    rc = main(
        [
            "profile",
            "lenet5",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--batch-sizes",
            "1,4",
            "--no-roofline",
            "--quiet",
            "--json",
            f"{out}.json",
            "--csv",
            f"{out}.csv",
            "--plot",
            f"{out}.png",
        ]
    )
    assert rc == 0
    data = json.loads(Path(f"{out}.json").read_text())
    assert data["params"] == sum(layer["params"] for layer in data["layers"])
    assert data["macs"] == sum(layer["macs"] for layer in data["layers"])
    assert data["input_shape"] == [1, 1, 8, 8]
    assert [t["batch_size"] for t in data["throughput"]] == [1, 4]
    rows = list(csv.DictReader(Path(f"{out}.csv").read_text().splitlines()))
    assert rows[-1]["name"] == "TOTAL" and int(rows[-1]["macs"]) == data["macs"]
    assert Path(f"{out}.png").read_bytes()[:8] == PNG_MAGIC


def test_profile_compare_two_models(tmp_path: Path) -> None:
    rc = main(
        [
            "profile",
            "vgg",
            "lenet5",
            "--no-latency",
            "--no-roofline",
            "--json",
            str(tmp_path / "c.json"),
        ]
    )
    assert rc == 0
    both = json.loads((tmp_path / "c.json").read_text())
    assert [p["name"] for p in both] == ["vgg", "lenet5"]


def test_train_then_profile_checkpoint(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    assert main(["train", "--model", "lenet300", "--epochs", "2", "--out", str(ck), "--quiet"]) == 0
    assert (ck / "model.safetensors").exists() and (ck / "model.json").exists()
    assert main(["evaluate", str(ck), "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["accuracy"] > 0.7 and result["n"] > 200
    assert main(["profile", str(ck), "--no-latency", "--no-roofline", "--quiet"]) == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["profile", "no_such_model"], "no_such_model"),
        (["profile", "nosuchpkg.mod:factory", "--input-shape", "1,1,8,8"], "nosuchpkg"),
        (["profile", "lenet5", "--input-shape", "1,3,5"], "1x3x5"),
        (["profile", "lenet5", "--input-shape", "1,x"], "--input-shape"),
        (["train", "--data", "/nonexistent/file.npz", "--out", "/tmp/never"], "file.npz"),
        (["evaluate", "/nonexistent/ckpt"], "/nonexistent/ckpt"),
        (["train", "--out", "/etc/hostname", "--epochs", "1"], "is a file"),
        (["profile", "lenet5", "--weight-bits", "0", "--no-latency"], "--weight-bits"),
        (
            [
                "profile",
                "lenet5",
                "--json",
                "/etc/hostname/p.json",
                "--no-latency",
                "--no-roofline",
            ],
            "not a folder",
        ),
    ],
)
def test_user_errors_are_one_line(args: list[str], needle: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and needle in lines[0]


def test_help_explains_every_option() -> None:
    proc = run_cli("profile", "--help")
    assert proc.returncode == 0
    for option in ("--input-shape", "--json", "--csv", "--plot", "--batch-sizes", "--runs"):
        assert option in proc.stdout


def test_user_factory_from_working_directory(tmp_path: Path) -> None:
    (tmp_path / "mynet.py").write_text(
        "import torch.nn as nn\n\n"
        "def build(width=8):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.Flatten(),\n"
        "                         nn.LazyLinear(5))\n"
    )
    script = Path(sys.executable).with_name("slimtorch")
    proc = subprocess.run(
        [
            str(script),
            "profile",
            "mynet:build",
            "--input-shape",
            "1,3,10,10",
            "--no-latency",
            "--no-roofline",
            "--quiet",
            "--json",
            "p.json",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": "."},  # the working folder is never on sys.path implicitly
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "p.json").read_text())
    conv_macs = 8 * 8 * 8 * 3 * 3 * 3  # out elements x (Cin x k x k)
    assert data["macs"] == conv_macs + 8 * 8 * 8 * 5
    assert data["output_shape"] == [1, 5]


def test_weight_bits_option_sizes_weights(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    assert (
        main(
            [
                "profile",
                "lenet300",
                "--weight-bits",
                "4",
                "--sparse-layout",
                "dense",
                "--no-latency",
                "--no-roofline",
                "--quiet",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    weights = 64 * 300 + 300 * 100 + 100 * 10
    biases = 300 + 100 + 10
    assert data["size_bits"] == 4 * weights + 32 * biases


def test_existing_checkpoint_refused_before_training(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    assert main(["train", "--model", "lenet300", "--epochs", "1", "--out", str(ck), "--quiet"]) == 0
    before = (ck / "model.safetensors").read_bytes()
    proc = run_cli("train", "--model", "lenet300", "--epochs", "500", "--out", str(ck))
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert (ck / "model.safetensors").read_bytes() == before


def test_flat_data_with_zoo_model_is_one_line(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "flat.npz", x=rng.random((60, 20)).astype("float32"), y=rng.integers(0, 3, 60)
    )
    proc = run_cli("train", "--data", str(tmp_path / "flat.npz"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "[20]" in proc.stderr and "factory" in proc.stderr


def test_evaluate_defaults_to_training_split_seed(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    args = ["train", "--model", "lenet300", "--epochs", "2", "--seed", "5", "--quiet"]
    assert main([*args, "--out", str(ck)]) == 0
    meta = json.loads((ck / "model.json").read_text())
    out = tmp_path / "e.json"
    assert main(["evaluate", str(ck), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["accuracy"] == meta["metrics"]["test_accuracy"]


def test_token_model_with_int64_input(tmp_path: Path) -> None:
    (tmp_path / "tok.py").write_text(
        "import torch.nn as nn\n\n"
        "def build():\n"
        "    return nn.Sequential(nn.Embedding(100, 16), nn.Linear(16, 100))\n"
    )
    script = Path(sys.executable).with_name("slimtorch")
    proc = subprocess.run(
        [
            str(script),
            "profile",
            "tok:build",
            "--input-shape",
            "1,12",
            "--input-dtype",
            "int64",
            "--no-latency",
            "--no-roofline",
            "--quiet",
            "--json",
            "p.json",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": "."},  # the working folder is never on sys.path implicitly
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "p.json").read_text())["macs"] == 12 * 16 * 100
