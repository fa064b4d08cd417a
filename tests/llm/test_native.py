"""The native (C) decode engine against float64 references of its arithmetic and against the
module forward; both the AVX2 build and the portable scalar build are checked."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtorch.errors import ConfigError
from slimtorch.llm import native
from slimtorch.llm.generate import GenerateConfig, decoder, generate
from slimtorch.llm.kernels import (
    Int4Linear,
    Int8Linear,
    KernelConfig,
    convert_linears,
    unpack_int4_codes,
)

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler for the engine")


@pytest.fixture(scope="module")
def scalar_lib(tmp_path_factory):
    """The portable build (plain -O3, no AVX2 intrinsics): the fallback path."""
    path = native.build(flags=(("-O3",),), directory=tmp_path_factory.mktemp("scalar"))
    lib = native.load(path)
    assert lib.slim_has_avx2() == 0
    return lib


def quantize_rows_ref(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per block (round half to even, as C's lrintf): codes and scales, f64."""
    xb = x.float().reshape(-1, block)
    d = xb.abs().amax(1) / 127.0  # fp32 arithmetic throughout, as the C code
    inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    return torch.round(xb * inv[:, None]).double(), d.double()


def q4_reference(lin: Int4Linear, x: torch.Tensor) -> torch.Tensor:
    """y = sum_g s*dx*sum(q*xq) + (z - 8 s)*sum(x), in float64 (the engine's arithmetic)."""
    codes = unpack_int4_codes(lin).double()  # [N, K]
    n, k = codes.shape
    g = lin.group_size
    s = lin.scales_zeros[..., 0].T.double()  # [N, K/G]
    z = lin.scales_zeros[..., 1].T.double()
    xq, dx = quantize_rows_ref(x, g)  # [K/G, G], [K/G]
    dots = (codes.reshape(n, k // g, g) * xq[None]).sum(-1)  # [N, K/G]
    gsum = x.double().reshape(k // g, g).sum(-1)
    return (s * dx[None] * dots + (z - 8 * s) * gsum[None]).sum(-1)


def q8_reference(lin: Int8Linear, x: torch.Tensor) -> torch.Tensor:
    xq, dx = quantize_rows_ref(x, native.QBLOCK)
    w = lin.w_int8.double().reshape(lin.out_features, -1, native.QBLOCK)
    return (w * xq[None]).sum(-1).mul(dx[None]).sum(-1) * lin.scales.double()


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    blocks=st.integers(1, 20),
    group_blocks=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 2**16),
)
def test_q4_linear_equals_reference(n, blocks, group_blocks, seed) -> None:
    k = native.QBLOCK * group_blocks * blocks
    torch.manual_seed(seed)
    lin = nn.Linear(k, 16 * ((n + 15) // 16), bias=False)
    q = Int4Linear.from_linear(lin, native.QBLOCK * group_blocks, keep_fp32=False)
    x = torch.randn(k) * torch.rand(k) * 3
    ref = q4_reference(q, x)
    got = native.NativeLinear(q)(x).double()
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()) + 1e-6)


def test_q4_error_within_activation_quantization_bound() -> None:
    """Against dequantize-then-matmul: the only difference is x's int8 rounding, at most
    dx/2 per input, so |error| <= sum_j |w_j| * dx_group / 2 (plus float rounding)."""
    torch.manual_seed(1)
    lin = nn.Linear(256, 48, bias=False)
    q = Int4Linear.from_linear(lin, 64, keep_fp32=False)
    x = torch.randn(256)
    w = q.dequantized().double()
    exact = w @ x.double()
    _, dx = quantize_rows_ref(x, 64)
    bound = (w.abs().reshape(48, 4, 64).sum(-1) * dx[None] / 2).sum(-1)
    err = (native.NativeLinear(q)(x).double() - exact).abs()
    assert bool((err <= bound * 1.001 + 1e-5).all())
    assert float(err.max()) > 0  # the activations really are quantized


def test_q8_and_f32_linears() -> None:
    torch.manual_seed(2)
    lin = nn.Linear(96, 40, bias=False)
    x = torch.randn(96)
    q8 = Int8Linear.from_linear(lin, keep_fp32=False)
    ref8 = q8_reference(q8, x)
    assert torch.allclose(native.NativeLinear(q8)(x).double(), ref8, rtol=1e-4, atol=1e-4)
    ref32 = lin.weight.double() @ x.double()
    assert torch.allclose(native.NativeLinear(lin)(x).double(), ref32, atol=1e-5)


def test_scalar_build_equals_avx2_build(scalar_lib) -> None:
    torch.manual_seed(3)
    for group, k in ((32, 96), (64, 640), (128, 1024)):
        q = Int4Linear.from_linear(nn.Linear(k, 32, bias=False), group, keep_fp32=False)
        x = torch.randn(k)
        lin = native.NativeLinear(q)
        assert torch.allclose(lin(x, lib=scalar_lib), lin(x), rtol=1e-5, atol=1e-4)
    q8 = native.NativeLinear(Int8Linear.from_linear(nn.Linear(64, 8, bias=False)))
    x = torch.randn(64)
    assert torch.allclose(q8(x, lib=scalar_lib), q8(x), rtol=1e-5, atol=1e-5)


def pack_reference(codes: torch.Tensor) -> torch.Tensor:
    """Byte j of each 32-block: code j in the low nibble, code j + 16 in the high one."""
    n, k = codes.shape
    out = torch.zeros(n, k // 2, dtype=torch.uint8)
    for r in range(n):
        for b in range(k // 32):
            for j in range(16):
                lo, hi = int(codes[r, 32 * b + j]), int(codes[r, 32 * b + j + 16])
                out[r, 16 * b + j] = lo | (hi << 4)
    return out


def test_pack_q4_codes_gguf_nibble_order() -> None:
    codes = torch.randint(0, 16, (3, 64))
    assert torch.equal(native.pack_q4_codes(codes), pack_reference(codes))


def native_logits(model, tokens: torch.Tensor, n_prefill: int, threads: int = 1):
    model.setup_cache(1, tokens.shape[1])
    out = []
    with torch.inference_mode():
        model(tokens[:, :n_prefill])
        eng = native.NativeDecoder(model, threads=threads)
        for i in range(n_prefill, tokens.shape[1]):
            out.append(eng.step(tokens[:, i : i + 1], i)[0])
    model.clear_cache()
    return torch.stack(out)


@pytest.mark.parametrize(("mode", "rtol"), [("fp32", 1e-5), ("int8", 3e-2), ("int4", 3e-2)])
def test_step_equals_module_forward(tiny, mode: str, rtol: float) -> None:
    """Decoded logits (prefill in torch, then native steps) against one full forward."""
    model = tiny(seed=4)
    convert_linears(model, KernelConfig(mode=mode, group_size=32, prefill_rows=64))
    tokens = torch.randint(0, model.config.vocab_size, (1, 12))
    with torch.inference_mode():
        ref = model(tokens)[0, 5:]
    got = native_logits(model, tokens, 5)
    scale = float(ref.abs().max())
    assert float((got - ref).abs().max()) <= rtol * scale + 1e-6
    # two threads split rows differently but sum each row in the same order
    assert torch.equal(native_logits(model, tokens, 5, threads=2), got)


def test_generate_native_equals_torch_engine_fp32(tiny) -> None:
    model = tiny(seed=5)
    cfg = dict(max_new_tokens=10, temperature=0.8, top_k=20, seed=3)
    a = generate(model, [1, 2, 3], GenerateConfig(engine="native", **cfg))
    b = generate(model, [1, 2, 3], GenerateConfig(engine="torch", **cfg))
    assert (a.engine, b.engine) == ("native", "torch")
    assert a.tokens == b.tokens


def test_auto_falls_back_for_layers_it_cannot_run(tiny) -> None:
    model = tiny(seed=6)
    model.layers[0].attention.wq = nn.Sequential(model.layers[0].attention.wq)
    model.setup_cache(1, 8)
    assert decoder(model, "auto").name == "torch"
    with pytest.raises(native.NativeUnavailable, match="unsupported layer type Sequential"):
        decoder(model, "native")
    model.clear_cache()


def test_errors(tiny, tmp_path, monkeypatch) -> None:
    model = tiny(seed=7)
    with pytest.raises(ConfigError, match="setup_cache"):
        native.NativeDecoder(model)
    model.setup_cache(1, 4)
    eng = native.NativeDecoder(model)
    with pytest.raises(ConfigError, match="exceeds its length"):
        eng.step(torch.tensor([[1]]), 4)
    with pytest.raises(ConfigError, match="token or position"):
        eng.step(torch.tensor([[10_000]]), 0)
    with pytest.raises(ConfigError, match="batch 1"):
        eng.step(torch.tensor([[1], [2]]), 0)
    with pytest.raises(ConfigError, match="engine"):
        GenerateConfig(engine="fast")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises(native.NativeUnavailable, match="build failed"):
        native.build(directory=tmp_path)
