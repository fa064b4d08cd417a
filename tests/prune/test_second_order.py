"""OBD/OBS against oracles: least squares, per-sample autograd loops, exact Hessians."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.prune.second_order import (
    fisher_diagonal,
    hutchinson_diagonal,
    obd_scores,
    obs_prune,
    obs_prune_layers,
)


def test_obs_update_equals_direct_least_squares():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 50, generator=gen, dtype=torch.float64)  # [d, n]
    w = torch.randn(3, 6, generator=gen, dtype=torch.float64)  # [rows, d]
    h = 2 * x @ x.T / x.shape[1]
    new_w, kept = obs_prune(w, h, 0.5, damp=0.0)
    assert int((~kept).sum()) == 9  # exact sparsity over the layer
    for r in range(3):
        f = kept[r]
        # min over w'_F of ||w X - w'_F X_F||^2, solved directly
        sol = torch.linalg.lstsq(x[f].T, (w[r] @ x).unsqueeze(1)).solution.squeeze(1)
        torch.testing.assert_close(new_w[r, f], sol, rtol=1e-6, atol=1e-8)
        assert torch.all(new_w[r, ~f] == 0)


def test_obs_beats_magnitude_at_equal_sparsity():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(8, 200, generator=gen, dtype=torch.float64)
    x = base + 0.9 * base[[1, 0, 3, 2, 5, 4, 7, 6]]  # correlated inputs: compensation matters
    w = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    new_w, _ = obs_prune(w, 2 * x @ x.T / 200, 0.5, damp=0.0)
    mag = w * (w.abs() >= w.abs().median(dim=1, keepdim=True).values)
    err = lambda v: float(((w - v) @ x).pow(2).sum())  # noqa: E731
    assert err(new_w) < err(mag)


def test_obs_layers_in_place_on_a_linear_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4))
    batches = [(torch.randn(32, 5), torch.zeros(32, dtype=torch.long))]
    masks = obs_prune_layers(model, {"0": 0.25}, batches)
    assert int((~masks["0"]).sum()) == 5
    assert torch.all(model[0].weight[~masks["0"]] == 0)


def tiny_classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))


def test_fisher_diagonal_matches_per_sample_loop():
    model = tiny_classifier()
    x, y = torch.randn(10, 3), torch.randint(0, 3, (10,))
    fisher = fisher_diagonal(model, {"0": model[0], "2": model[2]}, [(x, y)])
    for name in ("0", "2"):
        w = dict(model.named_modules())[name].weight
        ref = torch.zeros_like(w)
        for i in range(10):
            (g,) = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), w)
            ref += g**2
        torch.testing.assert_close(fisher[name], ref / 10, rtol=1e-5, atol=1e-7)


def test_hutchinson_converges_to_the_exact_hessian_diagonal():
    model = tiny_classifier()
    x, y = torch.randn(16, 3), torch.randint(0, 3, (16,))
    w = model[2].weight

    def loss_of(v):
        h = model[1](model[0](x))
        return F.cross_entropy(F.linear(h, v, model[2].bias), y)

    exact = torch.autograd.functional.hessian(loss_of, w.detach()).reshape(w.numel(), -1)
    exact = torch.diagonal(exact).reshape(w.shape)
    est = hutchinson_diagonal(model, {"2": model[2]}, [(x, y)], samples=800, seed=0)["2"]
    assert float((est - exact).abs().max()) < 0.15 * float(exact.abs().max()) + 1e-4


def test_obd_closed_form():
    assert math.isclose(float(obd_scores(torch.tensor(3.0), torch.tensor(2.0))), 9.0)
