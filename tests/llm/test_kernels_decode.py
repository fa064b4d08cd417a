"""The fused decode plan against the module-by-module forward, and fused kernels against
their separate parts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimtorch.errors import ConfigError
from slimtorch.llm.decode import decode_plan, fused_kernel
from slimtorch.llm.generate import GenerateConfig, generate
from slimtorch.llm.kernels import (
    Int4Linear,
    Int8Linear,
    KernelConfig,
    convert_linears,
    fuse_quantized,
)


class Wrapped(nn.Module):
    """A Linear-like layer the plan does not know (as a compressor might install)."""

    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        self.inner = lin
        self.out_features = lin.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def stepwise_reference(model, tokens: torch.Tensor, n_prefill: int) -> torch.Tensor:
    """Logits of every position after the prompt, from ``model.forward`` one token at a time."""
    out = []
    model.setup_cache(tokens.shape[0], tokens.shape[1])
    model(tokens[:, :n_prefill])
    for i in range(n_prefill, tokens.shape[1]):
        out.append(model(tokens[:, i : i + 1], start_pos=i)[:, 0])
    model.clear_cache()
    return torch.stack(out, 1)


def plan_logits(model, tokens: torch.Tensor, n_prefill: int) -> torch.Tensor:
    out = []
    model.setup_cache(tokens.shape[0], tokens.shape[1])
    model(tokens[:, :n_prefill])
    plan = decode_plan(model)
    for i in range(n_prefill, tokens.shape[1]):
        out.append(plan.step(tokens[:, i : i + 1], i))
    model.clear_cache()
    return torch.stack(out, 1)


@pytest.mark.parametrize("mode", ["fp32", "int8", "int4"])
@pytest.mark.parametrize("batch", [1, 2])
def test_plan_equals_module_forward(tiny, mode: str, batch: int) -> None:
    model = tiny(seed=batch)
    convert_linears(model, KernelConfig(mode=mode, group_size=32, prefill_rows=2))
    tokens = torch.randint(0, 96, (batch, 14), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = stepwise_reference(model, tokens, 5)
        got = plan_logits(model, tokens, 5)
    tol = 1e-5 if mode == "fp32" else 2e-2  # bf16 activations in the quantized kernels
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)


def test_plan_with_mixed_and_unknown_layers(tiny) -> None:
    model = tiny(n_kv_heads=4)  # plain multi-head attention too
    convert_linears(model, KernelConfig(mode="int4", include=r"layers\.0\..*"))
    att = model.layers[1].attention
    att.wk = Wrapped(att.wk)  # q/k/v of mixed kinds: not fused, called one by one
    model.layers[1].feed_forward.w1 = Wrapped(model.layers[1].feed_forward.w1)
    tokens = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        torch.testing.assert_close(
            plan_logits(model, tokens, 4),
            stepwise_reference(model, tokens, 4),
            rtol=2e-2,
            atol=2e-2,
        )


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_fused_kernel_equals_separate_layers(kind: str) -> None:
    torch.manual_seed(0)
    lins = [nn.Linear(128, n, bias=False) for n in (64, 16, 48)]
    conv = Int4Linear.from_linear if kind == "int4" else Int8Linear.from_linear
    mods = [conv(lin) for lin in lins]
    x = torch.randn(2, 128)
    separate = torch.cat([m(x) for m in mods], -1)
    assert fuse_quantized(mods) is not None
    torch.testing.assert_close(fused_kernel(mods)(x).float(), separate, rtol=0, atol=0)


def test_no_fusion_across_kinds_or_group_sizes() -> None:
    lins = [nn.Linear(128, 32, bias=False) for _ in range(2)]
    assert fuse_quantized(lins) is None
    assert (
        fuse_quantized([Int4Linear.from_linear(lins[0], 32), Int8Linear.from_linear(lins[1])])
        is None
    )
    assert (
        fuse_quantized([Int4Linear.from_linear(lins[0], 32), Int4Linear.from_linear(lins[1], 64)])
        is None
    )


def test_plan_is_rebuilt_when_the_model_changes(tiny) -> None:
    """Generate, convert (or edit a weight in place), generate again: same as a fresh model."""
    model, fresh = tiny(), tiny()
    prompt, cfg = [3, 1, 4, 1, 5], GenerateConfig(max_new_tokens=8)
    generate(model, prompt, cfg)
    first = decode_plan(model)
    assert decode_plan(model) is first  # cached
    for m in (model, fresh):
        with torch.no_grad():
            m.layers[0].feed_forward.w2.weight.mul_(-3.0)
    second = decode_plan(model)  # an in-place edit alone triggers a rebuild
    assert second is not first
    for m in (model, fresh):
        convert_linears(m, KernelConfig(mode="int8", include=r"layers\.1\..*"))
    assert decode_plan(model) is not second
    assert generate(model, prompt, cfg).tokens == generate(fresh, prompt, cfg).tokens


def test_decode_threads_restored_and_checked(tiny) -> None:
    before = torch.get_num_threads()
    generate(tiny(), [1, 2], GenerateConfig(max_new_tokens=3, decode_threads=1))
    assert torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="decode_threads"):
        GenerateConfig(decode_threads=-1)


def test_step_without_cache_is_an_error(tiny) -> None:
    with pytest.raises(ConfigError, match="setup_cache"), torch.inference_mode():
        decode_plan(tiny()).step(torch.tensor([[1]]), 0)
