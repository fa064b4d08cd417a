"""BatchNorm folding leaves outputs unchanged (to float tolerance) on real zoo models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimtorch.models import create_model
from slimtorch.quantize.fold import _order_pairs, find_bn_pairs, fold_batchnorm


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))


@pytest.mark.parametrize("name", ["vgg", "resnet", "mobilenetv2"])
def test_folding_zoo_models_keeps_outputs(name):
    torch.manual_seed(0)
    model = create_model(name, norm="batch").eval()
    _randomize_bn(model)
    x = torch.randn(4, 1, 8, 8)
    folded, pairs = fold_batchnorm(model)
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert sorted(b for _, b in pairs) == sorted(bns)  # every conv-BN pair in these models
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_linear_with_bias_and_bn1d():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 3), nn.BatchNorm1d(3), nn.ReLU()).eval()
    _randomize_bn(model)
    x = torch.randn(7, 5)
    folded, pairs = fold_batchnorm(model)
    assert pairs == [("0", "1")]
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)


class _Branchy(nn.Module):
    """A conv whose output feeds the BN and a skip: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_shared_conv_output_is_not_folded():
    assert find_bn_pairs(_Branchy()) == []


class _Dynamic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))

    def forward(self, x):
        if x.sum() > 0:  # data-dependent: fx cannot trace this
            return self.body(x)
        return self.body(-x)


def test_untraceable_models_fall_back_to_module_order():
    model = _Dynamic().eval()
    _randomize_bn(model)
    assert find_bn_pairs(model) == _order_pairs(model) == [("body.0", "body.1")]
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        assert torch.allclose(fold_batchnorm(model)[0](x), model(x), atol=1e-5)
