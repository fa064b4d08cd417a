"""The foundation profiler on a Llama: parameters, bits, MACs per token and KV-cache bytes
against closed forms for the Llama shapes."""

from __future__ import annotations

import pytest
import torch

from slimtorch.errors import ConfigError
from slimtorch.llm.llm_profile import profile_llm


def closed_form_params(c, tied: bool) -> int:
    hd = c.head_size
    attn = c.dim * c.n_heads * hd + 2 * c.dim * c.n_kv_heads * hd + c.n_heads * hd * c.dim
    block = attn + 3 * c.dim * c.hidden_dim + 2 * c.dim  # + two RMSNorm weights
    head = 0 if tied else c.vocab_size * c.dim
    return c.vocab_size * c.dim + c.n_layers * block + c.dim + head


def closed_form_macs(c, t: int) -> int:
    """Linear MACs per token times T, plus attention: QK^T and AV over the T x T scores."""
    hd = c.head_size
    linear = c.dim * (c.n_heads + 2 * c.n_kv_heads) * hd + c.n_heads * hd * c.dim
    linear += 3 * c.dim * c.hidden_dim
    per_token = c.n_layers * linear + c.dim * c.vocab_size  # + the output head
    attention = c.n_layers * 2 * c.n_heads * t * t * hd  # causal SDPA counted on the full square
    return t * per_token + attention


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("t", [1, 7])
def test_counts_match_closed_forms(tiny, tied: bool, t: int) -> None:
    model = tiny(tie_embeddings=tied)
    c = model.config
    tokens = torch.randint(0, c.vocab_size, (1, t))
    p = profile_llm(model, tokens)
    assert p.params == closed_form_params(c, tied)
    assert p.size_bits == 32 * p.params
    assert p.macs == closed_form_macs(c, t)
    assert p.macs_per_token == pytest.approx(closed_form_macs(c, t) / t)


def test_kv_cache_bytes_per_token_match_the_real_cache(tiny) -> None:
    model = tiny()
    model.setup_cache(1, 40)
    real = sum(layer.attention.kv_cache.kv.nbytes for layer in model.layers) // 40
    model.clear_cache()
    assert profile_llm(model, torch.zeros(1, 3, dtype=torch.long)).kv_cache_bytes_per_token == real


def test_bad_tokens_are_a_config_error(tiny) -> None:
    with pytest.raises(ConfigError, match="int64"):
        profile_llm(tiny(), torch.zeros(1, 3))
