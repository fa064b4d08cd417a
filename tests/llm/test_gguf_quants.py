"""Our GGUF dequantizers and quantizers against the ``gguf`` package's reference numpy code,
and the types we hand to ``gguf`` against slow transcriptions of ggml's C loops."""

from __future__ import annotations

import math

import gguf
import numpy as np
import pytest

from slimtorch.errors import ModelError
from slimtorch.llm.gguf_quants import (
    BLOCK_DTYPES,
    GGUF_DEQUANTIZE,
    GGUF_QUANTIZE,
    QK_K,
    dequantize,
    quantize,
)

TYPES = sorted(BLOCK_DTYPES)


def random_blocks(type_name: str, n: int, seed: int) -> np.ndarray:
    """Random block bytes with finite, moderate fp16 scale fields."""
    rng = np.random.default_rng(seed)
    dt = BLOCK_DTYPES[type_name]
    raw = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8)
    blocks = raw.view(dt)
    for field in ("d", "m", "dmin"):
        if field in dt.names:
            blocks[field] = rng.uniform(-0.1, 0.1, size=n).astype(np.float16)
    return raw


@pytest.mark.parametrize("type_name", TYPES)
def test_dequantize_matches_gguf_reference(type_name: str) -> None:
    qtype = gguf.GGMLQuantizationType[type_name]
    block_elems, _ = gguf.GGML_QUANT_SIZES[qtype]
    raw = random_blocks(type_name, 24, seed=len(type_name))
    ref = gguf.quants.dequantize(raw.reshape(4, -1), qtype).reshape(-1)
    ours = dequantize(raw, type_name, 24 * block_elems)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("type_name", ["F16", "BF16"])
def test_float_types(type_name: str) -> None:
    x = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    qtype = gguf.GGMLQuantizationType[type_name]
    raw = gguf.quants.quantize(x.reshape(2, 32), qtype)
    ref = gguf.quants.dequantize(raw, qtype).reshape(-1)
    np.testing.assert_array_equal(dequantize(raw, type_name, 64), ref)


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_0", "Q4_1"])
def test_quantize_bit_exact_with_gguf(type_name: str) -> None:
    x = np.random.default_rng(1).standard_normal((6, 96)).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero block
    ref = gguf.quants.quantize(x, gguf.GGMLQuantizationType[type_name]).reshape(-1)
    np.testing.assert_array_equal(quantize(x, type_name), ref)


def q8_0_ref(x: np.ndarray) -> bytes:
    """ggml's ``quantize_row_q8_0_ref``, one value at a time in float32, C ``roundf``."""
    out = bytearray()
    for blk in x.reshape(-1, 32):
        d = np.float32(max(abs(v) for v in blk)) / np.float32(127)
        inv = np.float32(1) / d if d else np.float32(0)
        out += np.float16(d).tobytes()
        for v in blk:
            y = float(np.float32(v) * inv)  # exact in float64: add 0.5 without rounding
            out += int(math.copysign(math.floor(abs(y) + 0.5), y)).to_bytes(
                1, "little", signed=True
            )
    return bytes(out)


def test_q8_0_quantize_equals_ggml_loop() -> None:
    assert GGUF_QUANTIZE == ("Q8_0",)  # the type this test pins
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    x[1, :32] = 0.0
    x[2, :32] = np.arange(-16, 16) * np.float32(127 / 16)  # exact halves: d = 1
    x[2, 32:] = np.float32(127) * np.sign(rng.standard_normal(32))
    x[3, :32] = np.float32(0.49999997) * np.sign(np.arange(32) - 15.5)  # just below a half
    x[3, 0] = 127  # so the scale is 1 and the values stay just below 0.5
    assert quantize(x, "Q8_0").tobytes() == q8_0_ref(x)


def test_q8_0_golden_block() -> None:
    """d = 1.0 (fp16 0x3C00); halves round away from zero, as C's roundf."""
    x = np.zeros(32, np.float32)
    x[:6] = [127, -127, 2.5, -2.5, 0.5, -0.5]
    raw = quantize(x, "Q8_0").tobytes()
    assert raw[:2] == b"\x00\x3c"
    assert list(np.frombuffer(raw[2:8], np.int8)) == [127, -127, 3, -3, 1, -1]


def q6_k_ref(raw: np.ndarray) -> np.ndarray:
    """ggml's ``dequantize_row_q6_K``: its C loop over one super-block at a time."""
    out = []
    for b in raw.view(BLOCK_DTYPES["Q6_K"]):
        d = np.float32(b["d"])
        ql, qh, sc = (b[f].tolist() for f in ("ql", "qh", "scales"))
        y = [0.0] * QK_K
        for half in range(2):  # ql += 64, qh += 32, sc += 8, y += 128 per half
            qo, ho, so, yo = 64 * half, 32 * half, 8 * half, 128 * half
            for ll in range(32):
                s = so + ll // 16
                h = qh[ho + ll]
                q1 = (ql[qo + ll] & 0xF | ((h >> 0) & 3) << 4) - 32
                q2 = (ql[qo + ll + 32] & 0xF | ((h >> 2) & 3) << 4) - 32
                q3 = (ql[qo + ll] >> 4 | ((h >> 4) & 3) << 4) - 32
                q4 = (ql[qo + ll + 32] >> 4 | ((h >> 6) & 3) << 4) - 32
                for k, q in enumerate((q1, q2, q3, q4)):
                    y[yo + ll + 32 * k] = d * np.float32(sc[s + 2 * k]) * np.float32(q)
        out += y
    return np.array(out, np.float32)


def test_q6_k_dequantize_equals_ggml_loop() -> None:
    assert GGUF_DEQUANTIZE == ("Q6_K",)  # the type this test pins
    raw = random_blocks("Q6_K", 3, seed=9)
    np.testing.assert_array_equal(dequantize(raw, "Q6_K", 3 * QK_K), q6_k_ref(raw))


def test_unsupported_type_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="IQ2_XXS is not supported"):
        dequantize(np.zeros(66, np.uint8), "IQ2_XXS", 256)
