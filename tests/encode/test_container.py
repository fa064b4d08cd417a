"""The compressed model file: bit-exact round trip, golden bytes, damaged files refused."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
import torch

from slimtorch.encode.codecs import Codec
from slimtorch.encode.container import (
    MAGIC,
    PREFIX,
    EncodeConfig,
    FormatError,
    load_compressed,
    read_compressed,
    save_compressed,
)
from slimtorch.encode.weights import CodebookWeight, SparseWeight, from_quantized
from slimtorch.errors import ConfigError
from slimtorch.models import build_model, make_spec


def _compress_lenet300(seed: int = 0, keep: float = 0.08, bits: int = 6):
    """LeNet-300-100 pruned to ``keep`` of each weight and k-means-like quantized (linspace)."""
    torch.manual_seed(seed)
    spec = make_spec("lenet300")
    model = build_model(spec)
    codecs = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("weight"):
                continue
            threshold = p.abs().flatten().quantile(1 - keep)
            mask = p.abs() > threshold
            codebook = torch.linspace(float(p.min()), float(p.max()), 2**bits)
            idx = (p[mask].unsqueeze(1) - codebook).abs().argmin(dim=1)
            p.zero_()
            p[mask] = codebook[idx]
            codecs[name] = CodebookWeight(tuple(p.shape), codebook, idx, mask=mask)
    return model, spec, codecs


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32) if t.dtype == torch.float32 else t


def test_round_trip_bit_for_bit(tmp_path: Path) -> None:
    model, spec, codecs = _compress_lenet300()
    summary = save_compressed(tmp_path / "m.slim", model, spec, codecs, metadata={"acc": 0.9})
    loaded, spec2, meta = load_compressed(summary.path)
    assert spec2 == spec and meta == {"acc": 0.9}
    original, decoded = model.state_dict(), loaded.state_dict()
    assert list(original) == list(decoded)
    for name, t in original.items():
        t = t + 0.0  # -0.0 (pruned negative weights) -> +0.0, the decoded zeros' sign
        assert torch.equal(_bits(t), _bits(decoded[name])), name
    fp32_bytes = sum(t.numel() * 4 for t in original.values())
    assert summary.file_bytes == (tmp_path / "m.slim").stat().st_size
    assert fp32_bytes / summary.file_bytes > 15  # 8% kept, 6-bit codes, Huffman


def test_every_codec_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(1)
    spec = make_spec("lenet5")
    model = build_model(spec)
    sd = model.state_dict()
    with torch.no_grad():
        conv = sd["conv1.0.weight"]  # [6, 1, 5, 5]: dense codebook, fp16 centroids
        book16 = torch.tensor([-0.25, -0.125, 0.0, 0.125, 0.25], dtype=torch.float16)
        conv.copy_(book16.float()[torch.randint(0, 5, conv.shape)])
        fc = next(k for k in sd if k.endswith("weight") and sd[k].ndim == 2)
        mask = torch.rand_like(sd[fc]) < 0.05
        sd[fc].mul_(mask)
    codecs = {
        "conv1.0.weight": from_quantized(sd["conv1.0.weight"], book16),
        fc: SparseWeight(tuple(sd[fc].shape), sd[fc][mask], mask=mask, index_bits=3),
    }
    save_compressed(tmp_path / "m.slim", model, spec, codecs)
    file = read_compressed(tmp_path / "m.slim")
    codec_of = {e["name"]: e["codec"] for e in file.header["tensors"]}
    assert codec_of["conv1.0.weight"] == Codec.CODEBOOK and codec_of[fc] == Codec.SPARSE
    for name, t in model.state_dict().items():
        assert torch.equal(t, file.tensors[name]), name


def test_empty_and_fully_pruned_layers(tmp_path: Path) -> None:
    spec = make_spec("lenet300")
    model = build_model(spec)
    w = model.state_dict()["fc2.0.weight"]
    with torch.no_grad():
        w.zero_()
    codec = CodebookWeight(tuple(w.shape), torch.tensor([1.0]), torch.zeros(0, dtype=torch.long),
                           mask=torch.zeros_like(w, dtype=torch.bool))  # fmt: skip
    save_compressed(tmp_path / "m.slim", model, spec, {"fc2.0.weight": codec})
    assert torch.equal(load_compressed(tmp_path / "m.slim")[0].state_dict()["fc2.0.weight"], w)


def test_golden_prefix_bytes(tmp_path: Path) -> None:
    spec = make_spec("lenet300")
    save_compressed(tmp_path / "a.slim", build_model(spec), spec,
                    config=EncodeConfig(compress_header=False))  # fmt: skip
    blob = (tmp_path / "a.slim").read_bytes()
    assert blob[:12] == bytes.fromhex("89 53 4c 49 4d 0d 0a 1a 01 00 00 00")
    hlen, hcrc = struct.unpack_from("<II", blob, 12)
    assert blob[20:52] == b'{"format":"slimtorch-compressed"'
    assert zlib.crc32(blob[20 : 20 + hlen]) == hcrc
    save_compressed(tmp_path / "b.slim", build_model(spec), spec)
    assert (tmp_path / "b.slim").read_bytes()[8:12] == b"\x01\x00\x01\x00"  # zlib flag


def _saved(tmp_path: Path) -> Path:
    model, spec, codecs = _compress_lenet300()
    return save_compressed(tmp_path / "m.slim", model, spec, codecs).path


def test_truncated_files_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    blob = path.read_bytes()
    for cut in (3, PREFIX.size - 1, PREFIX.size + 10, len(blob) - 1):
        bad = tmp_path / f"cut{cut}.slim"
        bad.write_bytes(blob[:cut])
        with pytest.raises(FormatError, match=r"truncated|not a slimtorch"):
            load_compressed(bad)


def test_corrupted_bytes_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    blob = bytearray(path.read_bytes())
    hlen = struct.unpack_from("<I", blob, 12)[0]
    for offset, pattern in ((PREFIX.size + 5, "header"), (PREFIX.size + hlen + 700, "CRC-32")):
        damaged = bytearray(blob)
        damaged[offset] ^= 0x40
        bad = tmp_path / "bad.slim"
        bad.write_bytes(bytes(damaged))
        with pytest.raises(FormatError, match=pattern):
            load_compressed(bad)
    (tmp_path / "extra.slim").write_bytes(bytes(blob) + b"\0")
    with pytest.raises(FormatError, match="unexpected bytes"):
        load_compressed(tmp_path / "extra.slim")


def test_foreign_and_newer_files_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "model.safetensors"
    foreign.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 30)
    with pytest.raises(FormatError, match="not a slimtorch compressed model file"):
        load_compressed(foreign)
    blob = bytearray(_saved(tmp_path).read_bytes())
    blob[8:10] = struct.pack("<H", 2)
    (tmp_path / "new.slim").write_bytes(bytes(blob))
    with pytest.raises(FormatError, match=r"version 2, newer.*upgrade slimtorch"):
        load_compressed(tmp_path / "new.slim")
    with pytest.raises(FormatError, match="cannot read"):
        load_compressed(tmp_path / "missing.slim")


def test_unknown_codec_id_refused(tmp_path: Path) -> None:
    spec = make_spec("lenet300")
    path = save_compressed(tmp_path / "m.slim", build_model(spec), spec,
                           config=EncodeConfig(compress_header=False)).path  # fmt: skip
    blob = path.read_bytes()
    hlen = struct.unpack_from("<I", blob, 12)[0]
    header = json.loads(blob[20 : 20 + hlen])
    header["tensors"][0]["codec"] = 99
    text = json.dumps(header, separators=(",", ":")).encode()
    prefix = PREFIX.pack(MAGIC, 1, 0, len(text), zlib.crc32(text))
    path.write_bytes(prefix + text + blob[20 + hlen :])
    with pytest.raises(FormatError, match="codec id 99, unknown"):
        load_compressed(path)


def test_codec_that_does_not_rebuild_the_weight_is_refused(tmp_path: Path) -> None:
    model, spec, codecs = _compress_lenet300()
    cw = codecs["fc2.0.weight"]
    codecs["fc2.0.weight"] = CodebookWeight(cw.shape, cw.codebook * 2, cw.indices, mask=cw.mask)
    with pytest.raises(ConfigError, match=r"fc2\.0\.weight: its codec does not rebuild"):
        save_compressed(tmp_path / "m.slim", model, spec, codecs)
    with pytest.raises(ConfigError, match="lacks: nope"):
        save_compressed(tmp_path / "m.slim", model, spec, {"nope": cw})
    assert not (tmp_path / "m.slim").exists()


def test_from_quantized_refuses_values_outside_codebook() -> None:
    with pytest.raises(ConfigError, match="not in the codebook"):
        from_quantized(torch.tensor([0.5, 0.3]), torch.tensor([0.5]))


def test_long_codes_use_byte_length_tables(tmp_path: Path) -> None:
    spec = make_spec("lenet300")
    model = build_model(spec)
    w = model.state_dict()["fc1.0.weight"]  # 19,200 entries
    fib = [1, 1]
    while len(fib) < 20:
        fib.append(fib[-1] + fib[-2])  # Fibonacci counts: code lengths up to 19
    idx = torch.repeat_interleave(torch.arange(20), torch.tensor(fib))[: w.numel()]
    idx = torch.cat([idx, torch.full((w.numel() - idx.numel(),), 19)])
    book = torch.linspace(-1, 1, 20)
    with torch.no_grad():
        w.copy_(book[idx].reshape(w.shape))
    codec = CodebookWeight(tuple(w.shape), book, idx)
    path = tmp_path / "m.slim"
    save_compressed(path, model, spec, {"fc1.0.weight": codec},
                    config=EncodeConfig(max_code_length=24))  # fmt: skip
    file = read_compressed(path)
    (entry,) = [e for e in file.header["tensors"] if e["name"] == "fc1.0.weight"]
    assert entry["streams"][1]["lbits"] == 8
    assert torch.equal(file.tensors["fc1.0.weight"], w)
