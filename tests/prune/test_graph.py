"""Channel dependency tracing: groups against hand-derived (closed-form) structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimtorch.errors import ConfigError, ModelError
from slimtorch.models import build_model, make_spec
from slimtorch.prune.graph import ChannelSlot, trace_channels

X8 = torch.zeros(1, 1, 8, 8)


def test_resnet_residual_adds_and_projections_couple() -> None:
    graph = trace_channels(build_model(make_spec("resnet")), X8)
    stage1 = graph.group("conv1")
    assert set(stage1.modules("out")) == {"conv1", "layer1.0.conv2"}
    assert set(stage1.modules("tied")) == {"bn1", "layer1.0.bn2"}
    assert set(stage1.modules("in")) == {
        "layer1.0.conv1",
        "layer2.0.conv1",
        "layer2.0.downsample.0",
    }
    stage2 = graph.group("layer2.0.conv2")  # addressed by any producer
    assert set(stage2.modules("out")) == {"layer2.0.conv2", "layer2.0.downsample.0"}
    assert graph.group("layer3.0.conv2").modules("in") == ("fc",)
    assert not graph.group("fc").prunable and graph.group("fc").reason == "model output"
    assert len(graph.prunable()) == 6  # 3 stage groups + 3 inner conv1 groups


def test_vgg_flatten_after_global_pool_maps_one_feature_per_channel() -> None:
    graph = trace_channels(build_model(make_spec("vgg")), X8)
    last = graph.group("features.4.0")
    assert ChannelSlot("classifier", "in", 0, 1) in last.slots


def test_lenet5_flatten_maps_each_channel_to_its_spatial_block() -> None:
    graph = trace_channels(build_model(make_spec("lenet5")), X8)
    # 8x8 -> conv(pad 2) 8x8 -> pool 4x4 -> conv(pad 2) 4x4 -> pool 2x2: 4 features per channel
    assert ChannelSlot("fc1.0", "in", 0, 4) in graph.group("conv2.0").slots
    assert ChannelSlot("fc1.0", "in", 0, 4).indices(torch.tensor([0, 2])).tolist() == [
        *(0, 1, 2, 3),
        *(8, 9, 10, 11),
    ]


def test_mobilenetv2_depthwise_ties_expand_group() -> None:
    graph = trace_channels(build_model(make_spec("mobilenetv2")), X8)
    expand = graph.group("features.2.conv.0.0")
    assert expand.modules("tied") == (
        "features.2.conv.0.1",
        "features.2.conv.1.0",  # depthwise conv
        "features.2.conv.1.1",
    )
    assert expand.modules("in") == ("features.2.conv.2",)
    row = graph.group("features.3.conv.2")  # inverted residual: x + conv(x)
    assert set(row.modules("out")) == {"features.2.conv.2", "features.3.conv.2"}


class Unsupported(nn.Module):
    """GroupNorm couples channels (statistics over all of them); slicing is not rewired."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.gn = nn.GroupNorm(2, 8)
        self.split = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.split(self.gn(self.conv(x)))
        return self.fc(y[:, :2].mean((2, 3)))


def test_ops_that_cannot_be_rewired_fix_their_groups() -> None:
    graph = trace_channels(Unsupported(), X8)
    assert not graph.group("conv").prunable and "gn" in graph.group("conv").reason
    assert not graph.group("split").prunable
    assert graph.prunable() == ()


class Shared(nn.Module):
    """One conv called on two inputs, then a concat along the batch dim."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([self.conv(x), self.conv(-x)], dim=0))


def test_shared_module_is_one_group() -> None:
    graph = trace_channels(Shared(), X8)
    group = graph.group("conv")
    assert group.prunable and group.modules("in") == ("out",) and group.size == 4


class Untraceable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow
            return x
        return -x


def test_untraceable_model_is_a_model_error_naming_model_and_fx_error() -> None:
    with pytest.raises(ModelError, match=r"Untraceable.*symbolically traced"):
        trace_channels(Untraceable(), X8)


def test_wrong_example_input_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="example input"):
        trace_channels(build_model(make_spec("vgg")), torch.zeros(1, 3, 8, 8))


def test_unknown_group_key_lists_the_prunable_ones() -> None:
    graph = trace_channels(build_model(make_spec("lenet300")), X8)
    with pytest.raises(ConfigError, match=r"fc1\.0, fc2\.0"):
        graph.group("fc9")


def test_tracing_leaves_training_flags_and_bn_stats_alone() -> None:
    model = build_model(make_spec("vgg")).train()
    before = model.features[0][1].running_mean.clone()
    trace_channels(model, torch.randn(4, 1, 8, 8))
    assert model.training and torch.equal(model.features[0][1].running_mean, before)
