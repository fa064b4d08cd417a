"""The calibrate -> solve kit against closed forms and a slow column-by-column solver."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch.quantize.calibration import (
    AbsMeanAccumulator,
    HessianAccumulator,
    InputNormAccumulator,
    Sweep,
    damped_inverse,
    damped_inverse_upper,
    neutralize_dead_inputs,
    solve_columns,
)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_observers_over_any_batching_equal_the_closed_forms(seed, cuts, dtype):
    x = torch.randn(sum(cuts), 6, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    hess, norms, means = HessianAccumulator(6, dtype), InputNormAccumulator(6), AbsMeanAccumulator()
    for part in x.split(cuts):
        for obs in (hess, norms, means):
            obs.add_batch(part.reshape(1, -1, 6))  # any leading shape
    x64 = x.double()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert hess.count == len(x)
    torch.testing.assert_close(
        hess.hessian().double(), 2 * x64.T @ x64 / len(x), rtol=tol, atol=tol
    )
    torch.testing.assert_close(hess.gram().double(), x64.T @ x64, rtol=tol, atol=tol)
    torch.testing.assert_close(norms.norms().double(), x64.norm(dim=0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(means.mean().double(), x64.abs().mean(0), rtol=1e-5, atol=1e-6)


def _spd(n: int, seed: int) -> torch.Tensor:
    a = torch.randn(3 * n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return 2 * a.T @ a / (3 * n)


@pytest.mark.parametrize("percdamp", [0.0, 0.01, 0.5])
def test_damped_inverse_is_the_inverse_of_the_damped_matrix(percdamp):
    h = _spd(8, 0)
    h[3, :], h[:, 3] = 0.0, 0.0  # a dead input
    fixed = h.clone()
    fixed[3, 3] = 1.0
    damped = fixed + percdamp * torch.diag(fixed).mean() * torch.eye(8, dtype=h.dtype)
    torch.testing.assert_close(damped_inverse(h, percdamp), torch.linalg.inv(damped))
    u = damped_inverse_upper(h, percdamp)
    assert torch.equal(u, u.triu())
    torch.testing.assert_close(u.T @ u, torch.linalg.inv(damped))
    assert h[3, 3] == 0.0  # the input is not modified


def test_damping_grows_tenfold_until_the_factorisation_succeeds():
    h = torch.diag(torch.tensor([1.0, -0.5], dtype=torch.float64))  # mean diag 0.25
    # 0.0025, 0.025, 0.25 fail (the -0.5 stays negative); 2.5 succeeds on the 4th try
    expected = torch.linalg.inv(h + 2.5 * torch.eye(2, dtype=h.dtype))
    torch.testing.assert_close(damped_inverse(h, 0.01), expected)
    with pytest.raises(torch.linalg.LinAlgError):
        damped_inverse(torch.diag(torch.tensor([1.0, -1e6], dtype=torch.float64)), 0.01)


def test_dead_inputs_are_neutralised_on_copies():
    w, h = torch.ones(2, 3), torch.diag(torch.tensor([2.0, 0.0, 1.0]))
    w2, h2 = neutralize_dead_inputs(w, h)
    assert w2[:, 1].tolist() == [0.0, 0.0] and torch.diag(h2).tolist() == [2.0, 1.0, 1.0]
    assert w[0, 1] == 1.0 and h[1, 1] == 0.0


def _slow_solve(w, h, rule_on_column):
    """Optimal Brain Compression one column at a time: explicit inverse, Gauss elimination of
    each visited column, no Cholesky and no lazy blocks."""
    w, hinv = w.clone(), torch.linalg.inv(h)
    out = torch.zeros_like(w)
    for i in range(w.shape[1]):
        out[:, i] = rule_on_column(w[:, i])
        err = (w[:, i] - out[:, i]) / hinv[i, i]
        w[:, i:] -= err[:, None] * hinv[i, i:][None, :]
        hinv = hinv - torch.outer(hinv[:, i], hinv[i, :]) / hinv[i, i]
    return out


@pytest.mark.parametrize("block_size", [1, 3, 4, 16])
def test_column_sweep_equals_the_slow_solver_for_every_block_size(block_size):
    h = _spd(10, 1) + 0.01 * torch.eye(10, dtype=torch.float64)
    w = torch.randn(4, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    got = solve_columns(w.clone(), u, block_size, lambda s, i: (s.block[:, i] * 4).round() / 4)
    torch.testing.assert_close(got, _slow_solve(w, h, lambda c: (c * 4).round() / 4))


def test_ahead_sees_the_pending_updates():
    h = _spd(8, 3) + 0.01 * torch.eye(8, dtype=torch.float64)
    w = torch.randn(3, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    seen: dict[int, torch.Tensor] = {}

    def recorder(block_size: int):
        def rule(sweep: Sweep, i: int) -> torch.Tensor:
            if sweep.start + i == 2:  # the next 5 columns cross a block edge at 4
                seen[block_size] = sweep.ahead(i, 5).clone()
            return sweep.block[:, i].round()

        return rule

    solve_columns(w.clone(), u, 1, recorder(1))  # blocks of one column: nothing pending
    solve_columns(w.clone(), u, 4, recorder(4))
    torch.testing.assert_close(seen[4], seen[1])
