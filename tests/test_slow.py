"""Slow checks (run by `make test` after the fast suite): full-size shapes and full training."""

from __future__ import annotations

import pytest
import torch

from slimtorch.core.trace import trace_model
from slimtorch.data import load_digits, make_loaders
from slimtorch.models import MODEL_NAMES, create_model
from slimtorch.train import FitConfig, evaluate, fit

RESNET18_PUBLISHED_MACS = 1.82e9  # He et al. 2016, Table 1 (1.8e9 multiply-adds)
RESNET18_PARAMS = 11_689_512  # torchvision.models.resnet18


@pytest.mark.slow
def test_resnet18_at_224_matches_published_and_fvcore() -> None:
    from fvcore.nn import FlopCountAnalysis

    model = create_model(
        "resnet", num_classes=1000, in_channels=3, image_size=224, blocks=(2, 2, 2, 2), width=64
    ).eval()
    x = torch.rand(1, 3, 224, 224)
    trace = trace_model(model, x)
    assert trace.total_params == RESNET18_PARAMS
    assert abs(trace.total_macs / RESNET18_PUBLISHED_MACS - 1) < 0.01
    fv = FlopCountAnalysis(model, x).unsupported_ops_warnings(False)
    by_op = fv.by_operator()
    assert trace.total_macs == sum(v for k, v in by_op.items() if k in ("conv", "linear"))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_zoo_model_learns_digits(name: str) -> None:
    splits = load_digits(seed=0)
    train, val, test = make_loaders(splits, batch_size=64, seed=0)
    torch.manual_seed(0)
    model = create_model(name)
    fit(model, train, val, FitConfig(epochs=20, scheduler="cosine", seed=0), progress=False)
    # Logistic regression on raw pixels reaches ~0.96 on this split; every zoo model should
    # at least approach it.
    assert evaluate(model, test).accuracy > 0.9
