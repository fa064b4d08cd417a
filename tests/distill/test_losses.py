"""Distillation losses against closed forms and straightforward loop references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from slimtorch.distill.losses import (
    HintAdapter,
    attention_map,
    attention_transfer_loss,
    hint_loss,
    kd_loss,
    soft_target_loss,
)
from slimtorch.errors import ConfigError


def _softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_soft_target_loss_closed_form() -> None:
    s, t, temp = [1.0, 2.0, -0.5], [0.3, -1.0, 2.0], 3.0
    p, q = _softmax(t, temp), _softmax(s, temp)
    expected = temp**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    got = soft_target_loss(torch.tensor([s]), torch.tensor([t]), temp)
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("temp", [1.0, 2.0, 5.0, 20.0])
def test_gradient_is_t_times_probability_difference(temp: float) -> None:
    torch.manual_seed(0)
    s = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 6, dtype=torch.float64)
    soft_target_loss(s, t, temp).backward()
    expected = temp * (F.softmax(s.detach() / temp, 1) - F.softmax(t / temp, 1)) / 4
    assert torch.allclose(s.grad, expected)


def test_t_squared_keeps_gradient_scale_at_high_temperature() -> None:
    torch.manual_seed(0)
    t = torch.randn(8, 10, dtype=torch.float64)
    t = t - t.mean(1, keepdim=True)
    s0 = torch.randn(8, 10, dtype=torch.float64)
    s0 = s0 - s0.mean(1, keepdim=True)
    norms = []
    for temp in (20.0, 80.0):
        s = s0.clone().requires_grad_(True)
        soft_target_loss(s, t, temp).backward()
        norms.append(s.grad.norm().item())
    limit = ((s0 - t) / (10 * 8)).norm().item()  # Hinton et al. Sec. 2.1: (z - v) / (N_c N)
    assert norms[0] == pytest.approx(limit, rel=0.05) and norms[1] == pytest.approx(limit, rel=0.01)


def test_kd_loss_mixes_with_alpha() -> None:
    torch.manual_seed(1)
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.randint(0, 4, (5,))
    expected = 0.7 * soft_target_loss(s, t, 2.0) + 0.3 * F.cross_entropy(s, y)
    assert torch.allclose(kd_loss(s, t, y, temperature=2.0, alpha=0.7), expected)
    assert torch.allclose(kd_loss(s, t, y, alpha=0.0), F.cross_entropy(s, y))
    with pytest.raises(ConfigError):
        soft_target_loss(s, t, 0.0)


def test_attention_map_and_loss_against_loops() -> None:
    torch.manual_seed(2)
    xs, xt = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    ref_maps = []
    for x in (xs, xt):
        rows = []
        for n in range(2):
            energy = [sum(x[n, c, i, j].item() ** 2 for c in range(x.shape[1])) / x.shape[1]
                      for i in range(4) for j in range(4)]  # fmt: skip
            norm = math.sqrt(sum(e * e for e in energy))
            rows.append([e / norm for e in energy])
        ref_maps.append(torch.tensor(rows))
    assert torch.allclose(attention_map(xs), ref_maps[0], atol=1e-6)
    expected = ((ref_maps[0] - ref_maps[1]) ** 2).mean()
    assert attention_transfer_loss(xs, xt).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="spatial"):
        attention_transfer_loss(xs, torch.randn(2, 3, 2, 2))


def test_hint_loss_against_reference_regressor() -> None:
    torch.manual_seed(3)
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 6, 4, 4)
    adapter = HintAdapter.for_features(s, t)
    w = adapter.proj.weight.detach()[:, :, 0, 0]  # [6, 3]
    regressed = torch.einsum("oc,nchw->nohw", w, s)
    expected = 0.5 * ((regressed - t) ** 2).mean()
    assert hint_loss(s, t, adapter).item() == pytest.approx(expected.item(), rel=1e-5)
    vec = HintAdapter.for_features(torch.zeros(2, 3), torch.zeros(2, 7))
    assert isinstance(vec.proj, torch.nn.Linear) and vec.proj.out_features == 7
    pooled = hint_loss(s, torch.randn(2, 6, 2, 2), adapter)  # student map pooled to 2x2
    assert pooled.ndim == 0
    with pytest.raises(ConfigError):
        HintAdapter.for_features(torch.zeros(2, 3), torch.zeros(2, 3, 1, 1))
