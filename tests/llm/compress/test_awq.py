"""AWQ: never worse than round-to-nearest on the loss it searches, better on outlier inputs;
folding scales into the preceding norm or linear leaves the fp32 block unchanged."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_compress_helpers import calib_tokens, outlier_inputs, tiny_llama

from slimtorch.llm.compress.arch import LLAMA, linear
from slimtorch.llm.compress.awq import (
    activation_scale,
    awq_block,
    awq_quantize_layer,
    fold_scales,
    layer_loss,
    search_scale,
)
from slimtorch.llm.compress.calibrate import capture_block_inputs, run_block
from slimtorch.llm.compress.config import AWQConfig, RTNConfig
from slimtorch.llm.compress.rtn import output_error, rtn_quantize


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    bits=st.sampled_from([2, 3, 4]),
    gs=st.sampled_from([8, 16, None]),
    gain=st.floats(1.0, 50.0),
)
def test_scale_search_never_worse_than_rtn(seed, bits, gs, gain):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 32, generator=g) * (1 + gain * torch.rand(32, generator=g))
    w = [torch.randn(8, 32, generator=g), torch.randn(4, 32, generator=g)]
    loss = layer_loss(x, w)
    _, _, best = search_scale(activation_scale(x), w, loss, AWQConfig(bits, gs))
    assert best <= loss([rtn_quantize(wi, RTNConfig(bits, gs)) for wi in w])


@pytest.mark.parametrize(("bits", "gs"), [(4, 16), (3, 16), (4, None), (3, 32)])
@pytest.mark.parametrize("seed", range(3))
def test_awq_layer_beats_rtn_on_outlier_inputs(seed, bits, gs):
    x = outlier_inputs(512, 64, seed=seed)
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(seed + 1))
    awq = awq_quantize_layer(w, x, AWQConfig(bits, gs))
    assert output_error(w, awq, x) < output_error(w, rtn_quantize(w, RTNConfig(bits, gs)), x)


def test_folding_leaves_the_fp32_block_unchanged():
    model = tiny_llama(seed=1)
    block = model.layers[0]
    inputs = capture_block_inputs(model, model.layers, calib_tokens(4), 2)
    before = torch.cat(run_block(block, inputs))
    g = torch.Generator().manual_seed(0)
    for group in LLAMA.scale_groups:
        prev, lins = block.get_submodule(group.prev), [linear(block, n) for n in group.linears]
        width = lins[0].in_features
        if getattr(prev, "out_features", width) != width:
            continue
        fold_scales(prev, lins, torch.rand(width, generator=g) * 4 + 0.25)
    torch.testing.assert_close(torch.cat(run_block(block, inputs)), before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bits", [3, 4])
def test_awq_block_output_error_at_most_rtn(bits):
    model = tiny_llama(seed=2)
    inputs = capture_block_inputs(model, model.layers, calib_tokens(8), 4)
    block = model.layers[0]
    ref = torch.cat(run_block(block, inputs))
    state = {k: v.clone() for k, v in block.state_dict().items()}
    for name in LLAMA.linears:
        lin = linear(block, name)
        lin.weight.data = rtn_quantize(lin.weight.data, RTNConfig(bits, 16))
    rtn_err = float((torch.cat(run_block(block, inputs)) - ref).pow(2).mean())
    block.load_state_dict(state)
    alphas = awq_block(block, LLAMA, inputs, AWQConfig(bits, 16))
    awq_err = float((torch.cat(run_block(block, inputs)) - ref).pow(2).mean())
    assert set(alphas) == {"attention_norm", "ffn_norm", "feed_forward.w3"}  # GQA: no wv->wo
    assert awq_err <= rtn_err
