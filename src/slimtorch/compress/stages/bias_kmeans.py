"""The ``bias_kmeans`` stage: every bias vector with at least ``min_numel`` entries shares
``2**bits`` values (:func:`slimtorch.quantize.kmeans_codebook`, zeros clustered like any
value)."""

from __future__ import annotations

import torch
from torch import Tensor

from slimtorch.compress.state import StageContext
from slimtorch.quantize import kmeans_codebook


def run(ctx: StageContext) -> None:
    """Write each shared bias into ``ctx.state.model`` in place; record its bits."""
    cfg, state = ctx.config, ctx.state
    for name, module in state.model.named_modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, Tensor) and bias.numel() >= cfg.min_numel and name:
            codebook, idx, _ = kmeans_codebook(bias.detach(), cfg.bits, keep_zeros=False)
            with torch.no_grad():
                bias.copy_(codebook[idx])
            state.qbits[f"{name}.bias"] = cfg.bits
