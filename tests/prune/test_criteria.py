"""First-order and scaling criteria against direct computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.core.granularity import PerChannel
from slimtorch.errors import ConfigError
from slimtorch.prune.criteria import (
    apoz_scores,
    bn_gamma_scores,
    magnitude_scores,
    slimming_loss,
    taylor_scores,
)
from slimtorch.prune.masks import granular_mask


def conv_bn_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_magnitude_ranks_filters_by_lp_norm(p):
    w = torch.randn(10, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    mask = granular_mask(magnitude_scores(w, p), PerChannel(0), 0.4)
    norms = torch.linalg.vector_norm(w.reshape(10, -1), ord=p, dim=1)
    kept = set(torch.argsort(norms, descending=True)[:6].tolist())
    assert set(torch.nonzero(mask.reshape(10, -1).all(1)).flatten().tolist()) == kept


def test_bn_gamma_reads_the_following_batchnorm():
    model = conv_bn_net()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -2.0, 0.1, 1.0]))
    scores = bn_gamma_scores(model, {"0": model[0]}, torch.zeros(1, 1, 4, 4))
    torch.testing.assert_close(scores["0"][:, 0, 0, 0], torch.tensor([0.5, 2.0, 0.1, 1.0]))
    with pytest.raises(ConfigError, match="BatchNorm"):
        bn_gamma_scores(model, {"4": model[4]}, torch.zeros(1, 1, 4, 4))


def test_slimming_loss_adds_l1_of_gammas():
    model = conv_bn_net()
    out, y = torch.randn(5, 3), torch.randint(0, 3, (5,))
    expected = F.cross_entropy(out, y) + 0.1 * model[1].weight.abs().sum()
    torch.testing.assert_close(slimming_loss(0.1)(model, out, y), expected)


def test_apoz_is_measured_after_the_activation():
    model = conv_bn_net().eval()
    x = torch.randn(20, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    scores = apoz_scores(model, {"0": model[0]}, [(x[:10], None), (x[10:], None)])
    with torch.no_grad():
        act = model[2](model[1](model[0](x)))  # [20, 4, 4, 4]
    apoz = (act == 0).double().mean(dim=(0, 2, 3))
    torch.testing.assert_close(scores["0"][:, 0, 0, 0], (1 - apoz).float())


def test_taylor_is_mean_abs_weight_times_grad():
    model = conv_bn_net().eval()
    gen = torch.Generator().manual_seed(2)
    batches = [(torch.randn(8, 1, 4, 4, generator=gen), torch.randint(0, 3, (8,), generator=gen))]
    scores = taylor_scores(model, {"4": model[4]}, batches * 2)
    loss = F.cross_entropy(model(batches[0][0]), batches[0][1])
    (g,) = torch.autograd.grad(loss, model[4].weight)
    torch.testing.assert_close(scores["4"], (model[4].weight * g).abs().detach())
    assert model[4].weight.grad is None  # gradients are cleaned up
