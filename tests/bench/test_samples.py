"""Sample libraries, the seeded order and Poisson arrivals (statistics against closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from slimtorch.bench.samples import ListSamples, SampleOrder, TensorSamples, poisson_arrivals
from slimtorch.errors import ConfigError

N_GAPS = 200_000
Z = 4.0  # four standard errors: a false alarm about once in 16,000 runs (and the seed is fixed)


@pytest.mark.parametrize("rate", [3.0, 500.0])
def test_poisson_gaps_have_exponential_mean_and_variance(rate: float) -> None:
    gaps = np.diff(poisson_arrivals(rate, N_GAPS, seed=123), prepend=0.0)
    mean, var = 1 / rate, 1 / rate**2  # Exp(rate): mean 1/rate, variance 1/rate^2
    assert abs(gaps.mean() - mean) < Z * math.sqrt(var / N_GAPS)
    # the sample variance of Exp has standard error sqrt((mu4 - sigma^4) / n), mu4 = 9 / rate^4
    assert abs(gaps.var(ddof=1) - var) < Z * math.sqrt(8 / N_GAPS) / rate**2
    assert stats.kstest(gaps, "expon", args=(0, mean)).pvalue > 1e-3


def test_poisson_counts_per_window_have_mean_equal_variance() -> None:
    rate, windows = 40.0, 5000
    t = poisson_arrivals(rate, int(rate * windows * 1.1), seed=7)
    counts = np.bincount(t[t < windows].astype(int), minlength=windows)
    # Poisson(rate): mean = variance = rate
    assert abs(counts.mean() - rate) < Z * math.sqrt(rate / windows)
    assert abs(counts.var(ddof=1) / rate - 1) < Z * math.sqrt(2 / (windows - 1))


def test_poisson_same_seed_scales_one_schedule() -> None:
    a, b = poisson_arrivals(100.0, 50, seed=3), poisson_arrivals(200.0, 50, seed=3)
    np.testing.assert_allclose(a, 2 * b)
    assert not np.allclose(a, poisson_arrivals(100.0, 50, seed=4))
    assert np.all(np.diff(a) > 0)


@pytest.mark.parametrize("rate", [0.0, -1.0, math.inf, math.nan])
def test_poisson_rejects_bad_rate(rate: float) -> None:
    with pytest.raises(ConfigError, match="rate"):
        poisson_arrivals(rate, 10)


def test_sample_order_is_seeded_and_balanced() -> None:
    a = SampleOrder(7, seed=1).take(70)
    assert np.array_equal(a, SampleOrder(7, seed=1).take(70))
    assert not np.array_equal(a, SampleOrder(7, seed=2).take(70))
    assert np.bincount(a, minlength=7).tolist() == [10] * 7
    order = SampleOrder(5, seed=0)
    chunks = np.concatenate([order.take(3) for _ in range(5)])
    assert np.array_equal(chunks, SampleOrder(5, seed=0).take(15))  # chunking does not matter


def test_sample_libraries_load_in_order() -> None:
    x = torch.arange(12.0).view(6, 2)
    assert torch.equal(TensorSamples(x).load([5, 0, 5]), x[[5, 0, 5]])
    assert ListSamples(["a", "b"]).load(np.array([1, 0])) == ["b", "a"]
    with pytest.raises(ConfigError):
        TensorSamples(torch.zeros(0, 3))
    with pytest.raises(ConfigError):
        ListSamples([])
