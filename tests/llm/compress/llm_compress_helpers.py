"""Shared builders for the compression tests: a tiny random Llama and outlier-heavy inputs."""

from __future__ import annotations

import torch

from slimtorch.llm.model import Llama, LlamaConfig

OUTLIER_GAIN = 20.0  # LLM activations carry a few channels ~10-100x the rest (AWQ, Wanda papers)


def tiny_llama(seed: int = 0, outliers: bool = True, n_layers: int = 2) -> Llama:
    """A 2-block Llama with grouped-query attention; optionally norm weights with outliers."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=64,
        dim=64,
        n_layers=n_layers,
        n_heads=4,
        n_kv_heads=2,
        hidden_dim=128,
        max_seq_len=32,
    )
    model = Llama(cfg).eval()
    if outliers:
        with torch.no_grad():
            for layer in model.layers:
                for norm in (layer.attention_norm, layer.ffn_norm):
                    idx = torch.randperm(cfg.dim)[:3]
                    norm.weight[idx] = OUTLIER_GAIN
    return model


def outlier_inputs(tokens: int, features: int, seed: int = 0, n_outliers: int = 4) -> torch.Tensor:
    """Gaussian inputs with a few channels scaled up by ``OUTLIER_GAIN``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, features, generator=g)
    idx = torch.randperm(features, generator=g)[:n_outliers]
    x[:, idx] *= OUTLIER_GAIN
    return x


def calib_tokens(n: int = 8, seq: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 64, (n, seq), generator=g)
