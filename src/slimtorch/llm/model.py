"""A compact Llama-family transformer in plain PyTorch (gpt-fast style), with a KV cache.

Module names (stable: loaders, compressors and kernels address layers by these names)::

    tok_embeddings                 nn.Embedding(vocab_size, dim)
    layers[i].attention_norm       RMSNorm(dim)
    layers[i].attention.wq         nn.Linear(dim, n_heads * head_dim, bias=False)
    layers[i].attention.wk         nn.Linear(dim, n_kv_heads * head_dim, bias=False)
    layers[i].attention.wv         nn.Linear(dim, n_kv_heads * head_dim, bias=False)
    layers[i].attention.wo         nn.Linear(n_heads * head_dim, dim, bias=False)
    layers[i].ffn_norm             RMSNorm(dim)
    layers[i].feed_forward.w1      nn.Linear(dim, hidden_dim)   gate
    layers[i].feed_forward.w3      nn.Linear(dim, hidden_dim)   up
    layers[i].feed_forward.w2      nn.Linear(hidden_dim, dim)   down: w2(silu(w1 x) * w3 x)
    norm                           RMSNorm(dim)
    output                         nn.Linear(dim, vocab_size)   (weight shared with
                                                                tok_embeddings if tied)

Block: ``h = x + wo(attn(rope(wq n1(x)), rope(wk n1(x)), wv n1(x)))``, then
``out = h + w2(silu(w1 n2(h)) * w3 n2(h))``. Rotary embeddings use the Hugging Face layout
("rotate half": dimension ``i`` pairs with ``i + head_dim/2``); the GGUF loader undoes
llama.cpp's row permutation of ``wq``/``wk`` so both sources give the same weights here.
Grouped-query attention: ``n_heads / n_kv_heads`` query heads share one key/value head.

``forward(tokens, start_pos=0)``: without a cache (the default) the ``T`` tokens are attended
causally among themselves, at positions ``start_pos .. start_pos+T-1``. After
``setup_cache(batch, max_len)`` every call writes its keys/values at those positions and
attends over everything cached so far, so prefill then one-token decode equals one full
forward.

Example:
    >>> import torch
    >>> cfg = LlamaConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
    ...                   hidden_dim=48, max_seq_len=16)
    >>> model = Llama(cfg).eval()
    >>> model(torch.zeros(1, 5, dtype=torch.long)).shape
    torch.Size([1, 5, 64])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimtorch.errors import ConfigError

CONFIG_VERSION = 1
DEFAULT_ROPE_THETA = 10_000.0  # Su et al. 2021 (RoFormer), the original base
DEFAULT_NORM_EPS = 1e-5
INIT_STD = 0.02  # GPT-2 / Llama initialisation for random (test) models


@dataclass(frozen=True)
class LlamaConfig:
    """Shape and constants of a Llama-family model.

    Args:
        vocab_size: Number of tokens.
        dim: Model (residual) width.
        n_layers: Transformer blocks.
        n_heads: Query heads.
        n_kv_heads: Key/value heads (grouped-query attention; divides ``n_heads``).
        hidden_dim: SwiGLU inner width.
        rope_theta: Rotary embedding base.
        norm_eps: RMSNorm epsilon.
        tie_embeddings: The output head shares the embedding matrix.
        max_seq_len: Longest sequence the rotary table covers.
        head_dim: Per-head width; 0 means ``dim // n_heads``.
        bos_token_id / eos_token_id: Special tokens (-1: none).
        add_bos: The tokenizer prepends BOS (from the model's metadata).
        arch: Architecture name it came from (``"llama"``).
        version: Config format version.

    Example:
        >>> LlamaConfig(vocab_size=8, dim=8, n_layers=1, n_heads=2, n_kv_heads=1,
        ...             hidden_dim=16).head_size
        4
    """

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    rope_theta: float = DEFAULT_ROPE_THETA
    norm_eps: float = DEFAULT_NORM_EPS
    tie_embeddings: bool = False
    max_seq_len: int = 2048
    head_dim: int = 0
    bos_token_id: int = -1
    eos_token_id: int = -1
    add_bos: bool = False
    arch: str = "llama"
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"LlamaConfig.{name}: expected a positive integer")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"LlamaConfig.n_kv_heads: {self.n_kv_heads} must divide n_heads={self.n_heads}"
            )
        if self.head_dim == 0 and self.dim % self.n_heads:
            raise ConfigError(f"LlamaConfig.dim: {self.dim} not divisible by n_heads")
        if self.head_size % 2:
            raise ConfigError(f"LlamaConfig.head_dim: must be even for RoPE, got {self.head_size}")
        if self.rope_theta <= 0 or self.norm_eps <= 0 or self.max_seq_len < 1:
            raise ConfigError("LlamaConfig: rope_theta, norm_eps, max_seq_len must be positive")

    @property
    def head_size(self) -> int:
        """Per-head width (``head_dim`` or ``dim // n_heads``)."""
        return self.head_dim or self.dim // self.n_heads

    def to_dict(self) -> dict[str, object]:
        """The fields as a JSON-serializable dict."""
        return asdict(self)


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` (Zhang & Sennrich 2019), computed in fp32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight).to(x.dtype)


def rope_tables(head_dim: int, max_len: int, theta: float) -> tuple[Tensor, Tensor]:
    """Cosine and sine tables ``[max_len, head_dim]`` in the rotate-half layout.

    Example:
        >>> cos, sin = rope_tables(4, 3, 10000.0)
        >>> cos.shape, float(cos[0, 0]), float(sin[0, 0])
        (torch.Size([3, 4]), 1.0, 0.0)
    """
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.outer(torch.arange(max_len, dtype=torch.float64), inv)  # [L, hd/2]
    ang = torch.cat([ang, ang], dim=-1)  # [L, hd]
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` [B, H, T, hd] by per-position tables ``cos``/``sin`` [T, hd]."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class KVCache(nn.Module):
    """Preallocated keys and values in one buffer ``kv`` [2, B, n_kv_heads, max_len, head_dim].

    ``k`` and ``v`` are views of it; one buffer lets a decode step store both with one copy.
    """

    def __init__(self, batch: int, n_kv_heads: int, max_len: int, head_dim: int) -> None:
        super().__init__()
        shape = (2, batch, n_kv_heads, max_len, head_dim)
        self.register_buffer("kv", torch.zeros(shape), persistent=False)

    @property
    def k(self) -> Tensor:
        """Keys [B, n_kv_heads, max_len, head_dim] (a view)."""
        return self.kv[0]

    @property
    def v(self) -> Tensor:
        """Values [B, n_kv_heads, max_len, head_dim] (a view)."""
        return self.kv[1]

    def update(self, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``k``/``v`` [B, Hkv, T, hd] at ``start``; return everything up to its end."""
        end = start + k.shape[2]
        if end > self.kv.shape[3]:
            raise ConfigError(f"KV cache: position {end} exceeds its length {self.kv.shape[3]}")
        b = k.shape[0]
        self.kv[0, :b, :, start:end] = k
        self.kv[1, :b, :, start:end] = v
        return self.kv[0, :b, :, :end], self.kv[1, :b, :, :end]


class Attention(nn.Module):
    """Grouped-query attention with rotary embeddings and an optional KV cache."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        hd = cfg.head_size
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, hd
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * hd, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.wo = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, start_pos: int) -> Tensor:
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B,H,T,hd]
        k = self.wk(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.kv_cache is not None:
            k, v = self.kv_cache.update(start_pos, k, v)  # [B,Hkv,S,hd], S = start_pos + T
        y = _attend(q, k, v, start_pos)  # [B,H,T,hd]
        return self.wo(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


def _attend(q: Tensor, k: Tensor, v: Tensor, start_pos: int) -> Tensor:
    """Causal scaled dot-product attention; query ``i`` sits at ``start_pos + i``."""
    t, s = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if s == t:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if t == 1:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    qpos = torch.arange(s - t, s, device=q.device)[:, None]  # [T,1]
    mask = torch.arange(s, device=q.device)[None, :] <= qpos  # [T,S]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class FeedForward(nn.Module):
    """SwiGLU (Shazeer 2020): ``w2(silu(w1 x) * w3 x)``."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Pre-norm block: attention then SwiGLU, each with a residual connection."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, start_pos: int) -> Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, start_pos)
        return h + self.feed_forward(self.ffn_norm(h))


class Llama(nn.Module):
    """The Llama transformer; see the module docstring for layer names and cache use.

    Args:
        cfg: Shapes and constants.

    Example:
        >>> import torch
        >>> cfg = LlamaConfig(vocab_size=16, dim=8, n_layers=1, n_heads=2, n_kv_heads=1,
        ...                   hidden_dim=16, tie_embeddings=True)
        >>> m = Llama(cfg)
        >>> m.output.weight is m.tok_embeddings.weight
        True
    """

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(cfg.head_size, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(_init_weights)

    def setup_cache(self, batch: int, max_len: int | None = None) -> None:
        """Allocate a KV cache for ``batch`` sequences of up to ``max_len`` tokens."""
        n = max_len or self.config.max_seq_len
        if n > self.config.max_seq_len:
            raise ConfigError(f"max_len {n} exceeds max_seq_len {self.config.max_seq_len}")
        cfg = self.config
        for layer in self.layers:
            cache = KVCache(batch, cfg.n_kv_heads, n, cfg.head_size)
            layer.attention.kv_cache = cache.to(self.rope_cos.device)

    def clear_cache(self) -> None:
        """Drop the KV caches (back to cache-free full-sequence forwards)."""
        for layer in self.layers:
            layer.attention.kv_cache = None

    def forward(self, tokens: Tensor, start_pos: int = 0) -> Tensor:
        """Logits ``[B, T, vocab]`` for token ids ``[B, T]`` placed at ``start_pos``."""
        t = tokens.shape[1]
        if start_pos + t > self.config.max_seq_len:
            raise ConfigError(
                f"sequence end {start_pos + t} exceeds max_seq_len {self.config.max_seq_len}"
            )
        cos = self.rope_cos[start_pos : start_pos + t]
        sin = self.rope_sin[start_pos : start_pos + t]
        x = self.tok_embeddings(tokens)  # [B,T,D]
        for layer in self.layers:
            x = layer(x, cos, sin, start_pos)
        return self.output(self.norm(x))  # [B,T,V]


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=INIT_STD)
