"""Shared helpers for the LLM tests: a tiny random Llama and an independent reference forward.

The reference works on weights in llama.cpp's GGUF layout (Q/K rows permuted, rotary
embedding on adjacent pairs), dequantized by the ``gguf`` package, with explicit
head repetition and a softmax over an explicit causal mask: a different code path from
``slimtorch.llm.model`` at every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from slimtorch.llm.model import Llama, LlamaConfig

TINY = LlamaConfig(
    vocab_size=96,
    dim=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    hidden_dim=96,
    rope_theta=10000.0,
    norm_eps=1e-5,
    tie_embeddings=True,
    max_seq_len=64,
)


def tiny_model(seed: int = 0, **overrides: object) -> Llama:
    torch.manual_seed(seed)
    cfg = LlamaConfig(**{**TINY.to_dict(), **overrides})
    model = Llama(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights so a swapped norm would show
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    return model


def reference_forward(gguf_path: str, tokens: list[int]) -> torch.Tensor:
    """Logits [T, V] computed straight from a GGUF file, llama.cpp's way."""
    import gguf

    r = gguf.GGUFReader(gguf_path)

    def meta(key: str) -> object:
        return r.fields[key].contents()

    w = {}
    for t in r.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        x = gguf.quants.dequantize(t.data, t.tensor_type)
        w[t.name] = torch.from_numpy(np.asarray(x, dtype=np.float64).reshape(shape))
    n_head, n_kv = (
        int(meta("llama.attention.head_count")),
        int(meta("llama.attention.head_count_kv")),
    )
    eps, theta = (
        float(meta("llama.attention.layer_norm_rms_epsilon")),
        float(meta("llama.rope.freq_base")),
    )
    n_layer = int(meta("llama.block_count"))
    x = w["token_embd.weight"][tokens]  # [T, D] float64
    t_len, d = x.shape
    hd = d // n_head

    def rms(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return v / torch.sqrt((v * v).mean(-1, keepdim=True) + eps) * g

    def rope_pairs(v: torch.Tensor) -> torch.Tensor:  # v [T, H, hd], pairs (2i, 2i+1)
        out = v.clone()
        for pos in range(t_len):
            for i in range(hd // 2):
                a = pos * theta ** (-2.0 * i / hd)
                c, s = math.cos(a), math.sin(a)
                x0, x1 = v[pos, :, 2 * i], v[pos, :, 2 * i + 1]
                out[pos, :, 2 * i], out[pos, :, 2 * i + 1] = x0 * c - x1 * s, x0 * s + x1 * c
        return out

    mask = torch.full((t_len, t_len), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(n_layer):
        p = f"blk.{i}."
        h = rms(x, w[p + "attn_norm.weight"])
        q = rope_pairs((h @ w[p + "attn_q.weight"].T).view(t_len, n_head, hd))
        k = rope_pairs((h @ w[p + "attn_k.weight"].T).view(t_len, n_kv, hd))
        v = (h @ w[p + "attn_v.weight"].T).view(t_len, n_kv, hd)
        rep = n_head // n_kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        heads = []
        for hh in range(n_head):
            att = (q[:, hh] @ k[:, hh].T) / math.sqrt(hd) + mask
            heads.append(torch.softmax(att, -1) @ v[:, hh])
        x = x + torch.cat(heads, -1) @ w[p + "attn_output.weight"].T
        h = rms(x, w[p + "ffn_norm.weight"])
        g = h @ w[p + "ffn_gate.weight"].T
        x = x + (g * torch.sigmoid(g) * (h @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
    head = w.get("output.weight", w["token_embd.weight"])
    return (rms(x, w["output_norm.weight"]) @ head.T).float()


@pytest.fixture
def tiny() -> Callable[..., Llama]:
    return tiny_model


@pytest.fixture
def reference() -> Callable[[str, list[int]], torch.Tensor]:
    return reference_forward
