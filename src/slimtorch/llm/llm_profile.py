"""Profile a Llama-family model per token: parameters, bits, MACs, KV-cache and weight bytes.

A thin layer over the foundation profiler (:func:`slimtorch.profile.profile_model`, which
traces the ``[1, T]`` int64 forward and counts MACs per aten op) adding the LLM-specific
figures: MACs per token, KV-cache bytes per token of context (keys and values of every
layer, ``2 * n_layers * n_kv_heads * head_dim`` values) and the weight bytes one decoded
token reads (:func:`~slimtorch.llm.kernels.weight_bytes_per_token`).

Profile the fp32 model and express a storage format through ``formats`` (the foundation's
:class:`~slimtorch.core.size.WeightFormat` by name/regex); the tracer counts MACs of the
standard aten ops, so quantized kernel layers contribute bytes per token but not MACs.

``slimtorch llm profile [MODEL] --tokens 128`` prints the same figures.

Example:
    >>> import torch
    >>> from slimtorch.llm.model import Llama, LlamaConfig
    >>> cfg = LlamaConfig(vocab_size=32, dim=16, n_layers=1, n_heads=2, n_kv_heads=1,
    ...                   hidden_dim=32)
    >>> p = profile_llm(Llama(cfg), torch.zeros(1, 4, dtype=torch.long))
    >>> p.kv_cache_bytes_per_token  # 2 (k, v) * 1 layer * 1 head * 8 dims * 4 bytes
    64
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from slimtorch.core.size import WeightFormat
from slimtorch.errors import ConfigError
from slimtorch.llm.kernels import weight_bytes_per_token
from slimtorch.llm.model import Llama, LlamaConfig
from slimtorch.profile.config import ProfileConfig
from slimtorch.profile.report import profile_model

KV_TENSORS = 2  # keys and values


@dataclass(frozen=True)
class LLMProfile:
    """Per-token figures of a Llama-family model (see the module docstring)."""

    tokens: int
    params: int
    size_bits: int
    macs: int
    macs_per_token: float
    kv_cache_bytes_per_token: int
    weight_bytes_per_token: int

    def to_dict(self) -> dict[str, float]:
        """The fields as a JSON-serializable dict."""
        return asdict(self)


def kv_cache_bytes_per_token(cfg: LlamaConfig, bytes_per_value: int = 4) -> int:
    """Bytes of KV cache one token of context occupies (all layers, keys and values)."""
    return KV_TENSORS * cfg.n_layers * cfg.n_kv_heads * cfg.head_size * bytes_per_value


def profile_llm(
    model: Llama, tokens: Tensor, formats: Mapping[str, WeightFormat] | None = None
) -> LLMProfile:
    """Profile ``model`` on token ids ``tokens`` [1, T] (no timing: counts only).

    Args:
        model: The model (not changed).
        tokens: int64 token ids ``[1, T]``.
        formats: Weight storage formats by parameter name/regex (default fp32).

    Returns:
        An :class:`LLMProfile`.
    """
    if tokens.dtype != torch.long or tokens.ndim != 2 or tokens.shape[0] != 1:
        raise ConfigError(
            f"tokens: expected int64 [1, T], got {tokens.dtype} {tuple(tokens.shape)}"
        )
    cfg = ProfileConfig(
        latency=False, layer_latency=False, roofline=False, throughput_batch_sizes=(),
        formats=dict(formats or {}),
    )  # fmt: skip
    p = profile_model(model, tokens, cfg, name="llm")
    t = tokens.shape[1]
    return LLMProfile(
        tokens=t,
        params=p.params,
        size_bits=p.size_bits,
        macs=p.macs,
        macs_per_token=p.macs / t,
        kv_cache_bytes_per_token=kv_cache_bytes_per_token(model.config),
        weight_bytes_per_token=weight_bytes_per_token(model),
    )
