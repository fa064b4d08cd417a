"""Observers against closed forms, numpy and slow reference implementations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from slimtorch.errors import ConfigError, DataError
from slimtorch.quantize.observers import (
    MOVING_AVERAGE_CONSTANT,
    KLObserver,
    MSEObserver,
    kl_threshold,
    make_observer,
)
from slimtorch.quantize.primitives import QuantSpec, fake_quantize, qparams_from_range

ACT = QuantSpec(8, symmetric=False, signed=False)


def _batches(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 50, generator=g) * (i + 1) for i in range(n)]


def test_minmax_is_the_global_extreme():
    obs = make_observer("minmax")
    xs = _batches()
    for x in xs:
        obs.update(x)
    allx = torch.cat([x.flatten() for x in xs])
    assert obs.range(ACT) == (float(allx.min()), float(allx.max()))


def test_moving_average_closed_form():
    obs = make_observer("moving_average")
    a, b = torch.tensor([-1.0, 2.0]), torch.tensor([-3.0, 6.0])
    obs.update(a)
    obs.update(b)
    c = MOVING_AVERAGE_CONSTANT
    lo, hi = obs.range(ACT)
    assert lo == pytest.approx(-1 + c * (-3 + 1))
    assert hi == pytest.approx(2 + c * (6 - 2))


def test_percentile_matches_numpy():
    obs = make_observer("percentile", percentile=99.0)
    xs = _batches()
    for x in xs:
        obs.update(x)
    allx = torch.cat([x.flatten() for x in xs]).numpy()
    lo, hi = obs.range(ACT)
    assert lo == pytest.approx(float(np.percentile(allx, 1.0)), rel=1e-6)
    assert hi == pytest.approx(float(np.percentile(allx, 99.0)), rel=1e-6)


def test_mse_range_beats_minmax_and_every_clipping_on_a_grid():
    x = torch.cat([torch.randn(5000), torch.tensor([40.0])])  # one outlier
    obs = MSEObserver()
    obs.update(x)
    lo, hi = obs.range(ACT)

    def err(lo_, hi_):
        qp = qparams_from_range(torch.tensor(lo_), torch.tensor(hi_), ACT)
        return float(torch.mean((fake_quantize(x, ACT, qp) - x) ** 2))

    best = err(lo, hi)
    assert hi < 40.0
    assert best <= err(float(x.min()), float(x.max()))
    for frac in np.linspace(0.1, 1.0, 37):
        assert best <= err(float(x.min()) * frac, float(x.max()) * frac) * (1 + 1e-6)


def _kl_reference(hist, levels):
    """TensorRT's loop written out bin by bin."""
    best_i, best = None, math.inf
    for i in range(levels, len(hist) + 1):
        p = [float(v) for v in hist[:i]]
        p[-1] += float(sum(hist[i:]))
        q = [0.0] * i
        edges = [int(e) for e in np.linspace(0, i, levels + 1)]
        for a, b in itertools.pairwise(edges):
            chunk = hist[a:b]
            nz = sum(1 for v in chunk if v > 0)
            for j in range(a, b):
                q[j] = float(sum(chunk)) / nz if hist[j] > 0 else 0.0
        ps, qs = sum(p), sum(q)
        kl = 0.0
        for pj, qj in zip(p, q, strict=True):
            if pj > 0:
                kl = math.inf if qj == 0 else kl + pj / ps * math.log((pj / ps) / (qj / qs))
        if kl < best:
            best_i, best = i, kl
    return best_i


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_threshold_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    hist = np.histogram(np.abs(rng.standard_t(3, 20000)), bins=96)[0]
    assert kl_threshold(hist, 16) == _kl_reference(hist, 16)


def test_kl_clips_long_tails_and_keeps_relu_outputs_nonnegative():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(60000, generator=g))
    x[:5] = 30.0
    obs = KLObserver()
    obs.update(x)
    lo, hi = obs.range(ACT)
    assert lo == 0.0
    assert 2.0 < hi < 30.0


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="observer: expected one of"):
        make_observer("median")
    with pytest.raises(ConfigError, match="percentile"):
        make_observer("percentile", percentile=20)
    with pytest.raises(DataError, match="no calibration data"):
        make_observer("minmax").range(ACT)
    with pytest.raises(DataError, match="NaN"):
        make_observer("minmax").update(torch.tensor([float("nan")]))
