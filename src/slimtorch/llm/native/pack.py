"""A :class:`~slimtorch.llm.model.Llama`'s weights in the native engine's memory layout.

Each linear becomes the seven int64 fields of ``decode.c``'s ``Lin`` struct (kind, rows,
inputs, group size and three data pointers) plus the tensors those pointers refer to:

- ``nn.Linear`` (bias-free): fp32 weight ``[N, K]``.
- :class:`~slimtorch.llm.kernels.Int4Linear`: 4-bit codes ``[N, K/2]`` in GGUF Q4_0 nibble
  order (:func:`pack_q4_codes`), bf16 scales and zeros ``[N, K/G]``.
- :class:`~slimtorch.llm.kernels.Int8Linear`: int8 weight ``[N, K]``, bf16 scales ``[N]``.

A model's packing is cached per model until its signature changes (:func:`packed_weights`).

Example:
    >>> from torch import nn
    >>> lin = PackedLinear(nn.Linear(64, 8, bias=False))
    >>> (lin.kind, lin.n, lin.k, lin.g) == (KIND_F32, 8, 64, 0)
    True
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slimtorch.llm.decode import model_signature
from slimtorch.llm.kernels import Int4Linear, Int8Linear, unpack_int4_codes
from slimtorch.llm.model import Llama, RMSNorm
from slimtorch.llm.native.build import NativeUnavailable

QBLOCK = 32  # activation quantization block (inputs)
KIND_F32, KIND_Q4, KIND_Q8 = 0, 1, 2
LIN_FIELDS = 7  # kind, n, k, g, weight, scale and zero pointers


class PackedLinear:
    """One linear in the engine's layout; keeps the tensors its pointers refer to alive.

    Args:
        module: ``nn.Linear`` (bias-free), :class:`Int4Linear` or :class:`Int8Linear`.

    Raises:
        NativeUnavailable: Another layer type, or sizes the engine's blocks do not divide.
    """

    def __init__(self, module: nn.Module) -> None:
        if type(module) is nn.Linear and module.bias is None:
            w = module.weight.detach().float().contiguous()
            n, k = w.shape
            self.kind, self.g, self.tensors = KIND_F32, 0, [w]
        elif isinstance(module, Int4Linear):
            n, k, g = module.out_features, module.in_features, module.group_size
            if k % QBLOCK or g % QBLOCK:
                raise NativeUnavailable(
                    f"native engine: int4 needs inputs and group size divisible by {QBLOCK}, "
                    f"got {k} inputs, group {g}"
                )
            codes = pack_q4_codes(unpack_int4_codes(module))
            sz = module.scales_zeros  # [K/G, N, 2] bf16
            scale, zero = (sz[..., i].T.contiguous() for i in (0, 1))  # [N, K/G] each
            self.kind, self.g, self.tensors = KIND_Q4, g, [codes, scale, zero]
        elif isinstance(module, Int8Linear):
            n, k = module.out_features, module.in_features
            if k % QBLOCK:
                raise NativeUnavailable(f"native engine: int8 needs inputs divisible by {QBLOCK}")
            w8 = module.w_int8.contiguous()
            sc = module.scales.to(torch.bfloat16).contiguous()
            self.kind, self.g, self.tensors = KIND_Q8, 0, [w8, sc]
        else:
            raise NativeUnavailable(
                f"native engine: unsupported layer type {type(module).__name__}"
            )
        self.n, self.k = n, k

    def fields(self) -> list[int]:
        """The seven int64 fields of the C ``Lin`` struct."""
        ptrs = [t.data_ptr() for t in self.tensors] + [0, 0]
        return [self.kind, self.n, self.k, self.g, *ptrs[:3]]


def pack_q4_codes(codes: Tensor) -> Tensor:
    """int codes ``[N, K]`` in 0..15 -> uint8 ``[N, K/2]`` in GGUF Q4_0 nibble order.

    Inside each block of 32 inputs, byte ``j`` holds code ``j`` (low nibble) and ``j + 16``.

    Example:
        >>> pack_q4_codes(torch.arange(32).remainder(16)[None]).tolist()[0][:2]
        [0, 17]
    """
    n, k = codes.shape
    c = codes.to(torch.uint8).reshape(n, k // QBLOCK, 2, QBLOCK // 2)
    return (c[:, :, 0] | (c[:, :, 1] << 4)).reshape(n, k // 2).contiguous()


def _norm_weight(m: nn.Module) -> Tensor:
    if type(m) is not RMSNorm:
        raise NativeUnavailable(f"native engine: unsupported norm {type(m).__name__}")
    return m.weight.detach().float().contiguous()


@dataclass
class PackedModel:
    """A model's weights in the engine's layout (the tensors the descriptors point into)."""

    signature: tuple[object, ...]
    layers: list[tuple[list[PackedLinear], list[Tensor]]]  # 7 linears, 2 norm weights
    emb: Tensor
    head: PackedLinear
    norm: Tensor
    cos: Tensor
    sin: Tensor


_PACKED: weakref.WeakKeyDictionary[Llama, PackedModel] = weakref.WeakKeyDictionary()


def packed_weights(model: Llama) -> PackedModel:
    """``model``'s weights in the engine's layout, cached until the model changes.

    Raises:
        NativeUnavailable: A layer the engine does not run.
    """
    sig = model_signature(model)
    hit = _PACKED.get(model)
    if hit is not None and hit.signature == sig:
        return hit
    layers = []
    with torch.inference_mode(False), torch.no_grad():
        for layer in model.layers:
            att, ffn = layer.attention, layer.feed_forward
            mods = [att.wq, att.wk, att.wv, att.wo, ffn.w1, ffn.w3, ffn.w2]
            norms = [_norm_weight(layer.attention_norm), _norm_weight(layer.ffn_norm)]
            layers.append(([PackedLinear(m) for m in mods], norms))
        emb = model.tok_embeddings
        if type(emb) is not nn.Embedding:
            raise NativeUnavailable(f"native engine: unsupported embedding {type(emb).__name__}")
        packed = PackedModel(
            sig, layers, emb.weight.detach().float().contiguous(), PackedLinear(model.output),
            _norm_weight(model.norm), model.rope_cos.contiguous(), model.rope_sin.contiguous(),
        )  # fmt: skip
    _PACKED[model] = packed
    return packed
