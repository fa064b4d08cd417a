"""Packed int4 / int8 Linear layers against dequantize-then-matmul references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slimtorch.errors import ConfigError
from slimtorch.llm.kernels import (
    Int4Linear,
    Int8Linear,
    KernelConfig,
    convert_linears,
    quantize_int4_groups,
)


def reference_int4_weight(w: torch.Tensor, group: int) -> torch.Tensor:
    """Straightforward per-group min/max 4-bit grid, scale/zero rounded to bf16 like the kernel."""
    n, k = w.shape
    out = torch.empty_like(w)
    for r in range(n):
        for g0 in range(0, k, group):
            blk = w[r, g0 : g0 + group]
            lo, hi = float(blk.min()), float(blk.max())
            s = max((hi - lo) / 15, 1e-8)
            q = torch.clamp(torch.round((blk - lo) / s), 0, 15)
            s_b = torch.tensor(s).bfloat16().float()
            z_b = torch.tensor(lo + 8 * s).bfloat16().float()
            out[r, g0 : g0 + group] = (q - 8) * s_b + z_b
    return out


@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("rows", [1, 3])
def test_int4_decode_equals_dequantize_then_matmul(group: int, rows: int) -> None:
    torch.manual_seed(group + rows)
    lin = torch.nn.Linear(256, 48, bias=False)
    q = Int4Linear.from_linear(lin, group_size=group)
    w_ref = reference_int4_weight(lin.weight.detach(), group)
    x = torch.randn(rows, 256)
    expected = F.linear(x.bfloat16().float(), w_ref)  # the kernel sees bf16 activations
    torch.testing.assert_close(q(x), expected, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(q.dequantized(), w_ref, rtol=0, atol=1e-6)


def test_int4_prefill_uses_the_same_weights_in_fp32() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 48, bias=False)
    q = Int4Linear.from_linear(lin, group_size=32, prefill_rows=4)
    x = torch.randn(2, 16, 128)  # 32 rows -> fp32 path
    w_ref = reference_int4_weight(lin.weight.detach(), 32)
    torch.testing.assert_close(q(x), F.linear(x, w_ref), rtol=1e-5, atol=1e-5)


def test_int8_equals_dequantize_then_matmul() -> None:
    torch.manual_seed(1)
    lin = torch.nn.Linear(96, 32, bias=False)
    q = Int8Linear.from_linear(lin)
    w = lin.weight.detach()
    s = (w.abs().amax(1) / 127).bfloat16().float()
    w_ref = torch.round(w / (w.abs().amax(1) / 127)[:, None]).clamp(-127, 127) * s[:, None]
    x = torch.randn(1, 96)
    torch.testing.assert_close(q(x), F.linear(x.bfloat16().float(), w_ref), rtol=2e-2, atol=2e-2)


def test_int4_grid_property() -> None:
    """Every group's min and max are reproduced exactly (before bf16 rounding)."""
    w = torch.randn(8, 64)
    q, scale, zero = quantize_int4_groups(w, 32)
    assert q.min() >= 0 and q.max() <= 15
    lo = (zero - 8 * scale).reshape(-1)
    torch.testing.assert_close(lo, w.reshape(8, 2, 32).amin(-1).reshape(-1))


def test_convert_model(tiny) -> None:
    model = tiny()
    tokens = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.inference_mode():
        ref = model(tokens)
        names = convert_linears(model, KernelConfig(mode="int4", group_size=32))
        out = model(tokens[:, :1])
    assert "output" in names and "layers.1.feed_forward.w2" in names
    assert isinstance(model.layers[0].attention.wq, Int4Linear)
    assert (out[0, 0] - ref[0, 0]).abs().max() < 0.1 * ref.abs().max()
    with pytest.raises(ConfigError, match="group_size"):
        KernelConfig(group_size=48)
