"""Checkpoints round-trip exactly; damaged, missing or newer files give clear ModelErrors."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
from safetensors import safe_open

from slimtorch.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from slimtorch.errors import ModelError
from slimtorch.io import atomic_write_bytes, atomic_write_text
from slimtorch.models import build_model, make_spec


def trained_like(spec):
    """A model with non-default weights and BN statistics (as after training)."""
    torch.manual_seed(0)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.train()(torch.rand(16, 1, 8, 8))  # moves BatchNorm running stats
    return model.eval()


@pytest.mark.parametrize(
    "name,norm", [("resnet", "batch"), ("mobilenetv2", "group"), ("lenet5", "weight")]
)
def test_round_trip_gives_identical_outputs(tmp_path, name, norm):
    spec = make_spec(name, norm=norm, num_classes=5)
    model = trained_like(spec)
    folder = save_checkpoint(tmp_path / "ckpt", model, spec, {"val_accuracy": 0.93})
    x = torch.rand(4, 1, 8, 8)
    for path in (folder, folder / "model.json", folder / "model.safetensors"):
        loaded, spec2, metrics = load_checkpoint(path)
        assert spec2 == spec and metrics == {"val_accuracy": 0.93}
        assert not loaded.training
        assert torch.equal(loaded(x), model(x))
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key


def test_weight_norm_keys_are_stored(tmp_path):
    spec = make_spec("lenet300", norm="weight")
    save_checkpoint(tmp_path, trained_like(spec), spec)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "fc1.0.parametrizations.weight.original0" in keys


def test_header_records_format_version_and_checksum(tmp_path):
    spec = make_spec("lenet5")
    save_checkpoint(tmp_path, trained_like(spec), spec)
    header = json.loads((tmp_path / "model.json").read_text())
    assert header["format"] == "slimtorch-checkpoint" and header["version"] == FORMAT_VERSION
    assert header["spec"] == spec.to_dict()
    data = (tmp_path / "model.safetensors").read_bytes()
    assert header["weights"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert header["weights"]["bytes"] == len(data)


@pytest.fixture
def saved(tmp_path):
    spec = make_spec("lenet5")
    return save_checkpoint(tmp_path / "ckpt", trained_like(spec), spec)


def test_flipped_byte_is_detected(saved):
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model\.safetensors is corrupted"):
        load_checkpoint(saved)


def test_truncated_file_is_detected(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelError, match=r"model\.safetensors is truncated"):
        load_checkpoint(saved)


def test_missing_files_and_bad_paths_are_clear(saved, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere" / "x.pt")
    with pytest.raises(ModelError, match=r"header .* is missing"):
        load_checkpoint(tmp_path)
    (saved / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"weights .* are missing"):
        load_checkpoint(saved / "model.json")


def test_newer_version_and_foreign_json_are_refused(saved):
    header_path = saved / "model.json"
    header = json.loads(header_path.read_text())
    header_path.write_text(json.dumps({**header, "version": FORMAT_VERSION + 1}))
    with pytest.raises(ModelError, match="newer than this slimtorch reads"):
        load_checkpoint(saved)
    header_path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelError, match="not a slimtorch-checkpoint header"):
        load_checkpoint(saved)
    header_path.write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        load_checkpoint(saved)


def resign(header):
    """The header with ``header_sha256`` recomputed as docs say: canonical JSON, no self."""
    body = {k: v for k, v in header.items() if k != "header_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return {**body, "header_sha256": hashlib.sha256(text.encode()).hexdigest()}


def test_spec_that_does_not_fit_the_weights_is_refused(saved):
    header_path = saved / "model.json"
    header = json.loads(header_path.read_text())
    header["spec"]["kwargs"]["num_classes"] = 3
    header_path.write_text(json.dumps(resign(header)))
    with pytest.raises(ModelError, match="does not fit"):
        load_checkpoint(saved)


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h["metrics"].update(seed=7),
        lambda h: h["metrics"].update(test_accuracy=1.0),
        lambda h: h["spec"]["kwargs"].update(act="silu"),
        lambda h: h["weights"].update(file="other.safetensors"),
        lambda h: h.update(comment="hand edit"),
    ],
)
def test_edited_header_is_refused(saved, edit):
    header_path = saved / "model.json"
    header = json.loads(header_path.read_text())
    edit(header)
    header_path.write_text(json.dumps(header))
    with pytest.raises(ModelError, match="edited or corrupted"):
        load_checkpoint(saved)
    header_path.write_text(json.dumps(resign(header), indent=1))  # re-signed: accepted
    load_checkpoint(saved)


def test_version_1_header_without_checksum_loads_with_a_warning(saved):
    header_path = saved / "model.json"
    header = json.loads(header_path.read_text())
    del header["header_sha256"]
    header["version"] = 1
    header_path.write_text(json.dumps(header))
    with pytest.warns(UserWarning, match="without a checksum"):
        load_checkpoint(saved)


def test_metrics_must_be_an_object(saved):
    header_path = saved / "model.json"
    header = json.loads(header_path.read_text())
    header["metrics"] = [1, 2]
    header_path.write_text(json.dumps(resign(header)))
    with pytest.raises(ModelError, match="metrics must be a JSON object"):
        load_checkpoint(saved)


def test_existing_checkpoint_is_not_overwritten_by_default(saved):
    before = (saved / "model.safetensors").read_bytes()
    spec = make_spec("lenet5")
    with pytest.raises(ModelError, match="already holds a checkpoint"):
        save_checkpoint(saved, build_model(spec), spec)
    assert (saved / "model.safetensors").read_bytes() == before
    save_checkpoint(saved, build_model(spec), spec, overwrite=True)
    assert (saved / "model.safetensors").read_bytes() != before


def test_atomic_writes_replace_whole_files_and_leave_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "first")
    os.chmod(target, 0o640)
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.stat(target).st_mode & 0o777 == 0o640  # permissions survive the replace
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_failed_atomic_write_keeps_old_file(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
