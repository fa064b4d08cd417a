"""The ``kmeans`` stage: k-means weight sharing of every linear and conv layer
(:func:`slimtorch.quantize.kmeans_quantize_model` with the recipe's
:class:`~slimtorch.quantize.KMeansConfig`); the layers become codebook layers."""

from __future__ import annotations

from slimtorch.compress.state import StageContext, capture_histogram
from slimtorch.quantize.kmeans import kmeans_quantize_model
from slimtorch.quantize.trained import codebook_layers


def run(ctx: StageContext) -> None:
    """Replace ``ctx.state.model`` by its k-means quantized copy; record each layer's bits."""
    state = ctx.state
    capture_histogram(state, "before")
    state.model, _ = kmeans_quantize_model(state.model, ctx.config)
    for name, shell in codebook_layers(state.model).items():
        state.qbits[f"{name}.weight"] = shell.bits
