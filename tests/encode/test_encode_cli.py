"""``slimtorch decode`` / ``inspect`` through the real CLI entry point."""

from __future__ import annotations

from pathlib import Path

import torch

from slimtorch.checkpoint import load_checkpoint
from slimtorch.cli.main import main
from slimtorch.encode.container import save_compressed
from slimtorch.encode.weights import from_quantized
from slimtorch.models import build_model, make_spec


def test_decode_gives_checkpoint_with_the_same_weights(tmp_path: Path, capsys) -> None:
    spec = make_spec("lenet300")
    model = build_model(spec)
    w = model.state_dict()["fc2.0.weight"]
    book = torch.tensor([-0.05, 0.05])
    with torch.no_grad():
        w.copy_(book[(w > 0).long()] * (w.abs() > 0.05))
    codec = from_quantized(w, book, mask=w != 0)
    save_compressed(tmp_path / "m.slim", model, spec, {"fc2.0.weight": codec}, metadata={"a": 1})
    assert main(["decode", str(tmp_path / "m.slim"), "--out", str(tmp_path / "ckpt")]) == 0
    decoded, spec2, metrics = load_checkpoint(tmp_path / "ckpt")
    assert spec2 == spec and metrics["a"] == 1
    for name, t in model.state_dict().items():
        assert torch.equal(t, decoded.state_dict()[name]), name
    assert main(["inspect", str(tmp_path / "m.slim")]) == 0
    out = capsys.readouterr().out
    assert "sparse_codebook" in out and "fc2.0.weight" in out


def test_decode_foreign_file_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "x.slim").write_bytes(b"PK\x03\x04 a zip file")
    assert main(["decode", str(tmp_path / "x.slim"), "--out", str(tmp_path / "o")]) == 2
    assert "not a slimtorch compressed model file" in capsys.readouterr().err
