"""The Llama model: KV-cache decoding equals a full forward; GQA equals repeated heads."""

from __future__ import annotations

import pytest
import torch

from slimtorch.errors import ConfigError
from slimtorch.llm.model import LlamaConfig


def test_prefill_then_decode_equals_full_forward(tiny) -> None:
    model = tiny()
    tokens = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = model(tokens)
        model.setup_cache(2, 32)
        parts = [model(tokens[:, :7], start_pos=0), model(tokens[:, 7:12], start_pos=7)]
        parts += [model(tokens[:, i : i + 1], start_pos=i) for i in range(12, 20)]
        model.clear_cache()
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


def test_gqa_equals_mha_with_repeated_kv_heads(tiny) -> None:
    """Grouped-query attention == multi-head attention whose K/V heads are copied per group."""
    gqa = tiny()
    mha = tiny(n_kv_heads=4)
    hd, rep = gqa.config.head_size, 2
    with torch.no_grad():
        state = {k: v for k, v in gqa.state_dict().items() if ".wk." not in k and ".wv." not in k}
        mha.load_state_dict(state, strict=False)
        for g, m in zip(gqa.layers, mha.layers, strict=True):
            for name in ("wk", "wv"):
                w = getattr(g.attention, name).weight.view(2, hd, -1)
                getattr(m.attention, name).weight.copy_(w.repeat_interleave(rep, 0).reshape(-1, 64))
    tokens = torch.arange(10)[None] * 7 % 96
    with torch.inference_mode():
        torch.testing.assert_close(gqa(tokens), mha(tokens), rtol=1e-5, atol=1e-5)


def test_causality(tiny) -> None:
    """Changing a later token never changes earlier logits."""
    model = tiny()
    a = torch.tensor([[5, 6, 7, 8, 9]])
    b = a.clone()
    b[0, 3] = 50
    with torch.inference_mode():
        torch.testing.assert_close(model(a)[:, :3], model(b)[:, :3])


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="n_kv_heads"):
        LlamaConfig(vocab_size=8, dim=8, n_layers=1, n_heads=4, n_kv_heads=3, hidden_dim=8)
    cfg = LlamaConfig(
        vocab_size=8, dim=8, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=8, max_seq_len=4
    )
    from slimtorch.llm.model import Llama

    with pytest.raises(ConfigError, match="max_seq_len"):
        Llama(cfg)(torch.zeros(1, 5, dtype=torch.long))
