"""The ``linear`` stage: affine (symmetric, signed) weight quantization of every linear and
conv layer not excluded, by :func:`slimtorch.quantize.quantize_mixed` at each layer's bits and
the stage's granularity; the weights hold the dequantized values."""

from __future__ import annotations

from slimtorch.compress.state import StageContext, capture_histogram
from slimtorch.quantize import quantize_mixed
from slimtorch.quantize.kmeans import quantizable_layers


def run(ctx: StageContext) -> None:
    """Replace ``ctx.state.model`` by its fake-quantized copy (a :class:`~slimtorch.compress.
    configs.LinearQuantConfig` in ``ctx.config``); record each layer's bits."""
    cfg, state = ctx.config, ctx.state
    capture_histogram(state, "before")
    bits = {n: cfg.bits_for(n) for n in quantizable_layers(state.model, cfg.exclude)}
    state.model, _ = quantize_mixed(state.model, bits, "linear", granularity=cfg.granularity)
    state.qbits.update({f"{name}.weight": b for name, b in bits.items()})
