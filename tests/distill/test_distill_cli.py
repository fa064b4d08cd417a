"""``slimtorch distill`` end to end on the built-in digits (tiny epoch counts)."""

from __future__ import annotations

from pathlib import Path

from slimtorch.checkpoint import load_checkpoint
from slimtorch.cli.main import main


def test_distill_cli_writes_student_checkpoint(tmp_path: Path, capsys) -> None:
    teacher = tmp_path / "teacher"
    assert main(["train", "--model", "lenet300", "--epochs", "2", "--out", str(teacher),
                 "--quiet"]) == 0  # fmt: skip
    out = tmp_path / "student"
    argv = ["distill", "--teacher", str(teacher), "--student", "lenet300",
            "--student-arg", "hidden=[16,8]", "--epochs", "1", "--out", str(out), "--quiet",
            "--hint", "fc2.0:fc2.0"]  # fmt: skip
    assert main(argv) == 0
    _model, spec, metrics = load_checkpoint(out)
    assert spec.kwargs["hidden"] == [16, 8] and "teacher_test_accuracy" in metrics
    assert metrics["distill"]["hints"] == [["fc2.0", "fc2.0"]]
    assert main(argv) == 2  # refuses to overwrite
    assert "already holds a checkpoint" in capsys.readouterr().err
