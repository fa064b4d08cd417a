"""QAT: BatchNorm folded at the freeze epoch, LSQ gradient scaling, export to integers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimtorch.data import load_digits, make_loaders
from slimtorch.errors import ConfigError
from slimtorch.models import create_model
from slimtorch.quantize.fakequant import ActFakeQuant, scale_gradient
from slimtorch.quantize.integer import to_integer
from slimtorch.quantize.primitives import QuantSpec
from slimtorch.quantize.ptq import PTQConfig
from slimtorch.quantize.qat import QATConfig, quantize_qat


def test_scale_gradient_is_identity_forward_and_scaled_backward():
    s = torch.tensor(0.5, requires_grad=True)
    y = scale_gradient(s, 0.1) * 3.0
    y.backward()
    assert y.item() == pytest.approx(1.5)
    assert s.grad.item() == pytest.approx(0.3)


def test_lsq_activation_scale_learns_lsq_gradient():
    act = ActFakeQuant(QuantSpec(4, symmetric=False, signed=False), lsq=True)
    act.observer.update(torch.tensor([0.0, 1.5]))
    act.freeze()
    x = torch.tensor([[0.26, 3.0]])
    act(x).sum().backward()
    s = act.scale.item()
    g = 1 / (2 * 15) ** 0.5  # LSQ: 1 / sqrt(numel per sample * q_max)
    # d/ds of s*(round(x/s)) is round(x/s) - x/s inside the range, q_max - zero outside
    expected = (round(0.26 / s) - 0.26 / s) + 15
    assert act.learned_scale.grad.item() == pytest.approx(expected * g, rel=1e-4)


def test_qat_folds_bn_and_exports_to_a_matching_integer_model():
    splits = load_digits(seed=0)
    train, val, _ = make_loaders(splits, batch_size=64, seed=0)
    train, val = list(train)[:4], list(val)[:2]  # a few batches: this tests wiring, not accuracy
    model = create_model("vgg")
    cfg = QATConfig(ptq=PTQConfig(calib_batches=2), epochs=2, lr=1e-3, freeze_bn_epoch=1)
    qmodel, report, fit_report = quantize_qat(model, train, val, cfg)
    assert len(fit_report.history) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in qmodel.modules())
    assert len(report.extra["folded_bn"]) == 4
    x = next(iter(val))[0]
    with torch.no_grad():
        fake, ints = qmodel(x), to_integer(qmodel, x)(x)
    assert float((fake.argmax(1) == ints.argmax(1)).float().mean()) >= 0.98


def test_bad_qat_configs():
    with pytest.raises(ConfigError, match="epochs"):
        QATConfig(epochs=0)
    with pytest.raises(ConfigError, match="activation_bits"):
        QATConfig(ptq=PTQConfig(activation_bits=None))
