"""Block-by-block calibration and compress_model on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch
from llm_compress_helpers import calib_tokens, tiny_llama

from slimtorch.errors import ConfigError, DataError
from slimtorch.llm.compress import (
    AWQConfig,
    CalibConfig,
    GPTQConfig,
    GroupKMeansConfig,
    MagnitudeConfig,
    RTNConfig,
    SparseGPTConfig,
    WandaConfig,
    compress_model,
)
from slimtorch.llm.compress.arch import LLAMA, linear
from slimtorch.llm.compress.calibrate import calibration_windows, capture_block_inputs, iter_blocks
from slimtorch.llm.compress.rtn import rtn_quantize

ALL = [
    RTNConfig(4, 16),
    AWQConfig(4, 16),
    GPTQConfig(4, 16, act_order=True),
    GroupKMeansConfig(4),
    MagnitudeConfig(0.5),
    WandaConfig(nm=(2, 4)),
    SparseGPTConfig(0.5),
]


def test_block_by_block_pass_equals_the_full_forward():
    model = tiny_llama()
    tokens = calib_tokens(4)
    inputs = capture_block_inputs(model, model.layers, tokens, 3)
    torch.testing.assert_close(torch.cat(inputs.hidden), model.tok_embeddings(tokens))
    outs = []

    def keep(_i, block, inp):
        outs.append(torch.cat([block(h, *inp.args, **inp.kwargs) for h in inp.hidden]))

    list(iter_blocks(model.layers, inputs, keep))
    logits = model.output(model.norm(outs[-1]))
    torch.testing.assert_close(logits, model(tokens), rtol=1e-4, atol=1e-5)


def _logit_error(model, ref, tokens):
    with torch.no_grad():
        return float((model(tokens) - ref).pow(2).mean())


@pytest.mark.parametrize("config", ALL, ids=lambda c: type(c).__name__)
def test_every_method_compresses_every_block_linear(config):
    model = tiny_llama()
    tokens = calib_tokens(8)
    report = compress_model(model, config, tokens, CalibConfig(batch_size=4))
    assert len(report.blocks) == 2 and report.wall_s > 0 and report.peak_rss_mb > 0
    for block in model.layers:
        for name in LLAMA.linears:
            w = linear(block, name).weight
            if isinstance(config, MagnitudeConfig | WandaConfig | SparseGPTConfig):
                assert float((w == 0).float().mean()) == pytest.approx(0.5)
            else:
                assert len(torch.unique(w[0])) <= 2**config.bits * (w.shape[1] // 16)


def test_calibrated_methods_beat_their_baselines_on_the_model():
    tokens, held_out = calib_tokens(8), calib_tokens(4, seed=1)
    ref = tiny_llama()(held_out).detach()

    def err(config):
        model = tiny_llama()
        compress_model(model, config, tokens, CalibConfig(batch_size=4))
        return _logit_error(model, ref, held_out)

    assert err(AWQConfig(3, 16)) < err(RTNConfig(3, 16))
    assert err(GPTQConfig(3, 16)) < err(RTNConfig(3, 16))
    assert err(WandaConfig(0.5)) < err(MagnitudeConfig(0.5))
    assert err(SparseGPTConfig(0.5)) < err(MagnitudeConfig(0.5))


def test_errors_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="bits"):
        RTNConfig(bits=5)
    with pytest.raises(ConfigError, match="nm"):
        WandaConfig(nm=(4, 4))
    with pytest.raises(ConfigError, match="calibration"):
        compress_model(tiny_llama(), AWQConfig())
    with pytest.raises(DataError, match="fewer than one window"):
        calibration_windows([1, 2, 3], 4, 8)


def test_short_last_group_is_quantized_on_its_own():
    """576 columns in groups of 128 (SmolLM2): the last group has 64 columns."""
    w = torch.randn(4, 576, generator=torch.Generator().manual_seed(0))
    q = rtn_quantize(w, RTNConfig(3, 128))
    pieces = [rtn_quantize(w[:, i : i + 128], RTNConfig(3, None)) for i in range(0, 576, 128)]
    torch.testing.assert_close(q, torch.cat(pieces, dim=1))
    assert RTNConfig(4, 128).bits_per_weight(576) == 4 + 32 * 5 / 576
