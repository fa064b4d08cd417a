"""A codebook layer first used under inference_mode still trains afterwards (regression)."""

from __future__ import annotations

import torch
from torch import nn

from slimtorch.quantize.kmeans import KMeansConfig, kmeans_quantize_model


def test_codebook_layer_trains_after_inference_mode_forward() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    qmodel, _ = kmeans_quantize_model(model, KMeansConfig(bits=2))
    x = torch.randn(4, 6)
    qmodel.load_state_dict(qmodel.state_dict())  # as keep-best restores: packed indices rewritten
    with torch.inference_mode():
        expected = qmodel(x)  # the first call builds the unpacked-index cache
    out = qmodel(x)
    out.sum().backward()  # autograd must not meet an inference tensor
    grads = [p.grad for p in qmodel.parameters() if p.grad is not None]
    assert grads and torch.equal(out.detach(), expected)
