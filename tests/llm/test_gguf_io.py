"""GGUF export -> load round trip, llama.cpp's layout against an independent forward, bad files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from slimtorch.errors import ModelError
from slimtorch.llm.gguf_export import ExportConfig, export_gguf
from slimtorch.llm.gguf_load import load_gguf
from slimtorch.llm.gguf_quants import quantize

META = {"general.name": "tiny", "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"]}


def test_f32_round_trip_gives_identical_weights(tiny, tmp_path: Path) -> None:
    model = tiny(tie_embeddings=False)
    path = export_gguf(model, tmp_path / "m.gguf", META, ExportConfig(weight_type="F32"))
    back = load_gguf(path)
    assert replace(back.config, norm_eps=1e-5) == model.config  # eps is stored as float32
    assert back.config.norm_eps == pytest.approx(1e-5, rel=1e-6)
    assert back.metadata["general.name"] == "tiny"
    for name, p in model.state_dict().items():
        assert torch.equal(back.model.state_dict()[name], p), name


@pytest.mark.parametrize("weight_type", ["F16", "Q8_0", "Q4_0", "Q4_1"])
def test_quantized_round_trip_equals_gguf_quantize_dequantize(tiny, tmp_path, weight_type) -> None:
    model = tiny()
    path = export_gguf(model, tmp_path / "m.gguf", META, ExportConfig(weight_type=weight_type))
    back = load_gguf(path)
    assert back.tensor_types["layers.0.attention.wv.weight"] == weight_type
    qtype = gguf.GGMLQuantizationType[weight_type]
    w = model.layers[1].feed_forward.w2.weight.detach().numpy()
    raw = gguf.quants.quantize(w, qtype)
    expected = gguf.quants.dequantize(raw, qtype).reshape(w.shape)
    np.testing.assert_array_equal(
        back.model.layers[1].feed_forward.w2.weight.detach().numpy(), expected
    )
    # re-exporting what we read gives the same bytes: quantization is idempotent on its grid
    again = load_gguf(
        export_gguf(back.model, tmp_path / "m2.gguf", META, ExportConfig(weight_type=weight_type))
    )
    for name, p in back.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[name], p, rtol=0, atol=1e-6)


def test_model_matches_llamacpp_layout_reference(tiny, reference, tmp_path: Path) -> None:
    """Ours (unpermuted rows, rotate-half RoPE) == a pairwise-RoPE forward on the GGUF rows."""
    model = tiny()
    path = export_gguf(model, tmp_path / "m.gguf", META, ExportConfig(weight_type="F32"))
    tokens = [3, 17, 42, 5, 88, 1, 0, 64, 9, 31, 2, 77]
    ref = reference(str(path), tokens)
    with torch.inference_mode():
        ours = load_gguf(path).model(torch.tensor([tokens]))[0]
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_not_a_gguf_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(ModelError, match="not a GGUF file"):
        load_gguf(bad)
    with pytest.raises(ModelError, match="no such GGUF file"):
        load_gguf(tmp_path / "missing.gguf")


def test_unsupported_architecture(tiny, tmp_path: Path) -> None:
    w = gguf.GGUFWriter(tmp_path / "g.gguf", "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError, match="architecture 'gpt2' is not supported"):
        load_gguf(tmp_path / "g.gguf")


def test_unsupported_tensor_type(tiny, tmp_path: Path) -> None:
    """A file with an IQ-quantized tensor names the type it cannot read."""
    model = tiny()
    path = export_gguf(model, tmp_path / "m.gguf", META, ExportConfig(weight_type="F32"))
    r = gguf.GGUFReader(path)
    w = gguf.GGUFWriter(tmp_path / "iq.gguf", "llama")
    for key, f in r.fields.items():
        if not key.startswith("GGUF.") and key != "general.architecture":
            sub = f.types[-1] if len(f.types) > 1 else None
            w.add_key_value(key, f.contents(), f.types[0], sub)
    for t in r.tensors:
        data = np.asarray(t.data).reshape(tuple(reversed([int(d) for d in t.shape])))
        if t.name == "blk.0.ffn_up.weight":  # 96 x 64 -> fake IQ4_NL bytes (18 per 32)
            data = quantize(data, "Q4_0").reshape(data.shape[0], -1)
            w.add_tensor(t.name, data, raw_dtype=gguf.GGMLQuantizationType.IQ4_NL)
        else:
            w.add_tensor(t.name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError, match="IQ4_NL is not supported"):
        load_gguf(tmp_path / "iq.gguf")
