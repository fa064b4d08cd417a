"""Regression channel pruning against explicit design matrices and numpy/sklearn solvers."""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import lars_path

from slimtorch.prune.regression import (
    contribution_gram,
    least_squares_weights,
    regression_prune,
    select_greedy,
    select_lasso,
)


def problem(seed=0, out=3, channels=5, k=4, n=60):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(channels * k, n, generator=gen, dtype=torch.float64)  # [C*k, n]
    w = torch.randn(out, channels * k, generator=gen, dtype=torch.float64)
    return w, x, channels, k


def contributions(w, x, channels, k):
    """Z_c = W_c X_c, explicitly: [C, out, n]."""
    return torch.stack(
        [w[:, c * k : (c + 1) * k] @ x[c * k : (c + 1) * k] for c in range(channels)]
    )


def test_contribution_gram_matches_explicit_products():
    w, x, c, k = problem()
    z = contributions(w, x, c, k).reshape(c, -1)
    torch.testing.assert_close(contribution_gram(w, x @ x.T, c), z @ z.T)


def test_least_squares_matches_lstsq():
    w, x, _c, k = problem(1)
    keep = torch.tensor([True, False, True, True, False]).repeat_interleave(k)
    got = least_squares_weights(w, x @ x.T, keep)
    y = w @ x  # [out, n]
    ref = torch.linalg.lstsq(x[keep].T, y.T).solution.T  # [out, kept]
    torch.testing.assert_close(got[:, keep], ref, rtol=1e-6, atol=1e-8)
    assert torch.all(got[:, ~keep] == 0)


def test_lasso_selection_matches_sklearn_on_the_explicit_design():
    w, x, c, k = problem(2, channels=6)
    z = contributions(w, x, c, k).reshape(c, -1).T.numpy()  # design [out*n, C]
    y = z.sum(axis=1)
    _, _, coefs = lars_path(z, y, method="lasso")
    nnz = (coefs != 0).sum(axis=0)
    step = int(np.argmax(nnz >= 3))
    ref = set(np.argsort(-np.abs(coefs[:, step]), kind="stable")[:3].tolist())
    got = select_lasso(contribution_gram(w, x @ x.T, c), 3, n_samples=z.shape[0])
    assert set(torch.nonzero(got).flatten().tolist()) == ref


def test_greedy_finds_the_best_subset_on_a_planted_problem():
    w, x, c, k = problem(3, channels=6)
    w[:, 2 * k : 5 * k] *= 0.01  # channels 2, 3, 4 barely contribute
    g = contribution_gram(w, x @ x.T, c)
    best = min(
        itertools.combinations(range(c), 3),
        key=lambda t: float(g[list(t)][:, list(t)].sum()),  # error of removing set t
    )
    assert torch.nonzero(~select_greedy(g, 3)).flatten().tolist() == list(best) == [2, 3, 4]


def test_refit_never_worse_than_the_same_mask_without_refit():
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(4, 6, 3, 3, generator=gen)
    xs = torch.randn(8, 6, 5, 5, generator=gen)
    cols = F.unfold(xs, 3, padding=1).permute(1, 0, 2).reshape(54, -1).double()
    new_w, mask = regression_prune(w, cols @ cols.T, 0.5, method="greedy")
    assert int((~mask).reshape(4, 6, 9)[0].all(1).sum()) == 3  # 3 of 6 input channels gone
    y = F.conv2d(xs, w, padding=1)
    err_refit = (F.conv2d(xs, new_w, padding=1) - y).pow(2).sum()
    err_mask = (F.conv2d(xs, w * mask, padding=1) - y).pow(2).sum()
    assert err_refit <= err_mask + 1e-4
