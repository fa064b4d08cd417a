"""Channel surgery: a physically smaller model computes what the masked model computes.

Oracle: the same channels *masked* in the unpruned model (every producer's filter and bias
zeroed, every BatchNorm's gamma and beta zeroed, in eval mode), which makes those channels
exactly zero everywhere; the surgically pruned model must give the same outputs to float
tolerance. MACs are checked against a closed form from the unpruned model's per-layer counts.
"""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch
from torch import nn

from slimtorch.checkpoint import load_checkpoint, save_checkpoint
from slimtorch.core.trace import trace_model
from slimtorch.errors import ConfigError, ModelError
from slimtorch.models import MODEL_NAMES, build_model, make_spec
from slimtorch.prune.graph import ChannelGraph, trace_channels
from slimtorch.prune.surgery import (
    bn_importance,
    keep_by_importance,
    l1_importance,
    prune_channels,
    pruned_spec,
)

ATOL = 1e-4


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial norm statistics and affine parameters (fresh BN is an identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _masked(model: nn.Module, graph: ChannelGraph, keeps: dict[str, torch.Tensor]) -> nn.Module:
    """The oracle: zero every producer/tied parameter of the dropped channels."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for name, kept in keeps.items():
            group = graph.group(name)
            dropped = torch.ones(group.size, dtype=torch.bool)
            dropped[kept] = False
            for slot in group.slots:
                if slot.role == "in":
                    continue
                m = masked.get_submodule(slot.module)
                idx = slot.indices(dropped.nonzero().reshape(-1))
                for p in (m.weight, getattr(m, "bias", None)):
                    if p is not None:
                        p[idx] = 0
    return masked


def _random_keeps(graph: ChannelGraph, fraction: float, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    keeps = {}
    for group in graph.prunable():
        n = max(1, round(group.size * fraction))
        keeps[group.name] = torch.randperm(group.size, generator=g)[:n].sort().values
    return keeps


def _check_equal_to_masked(model: nn.Module, x: torch.Tensor, fraction: float = 0.5) -> nn.Module:
    graph = trace_channels(model, x)
    keeps = _random_keeps(graph, fraction, seed=1)
    pruned = prune_channels(model, x, keeps, graph=graph).eval()
    with torch.no_grad():
        expected = _masked(model, graph, keeps)(x)
        got = pruned(x)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-4)
    return pruned


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_zoo_surgery_equals_masking(name: str) -> None:
    torch.manual_seed(0)
    model = _randomize(build_model(make_spec(name)))
    x = torch.randn(4, 1, 8, 8)
    pruned = _check_equal_to_masked(model, x)
    params = sum(p.numel() for p in pruned.parameters())
    assert params < sum(p.numel() for p in model.parameters())


def test_mobilenetv2_depthwise_and_residual_shrink_together() -> None:
    model = _randomize(build_model(make_spec("mobilenetv2")))
    x = torch.randn(2, 1, 8, 8)
    pruned = _check_equal_to_masked(model, x, fraction=0.25)
    dw = pruned.features[2].conv[1][0]  # expand -> depthwise -> project
    assert (
        dw.groups == dw.in_channels == dw.out_channels == pruned.features[2].conv[0][0].out_channels
    )
    # the residual row (features.3 + features.4 outputs) is one group: equal widths
    assert pruned.features[3].conv[2].out_channels == pruned.features[2].conv[2].out_channels


class ResidualConcat(nn.Module):
    """A user model: a residual block (two producers into one add) and a channel concat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.a = nn.Conv2d(6, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 4, 1)
        self.c = nn.Conv2d(6, 5, 1)
        self.head = nn.Linear((4 + 5) * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.stem(x)))
        h = torch.relu(h + self.a(h))  # residual
        y = torch.cat([self.b(h), self.c(h)], dim=1)  # [N, 9, 8, 8]
        y = nn.functional.max_pool2d(y, 2)  # [N, 9, 4, 4]
        return self.head(y.flatten(1))


def test_user_residual_concat_groups_closed_form() -> None:
    graph = trace_channels(ResidualConcat(), torch.zeros(1, 1, 8, 8))
    stem = graph.group("stem")
    assert stem.modules("out") == ("stem", "a") and stem.prunable
    assert set(stem.modules("in")) == {"a", "b", "c"}
    head_b = [s for s in graph.group("b").slots if s.module == "head"]
    head_c = [s for s in graph.group("c").slots if s.module == "head"]
    assert (head_b[0].offset, head_b[0].repeat) == (0, 16)  # channel c -> features 16c..16c+15
    assert (head_c[0].offset, head_c[0].repeat) == (4 * 16, 16)  # after b's 4 channels


def test_user_residual_concat_surgery_equals_masking() -> None:
    torch.manual_seed(0)
    model = _randomize(ResidualConcat())
    pruned = _check_equal_to_masked(model, torch.randn(3, 1, 8, 8))
    assert pruned.head.in_features == (pruned.b.out_channels + pruned.c.out_channels) * 16


def _conv_linear_macs(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    trace = trace_model(model, x)
    kinds = (nn.Conv2d, nn.Linear)
    return {c.name: c.macs for c in trace.layers if isinstance(model.get_submodule(c.name), kinds)}


@pytest.mark.parametrize("name", ["vgg", "resnet", "mobilenetv2"])
def test_macs_drop_as_predicted(name: str) -> None:
    model = build_model(make_spec(name)).eval()
    x = torch.zeros(1, 1, 8, 8)
    pruned = prune_channels(model, x, ratio=0.5)
    before, after = _conv_linear_macs(model, x), _conv_linear_macs(pruned, x)
    for layer, macs in before.items():
        old, new = model.get_submodule(layer), pruned.get_submodule(layer)
        if isinstance(old, nn.Linear):
            scale = new.in_features * new.out_features / (old.in_features * old.out_features)
        else:  # MACs of a conv: out * in / groups * k*k * H*W
            scale = (new.out_channels * new.in_channels / new.groups) / (
                old.out_channels * old.in_channels / old.groups
            )
        assert after[layer] == round(macs * scale), layer
    assert sum(after.values()) < 0.4 * sum(before.values())


def test_l1_ratio_keeps_the_largest_filters() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1, 1], [0, 0, 0.1], [5, 0, 0], [0.5, 0, 0]]))
    pruned = prune_channels(model, torch.zeros(1, 3), ratio=0.5)
    torch.testing.assert_close(pruned[0].weight, model[0].weight[[0, 2]])
    torch.testing.assert_close(pruned[2].weight, model[2].weight[:, [0, 2]])
    graph = trace_channels(model, torch.zeros(1, 3))
    scores = l1_importance(model, graph.groups[0])
    torch.testing.assert_close(scores, model[0].weight.abs().sum(1))


def test_keep_by_importance_reference() -> None:
    scores = torch.tensor([0.3, 0.9, 0.1, 0.9, 0.5, 0.2])
    assert keep_by_importance(scores, 0.5).tolist() == [1, 3, 4]
    assert keep_by_importance(scores, 0.9, min_channels=2).tolist() == [1, 3]
    assert keep_by_importance(scores, 0.5, round_to=4).tolist() == [0, 1, 3, 4]
    with pytest.raises(ConfigError, match="ratio"):
        keep_by_importance(scores, 1.0)


@pytest.mark.parametrize("name", ["vgg", "resnet"])
def test_pruned_checkpoint_reloads(name: str) -> None:
    spec = make_spec(name)
    model = _randomize(build_model(spec))
    x = torch.randn(2, 1, 8, 8)
    pruned = prune_channels(model, x, ratio=0.5).eval()
    folder = save_checkpoint(tempfile.mkdtemp(), pruned, pruned_spec(spec, pruned))
    loaded, loaded_spec, _ = load_checkpoint(folder)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x))
    assert loaded_spec.kwargs["image_size"] == 8


def test_weight_norm_model_surgery_equals_slicing() -> None:
    torch.manual_seed(0)
    model = build_model(make_spec("vgg", norm="weight")).eval()
    x = torch.randn(2, 1, 8, 8)
    keeps = {"features.0.0": [0, 3, 5], "features.3.0": list(range(0, 32, 2))}
    pruned = prune_channels(model, x, keeps)
    w_old = model.features[1][0].weight.detach()
    torch.testing.assert_close(pruned.features[1][0].weight, w_old[:, [0, 3, 5]])
    spec = pruned_spec(make_spec("vgg", norm="weight"), pruned)
    folder = save_checkpoint(tempfile.mkdtemp(), pruned, spec)
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(folder)[0](x), pruned(x))


def test_errors_name_the_problem() -> None:
    model = build_model(make_spec("vgg"))
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ConfigError, match="nope"):
        prune_channels(model, x, {"nope": [0]})
    with pytest.raises(ConfigError, match="fixed"):
        prune_channels(model, x, {"classifier": [0]})
    with pytest.raises(ConfigError, match=r"\[0, 16\)"):
        prune_channels(model, x, {"features.0.0": [16]})
    with pytest.raises(ConfigError, match="importance"):
        prune_channels(model, x, ratio=0.5, importance="l7")


class HardCoded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).view(-1, 256))


def test_hard_coded_channel_count_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="hard-code"):
        prune_channels(HardCoded(), torch.zeros(2, 1, 8, 8), ratio=0.5)


def test_bn_importance_is_gamma_magnitude_summed_over_the_group() -> None:
    model = build_model(make_spec("resnet"))
    with torch.no_grad():
        model.bn1.weight.copy_(torch.linspace(-1, 1, 16))
        model.layer1[0].bn2.weight.fill_(0.5)
    graph = trace_channels(model, torch.zeros(1, 1, 8, 8))
    scores = bn_importance(model, graph.group("conv1"))
    torch.testing.assert_close(scores, torch.linspace(-1, 1, 16).abs() + 0.5)
    lin = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))  # no BN: falls back to L1
    g = trace_channels(lin, torch.zeros(1, 3)).groups[0]
    torch.testing.assert_close(bn_importance(lin, g), l1_importance(lin, g))
