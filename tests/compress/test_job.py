"""The main job (``slimtorch compress``) end to end with a tiny epoch count."""

from __future__ import annotations

import json

import torch

from slimtorch.cli.main import main
from slimtorch.compress.job import compress
from slimtorch.data import load_data, make_loaders
from slimtorch.encode import load_compressed
from slimtorch.train import evaluate

LENET300_8X8_PARAMS = 50_610  # 64*300+300 + 300*100+100 + 100*10+10
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def test_main_job_end_to_end(tmp_path) -> None:
    out = tmp_path / "out"
    outcome = compress("default", out=out, epochs=1, stage_epochs=1, progress=False)
    result, summary = outcome.result, outcome.summary
    file = out / "model.slim"
    assert file.exists() and result.file.path == file
    # ratio: original fp32 bytes over every byte of the file
    assert result.original_bytes == 4 * LENET300_8X8_PARAMS
    assert summary["ratio"] == round(4 * LENET300_8X8_PARAMS / file.stat().st_size, 2)
    # decoded weights are the pruned + quantized weights, bit for bit
    decoded, _spec, _ = load_compressed(file)
    want = result.model.state_dict()
    for key, t in decoded.state_dict().items():
        assert torch.equal(_bits(t), _bits(want[key])), key
    # decoded accuracy equals the in-memory compressed model's
    splits = load_data("digits", seed=0)
    test = make_loaders(splits, 64, seed=0)[2]
    acc = evaluate(decoded, test).accuracy
    assert acc == evaluate(result.model, test).accuracy == result.records[-1].test_accuracy
    assert summary["decoded_test_accuracy"] == acc and summary["bit_exact"] is True
    # pruned positions really are gone and shared values really are few
    w = want["fc1.0.weight"]
    assert int((w != 0).sum()) == w.numel() - round(0.93 * w.numel())
    assert len(w[w != 0].unique()) <= 2**4 - 1
    report = json.loads((out / "report.json").read_text())
    assert next(s["stage"] for s in report["stages"]) == "original"
    assert report["stages"][-1]["size_bytes"] == file.stat().st_size
    assert (out / "report.md").read_text().startswith("# Compression report")
    for png in ("size_per_stage.png", "weights_fc2.0.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    assert (out / "decoded" / "model.safetensors").exists()


def test_cli_reuses_the_cached_baseline_and_reports_errors(tmp_path, capsys) -> None:
    out = tmp_path / "o"
    args = ["compress", "--out", str(out), "--epochs", "1", "--stage-epochs", "1", "--quiet"]
    assert main(args) == 0
    baseline = out / "baseline" / "model.safetensors"
    first = baseline.stat().st_mtime_ns
    assert main(args) == 0
    assert baseline.stat().st_mtime_ns == first  # cached baseline reused
    assert "bit-exact: True" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[stage]]\nkind = "prune"\nsparsity = 2.0\n')
    assert main(["compress", "--recipe", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.toml: stage 0 (prune)" in err and "sparsity" in err


def test_the_package_root_exports_the_jobs_compress() -> None:
    """``slimtorch.compress`` (the public verb) is the job's function; the package's modules
    are reached with ``from slimtorch.compress import job`` (the name is taken by the verb)."""
    import slimtorch
    from slimtorch.compress import job

    assert slimtorch.compress is job.compress is compress
