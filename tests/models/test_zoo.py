"""Zoo models build for every input size, norm and activation; counts match closed forms."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode

from slimtorch.errors import ConfigError
from slimtorch.models import ACTS, MODEL_NAMES, NORMS, create_model
from slimtorch.models.mobilenetv2 import InvertedResidual
from slimtorch.models.resnet import BasicBlock

INPUTS = [(8, 1), (28, 1), (32, 3)]  # (image_size, in_channels)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def lenet300_closed_form(inputs: int, hidden: tuple[int, ...], classes: int) -> int:
    widths = [inputs, *hidden, classes]
    return sum(a * b + b for a, b in pairwise(widths))


def resnet18_closed_form(classes: int = 1000, in_channels: int = 3) -> int:
    """Conv weights (no bias) + BN (2 per channel) + fc, counted from the paper's table 1."""
    bn = lambda c: 2 * c  # noqa: E731
    total = in_channels * 64 * 7 * 7 + bn(64)  # stem
    c_in = 64
    for c in (64, 128, 256, 512):
        for block in range(2):
            first_in = c_in if block == 0 else c
            total += first_in * c * 9 + bn(c) + c * c * 9 + bn(c)
            if block == 0 and first_in != c:
                total += first_in * c + bn(c)  # 1x1 projection shortcut
        c_in = c
    return total + 512 * classes + classes


def test_closed_form_oracles_match_published_counts():
    assert lenet300_closed_form(784, (300, 100), 10) == 266_610
    assert resnet18_closed_form() == 11_689_512  # torchvision resnet18


def test_lenet300_on_784_inputs_has_266610_params():
    model = create_model("lenet300", image_size=28)
    assert n_params(model) == lenet300_closed_form(28 * 28, (300, 100), 10)


def test_resnet18_shape_parameter_count_and_macs():
    model = create_model(
        "resnet", num_classes=1000, in_channels=3, image_size=224, blocks=(2, 2, 2, 2), width=64
    )
    assert n_params(model) == resnet18_closed_form()
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        out = model.eval()(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert 1.80e9 < counter.get_total_flops() / 2 < 1.83e9  # ~1.82 GMACs


def test_mobilenetv2_imagenet_matches_torchvision_count():
    model = create_model(
        "mobilenetv2", num_classes=1000, in_channels=3, image_size=224, settings="imagenet"
    )
    assert n_params(model) == 3_504_872  # torchvision mobilenet_v2


def test_lenet5_on_28px_has_classic_count():
    # conv 1->6 (5x5) + conv 6->16 (5x5) + 400->120->84->10
    expected = (25 * 6 + 6) + (6 * 25 * 16 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + 850
    assert n_params(create_model("lenet5", image_size=28)) == expected


def _norms_for(name: str) -> list[str]:
    return [n for n in NORMS if not (name == "lenet300" and n == "instance")]


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("image_size,in_channels", INPUTS)
def test_every_model_and_norm_gives_logits(name, image_size, in_channels):
    for i, norm in enumerate(_norms_for(name)):
        act = ACTS[i % len(ACTS)]
        model = create_model(
            name, num_classes=7, in_channels=in_channels, image_size=image_size, norm=norm, act=act
        )
        out = model(torch.rand(3, in_channels, image_size, image_size))
        assert out.shape == (3, 7), (name, norm, act)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("act", ACTS)
def test_every_activation_is_used(name, act):
    model = create_model(name, act=act)
    types = {type(m) for m in model.modules()}
    expected = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU}
    expected |= {"relu6": nn.ReLU6, "silu": nn.SiLU, "swish": nn.SiLU, "hardswish": nn.Hardswish}
    assert expected[act] in types
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_instance_norm_on_mlp_is_refused():
    with pytest.raises(ConfigError, match="instance"):
        create_model("lenet300", norm="instance")


@pytest.mark.parametrize("bad", [{"norm": "bogus"}, {"act": "tanhh"}, {"image_size": 0}])
def test_bad_norm_act_or_size_is_config_error(bad):
    with pytest.raises(ConfigError):
        create_model("resnet", **bad)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_weight_norm_parametrizes_every_conv_and_linear(name):
    torch.manual_seed(0)
    model = create_model(name, norm="weight").eval()
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(isinstance(m, nn.BatchNorm2d | nn.GroupNorm) for m in model.modules())
    x = torch.rand(2, 1, 8, 8)
    before = model(x)
    with torch.no_grad():  # weight norm: the direction v is scale-free
        for m in layers:
            m.parametrizations.weight.original1.mul_(3.0)
    torch.testing.assert_close(model(x), before)


def test_mobilenetv2_block_is_residual_only_when_shapes_match():
    torch.manual_seed(0)
    same = InvertedResidual(16, 16, stride=1, expand=6, norm="batch", act="relu6").eval()
    assert same.use_residual
    nn.init.zeros_(same.conv[-1].weight)  # zero the last norm: the block becomes identity
    nn.init.zeros_(same.conv[-1].bias)
    x = torch.rand(2, 16, 4, 4)
    torch.testing.assert_close(same(x), x)
    assert not InvertedResidual(16, 16, stride=2, expand=6, norm="batch", act="relu6").use_residual
    assert not InvertedResidual(16, 24, stride=1, expand=6, norm="batch", act="relu6").use_residual


def test_mobilenetv2_bottleneck_is_linear_and_width_mult_scales():
    block = InvertedResidual(8, 8, stride=1, expand=6, norm="batch", act="relu6")
    assert isinstance(block.conv[-2], nn.Conv2d) and isinstance(block.conv[-1], nn.BatchNorm2d)
    assert block.conv[1][0].groups == 48  # depthwise on the expanded channels
    narrow = create_model("mobilenetv2", width_mult=0.5)
    assert n_params(narrow) < n_params(create_model("mobilenetv2"))


def test_resnet_block_identity_and_projection_shortcuts():
    torch.manual_seed(0)
    block = BasicBlock(8, 8, stride=1, norm="batch", act="relu").eval()
    assert block.downsample is None
    nn.init.zeros_(block.bn2.weight)
    nn.init.zeros_(block.bn2.bias)
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(block(x), torch.relu(x))
    down = BasicBlock(8, 16, stride=2, norm="batch", act="relu")
    conv = down.downsample[0]
    assert conv.kernel_size == (1, 1) and conv.stride == (2, 2)
    assert down(x).shape == (2, 16, 2, 2)


def test_small_resnet_uses_3x3_stem_without_maxpool():
    model = create_model("resnet", image_size=32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not hasattr(model, "maxpool")


def test_vgg_config_list_and_too_many_pools():
    model = create_model("vgg", cfg=[4, "M", 8, "M", 12])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 12]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2
    with pytest.raises(ConfigError, match="pools"):
        create_model("vgg", cfg=[4, "M", "M", "M", "M"], image_size=8)
