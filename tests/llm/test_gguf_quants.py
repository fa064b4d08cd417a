"""Our GGUF dequantizers and quantizers against the ``gguf`` package's reference numpy code."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from slimtorch.errors import ModelError  # noqa: E402
from slimtorch.llm.gguf_quants import BLOCK_DTYPES, dequantize, quantize  # noqa: E402

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


def test_unsupported_type_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="IQ2_XXS is not supported"):
        dequantize(np.zeros(66, np.uint8), "IQ2_XXS", 256)
