"""Fast one-token decoding for :class:`~slimtorch.llm.model.Llama`: fewer, larger ops per token.

At batch 1 a decode step reads every weight once and does little arithmetic, so on this CPU
its time is the weight bytes plus a fixed cost per op (dispatch, allocation, Python). The
module-by-module forward spends about 60 ops and a dozen ``nn.Module`` calls per block; the
plan below spends about 25 ops and no module calls:

- the quantized ``wq``/``wk``/``wv`` run as one matmul, and ``w1``/``w3`` as one
  (:func:`~slimtorch.llm.kernels.fuse_quantized`; plain fp32 ``nn.Linear`` are called one by one
  rather than duplicating their weights);
- every linear is its bare kernel (:func:`~slimtorch.llm.kernels.decode_kernel`);
- rotary embeddings for all query, key and value heads in one ``addcmul`` (value heads get
  ``cos = 1, sin = 0``), with the rotate-half written as a ``flip`` of the two halves and the
  sign folded into a precomputed sine table;
- keys and values stored with one copy into the cache's single ``[2, B, Hkv, S, hd]`` buffer.

Numerics are those of ``Llama.forward`` (same per-element operations; only the fused matmuls
may sum in a different order). The plan is cached per model and rebuilt when any module,
parameter or buffer changes (identity, storage or in-place version), so converting or
compressing layers between generations is safe.

Example:
    >>> import torch
    >>> from slimtorch.llm.model import Llama, LlamaConfig
    >>> cfg = LlamaConfig(vocab_size=32, dim=16, n_layers=1, n_heads=2, n_kv_heads=1,
    ...                   hidden_dim=32, max_seq_len=16)
    >>> model = Llama(cfg).eval()
    >>> model.setup_cache(1, 8)
    >>> with torch.inference_mode():
    ...     full = model(torch.tensor([[1, 2]]))
    ...     _ = model(torch.tensor([[1]]), start_pos=0)
    ...     step = decode_plan(model).step(torch.tensor([[2]]), 1)
    >>> bool(torch.allclose(step, full[:, 1], atol=1e-5))
    True
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimtorch.errors import ConfigError
from slimtorch.llm.kernels import decode_kernel, fuse_quantized
from slimtorch.llm.model import KVCache, Llama, RMSNorm

Fn = Callable[[Tensor], Tensor]


def rms_norm(x: Tensor, weight: Tensor, eps: Tensor) -> Tensor:
    """RMSNorm of fp32 ``x`` exactly as :class:`~slimtorch.llm.model.RMSNorm` computes it.

    ``eps`` is a 0-d tensor: adding a Python float wraps it in a new tensor on every call.
    """
    return x * torch.rsqrt(torch.add(x.pow(2).mean(-1, keepdim=True), eps)) * weight


def _norm_kernel(m: nn.Module) -> Fn:
    if type(m) is RMSNorm:
        return partial(rms_norm, weight=m.weight, eps=torch.tensor(m.eps, dtype=torch.float32))
    return m


def _concat(fns: Sequence[Fn], x: Tensor) -> Tensor:
    return torch.cat([f(x) for f in fns], dim=-1)


def fused_kernel(mods: Sequence[nn.Module]) -> Fn:
    """``x -> cat([m(x) for m in mods], -1)`` for decode, fused into one matmul if possible.

    Example:
        >>> lin = [torch.nn.Linear(8, n, bias=False) for n in (4, 2)]
        >>> x = torch.ones(1, 8)
        >>> fused_kernel(lin)(x).shape
        torch.Size([1, 6])
    """
    fused = fuse_quantized(mods)
    if fused is not None:
        return decode_kernel(fused)
    return partial(_concat, [decode_kernel(m) for m in mods])


@dataclass(frozen=True)
class _Block:
    norm1: Fn
    qkv: Fn
    wo: Fn
    norm2: Fn
    w13: Fn
    w2: Fn
    hidden: int  # SwiGLU inner width (w1's outputs come first in w13's)


def _block(layer: nn.Module, hidden: int) -> _Block:
    att, ffn = layer.attention, layer.feed_forward
    return _Block(
        norm1=_norm_kernel(layer.attention_norm),
        qkv=fused_kernel([att.wq, att.wk, att.wv]),
        wo=decode_kernel(att.wo),
        norm2=_norm_kernel(layer.ffn_norm),
        w13=fused_kernel([ffn.w1, ffn.w3]),
        w2=decode_kernel(ffn.w2),
        hidden=int(getattr(ffn.w1, "out_features", hidden)),
    )


def _version(t: Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors keep no version counter
        return -1


def model_signature(model: nn.Module) -> tuple[object, ...]:
    """Identity, storage and in-place version of every module and tensor (caches excluded)."""
    sig: list[object] = []
    for name, m in model.named_modules():
        if isinstance(m, KVCache):
            continue
        sig.append((name, id(m)))
        for t in (*m._parameters.values(), *m._buffers.values()):
            if t is not None:
                sig.append((id(t), t.data_ptr(), _version(t)))
    return tuple(sig)


class DecodePlan:
    """Precomputed kernels for one-token steps of ``model`` against its KV cache.

    Args:
        model: The model (any mix of fp32, :class:`~slimtorch.llm.kernels.Int4Linear`,
            :class:`~slimtorch.llm.kernels.Int8Linear` or other Linear-like layers).
    """

    name = "torch"

    def __init__(self, model: Llama) -> None:
        cfg = model.config
        self.signature = model_signature(model)
        self.layers = list(model.layers)  # not the model: the plan cache holds it weakly
        self.rope_cos = model.rope_cos
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_size
        self.n_all = cfg.n_heads + 2 * cfg.n_kv_heads  # q, k and v heads side by side
        self.blocks = [_block(layer, cfg.hidden_dim) for layer in model.layers]
        emb = model.tok_embeddings
        self.embed: Fn = (
            partial(F.embedding, weight=emb.weight) if type(emb) is nn.Embedding else emb
        )
        self.norm, self.head = _norm_kernel(model.norm), decode_kernel(model.output)
        half = self.head_dim // 2
        self.sin_signed = model.rope_sin.clone()
        self.sin_signed[:, :half].neg_()  # rotate-half: first half gets -x2 * sin
        n_rot = cfg.n_heads + cfg.n_kv_heads
        self.cos = torch.ones(self.n_all, self.head_dim)  # value heads: cos 1, sin 0
        self.sin = torch.zeros(self.n_all, self.head_dim)
        self.cos_rot, self.sin_rot = self.cos[:n_rot], self.sin[:n_rot]

    def step(self, tokens: Tensor, pos: int) -> Tensor:
        """Logits ``[B, V]`` for one token per sequence ``tokens`` [B, 1] at position ``pos``."""
        caches = [layer.attention.kv_cache for layer in self.layers]
        if any(c is None for c in caches):
            raise ConfigError("decode plan: call model.setup_cache(batch, max_len) first")
        if pos + 1 > caches[0].kv.shape[3]:
            raise ConfigError(f"KV cache: position {pos + 1} exceeds its length")
        self.cos_rot.copy_(self.rope_cos[pos])
        self.sin_rot.copy_(self.sin_signed[pos])
        x = self.embed(tokens.view(-1))  # [B,D]: activations stay 2-D (no reshapes)
        for blk, cache in zip(self.blocks, caches, strict=True):
            x = self._block_step(blk, cache.kv, x, pos)
        return self.head(self.norm(x)).float()  # [B,V]

    def _block_step(self, blk: _Block, kv: Tensor, x: Tensor, pos: int) -> Tensor:
        # Quantized kernels return bf16; fp32 ops promote it exactly (as the layer's cast would).
        b, h, hd = x.shape[0], self.n_heads, self.head_dim
        r = blk.qkv(blk.norm1(x)).view(b, self.n_all, hd)  # [B, H+2Hkv, hd]
        flipped = r.view(b, self.n_all, 2, hd // 2).flip(2).view(b, self.n_all, hd)
        r = torch.addcmul(r * self.cos, flipped, self.sin)  # RoPE on q and k, v unchanged
        cache = kv if kv.shape[1] == b else kv[:, :b]  # [2,B,Hkv,S,hd]
        cache.select(3, pos).copy_(r[:, h:].view(b, 2, self.n_kv, hd).transpose(0, 1))
        k, v = cache.narrow(3, 0, pos + 1).unbind(0)  # [B,Hkv,pos+1,hd]
        q = r[:, :h].unsqueeze(2)  # [B,H,1,hd]
        y = F.scaled_dot_product_attention(q, k, v, enable_gqa=h != self.n_kv)  # [B,H,1,hd]
        x = x + blk.wo(y.view(b, h * hd))
        gu = blk.w13(blk.norm2(x))  # [B,2*hidden]
        act = F.silu(gu[:, : blk.hidden].float()) * gu[:, blk.hidden :]  # fp32
        return x + blk.w2(act)


_PLANS: weakref.WeakKeyDictionary[Llama, DecodePlan] = weakref.WeakKeyDictionary()


def decode_plan(model: Llama) -> DecodePlan:
    """The cached :class:`DecodePlan` of ``model``, rebuilt if the model changed since.

    Args:
        model: The model.

    Returns:
        Its plan (kernels fused once; cheap to fetch again).
    """
    plan = _PLANS.get(model)
    if plan is None or plan.signature != model_signature(model):
        with torch.inference_mode(False), torch.no_grad():
            plan = DecodePlan(model)
        _PLANS[model] = plan
    return plan
