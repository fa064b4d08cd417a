"""The ``encode`` stage: write the compressed file (:func:`slimtorch.encode.save_compressed`):
quantized tensors as codebooks of their distinct kept values, pruned-only tensors as sparse
values, relative indices and Huffman codes as the stage's
:class:`~slimtorch.compress.configs.HuffmanConfig` says. The model becomes the dense model the
file decodes to, and the file's length is the stage's size."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimtorch.compress.state import (
    PipelineState,
    StageContext,
    capture_histogram,
    dense_model,
    plus_zero,
)
from slimtorch.encode import SparseWeight, from_quantized, save_compressed
from slimtorch.errors import ConfigError


def run(ctx: StageContext) -> None:
    """Write ``ctx.out_file``; ``ctx.state`` gets the file's summary and the dense model."""
    cfg, state = ctx.config, ctx.state
    if ctx.out_file is None:
        raise ConfigError("the recipe has an encode stage: give an output file")
    state.huffman = cfg
    dense = dense_model(state.model, state.spec)
    if cfg.codebook_dtype != "float32":
        _round_quantized(dense, state.qbits, getattr(torch, cfg.codebook_dtype))
    state.file = save_compressed(
        ctx.out_file,
        dense,
        state.spec,
        layer_codecs(dense, state),
        metadata=dict(state.file_metadata),
        config=cfg.encode_config(),
    )
    state.model = dense
    capture_histogram(state, "after")


def _round_quantized(dense: nn.Module, qbits: dict[str, int], dtype: torch.dtype) -> None:
    """Round every quantized tensor to the codebook dtype (and back), so the file decodes to
    exactly the weights evaluated."""
    params = dict(dense.named_parameters())
    with torch.no_grad():
        for key in qbits:
            t = params[key]
            t.copy_(plus_zero(t.to(dtype).to(t.dtype)))


def layer_codecs(dense: nn.Module, state: PipelineState) -> dict[str, Any]:
    """The encode codec of every compressed tensor of the dense model: a codebook of its
    distinct kept values (quantized tensors) or sparse values (pruned only)."""
    weights, codecs = dense.state_dict(), {}
    dtype = getattr(torch, state.huffman.codebook_dtype)
    for key in sorted(set(state.qbits) | set(state.masks)):
        w = weights[key]
        mask = w != 0 if key in state.masks and not bool(state.masks[key].all()) else None
        kept = w if mask is None else w[mask]
        bits = state.huffman.bits_for(tuple(w.shape))
        if key in state.qbits:
            book = torch.unique(kept).to(dtype) if kept.numel() else torch.zeros(1, dtype=dtype)
            codecs[key] = from_quantized(w, book, mask, index_bits=bits)
        else:
            codecs[key] = SparseWeight(tuple(w.shape), kept, mask, None, bits)
    return codecs
