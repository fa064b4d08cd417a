"""Activation observers: statistics over calibration batches, then a clipping range.

Each observer has ``update(x)`` (called from a forward hook or a fake-quant module on every
calibration batch) and ``range(spec) -> (r_min, r_max)``; ``qparams_from_range`` turns the range
into a scale and zero point. Activations are observed per tensor.

- ``minmax``: the extreme values seen.
- ``moving_average``: exponential moving average of each batch's min and max
  (``MOVING_AVERAGE_CONSTANT`` as in torch.ao's ``MovingAverageMinMaxObserver``).
- ``percentile``: the ``p``-th and ``(100 - p)``-th percentiles of the values seen.
- ``mse``: the clipping range (a fraction of min/max) whose fake quantization has the smallest
  mean squared error on the values seen.
- ``kl``: TensorRT's entropy calibration (Migacz, "8-bit Inference with TensorRT", GTC 2017):
  a ``KL_BINS``-bin histogram of ``|x|``; the threshold minimizing KL(P || Q) between the
  clipped distribution and its quantized version.

The distribution-based observers keep a seeded random subsample of each batch (at most
``SAMPLES_PER_BATCH`` values), so memory stays bounded and results are repeatable.

Example:
    >>> import torch
    >>> obs = make_observer("minmax")
    >>> obs.update(torch.tensor([-1.0, 2.0])); obs.update(torch.tensor([3.0]))
    >>> obs.range(QuantSpec(bits=8))
    (-1.0, 3.0)
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from slimtorch.errors import ConfigError, DataError
from slimtorch.quantize.primitives import QuantSpec, fake_quantize, qparams_from_range

MOVING_AVERAGE_CONSTANT = 0.01  # torch.ao.quantization.MovingAverageMinMaxObserver default
SAMPLES_PER_BATCH = 2**16
DEFAULT_PERCENTILE = 99.99
MSE_CANDIDATES = 100  # clipping fractions tried, evenly spaced in (MSE_MIN_FRACTION, 1]
MSE_MIN_FRACTION = 0.05
MSE_MAX_SAMPLES = 2**16
KL_BINS = 2048  # TensorRT's histogram size
OBSERVERS = ("minmax", "moving_average", "percentile", "mse", "kl")


class Observer(Protocol):
    """Collects statistics from ``update`` and answers ``range``."""

    def update(self, x: Tensor) -> None:
        """Record one batch."""

    def range(self, spec: QuantSpec) -> tuple[float, float]:
        """The clipping range ``(r_min, r_max)`` for ``spec``."""


def _finite(x: Tensor) -> Tensor:
    x = x.detach().float().reshape(-1)
    if x.numel() == 0:
        raise DataError("calibration batch is empty")
    if not bool(torch.isfinite(x).all()):
        raise DataError("calibration batch contains NaN or infinite activations")
    return x


class MinMaxObserver:
    """The smallest and largest values seen."""

    def __init__(self) -> None:
        self.low, self.high = math.inf, -math.inf

    def update(self, x: Tensor) -> None:
        """Record one batch."""
        x = _finite(x)
        self.low, self.high = min(self.low, float(x.min())), max(self.high, float(x.max()))

    def range(self, spec: QuantSpec) -> tuple[float, float]:
        """``(min, max)`` seen."""
        _check_seen(self.high >= self.low)
        return self.low, self.high


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Exponential moving average of per-batch min and max (the first batch initializes)."""

    def __init__(self, constant: float = MOVING_AVERAGE_CONSTANT) -> None:
        super().__init__()
        if not 0 < constant <= 1:
            raise ConfigError(f"moving average constant: expected (0, 1], got {constant}")
        self.constant = constant

    def update(self, x: Tensor) -> None:
        """Record one batch."""
        x = _finite(x)
        lo, hi = float(x.min()), float(x.max())
        if self.high < self.low:
            self.low, self.high = lo, hi
        else:
            self.low += self.constant * (lo - self.low)
            self.high += self.constant * (hi - self.high)


class _SampleObserver:
    """Keeps a seeded subsample of every batch for distribution-based ranges."""

    def __init__(self, seed: int = 0) -> None:
        self.samples: list[Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def update(self, x: Tensor) -> None:
        """Record one batch (a random subset when it is large)."""
        x = _finite(x)
        if x.numel() > SAMPLES_PER_BATCH:
            idx = torch.randperm(x.numel(), generator=self.generator)[:SAMPLES_PER_BATCH]
            x = x[idx]
        self.samples.append(x.clone())

    def values(self) -> Tensor:
        _check_seen(bool(self.samples))
        return torch.cat(self.samples)


class PercentileObserver(_SampleObserver):
    """The ``(100 - p)``-th and ``p``-th percentiles of the values seen."""

    def __init__(self, percentile: float = DEFAULT_PERCENTILE, seed: int = 0) -> None:
        super().__init__(seed)
        if not 50 < percentile <= 100:
            raise ConfigError(f"percentile: expected a value in (50, 100], got {percentile}")
        self.percentile = percentile

    def range(self, spec: QuantSpec) -> tuple[float, float]:
        """Percentile range of the samples."""
        v = self.values().numpy()
        lo, hi = np.percentile(v, [100 - self.percentile, self.percentile])
        return float(lo), float(hi)


class MSEObserver(_SampleObserver):
    """The fraction of the min/max range whose fake quantization has the least MSE."""

    def range(self, spec: QuantSpec) -> tuple[float, float]:
        """Best clipped range among ``MSE_CANDIDATES`` fractions of ``(min, max)``."""
        v = self.values()
        if v.numel() > MSE_MAX_SAMPLES:
            v = v[torch.randperm(v.numel(), generator=self.generator)[:MSE_MAX_SAMPLES]]
        lo, hi = float(v.min()), float(v.max())
        best, best_err = (lo, hi), math.inf
        for frac in torch.linspace(MSE_MIN_FRACTION, 1.0, MSE_CANDIDATES).tolist():
            qp = qparams_from_range(torch.tensor(lo * frac), torch.tensor(hi * frac), spec)
            err = float(torch.mean((fake_quantize(v, spec, qp) - v) ** 2))
            if err < best_err:
                best, best_err = (lo * frac, hi * frac), err
        return best


def kl_threshold(hist: np.ndarray, levels: int) -> int:
    """TensorRT entropy calibration: the bin count ``i`` minimizing KL(P || Q).

    ``P`` is ``hist[:i]`` with the outliers ``hist[i:]`` added to its last bin; ``Q`` spreads
    ``hist[:i]`` over ``levels`` equal chunks (each chunk's mass shared by its nonzero bins).

    Args:
        hist: histogram of ``|x|`` from 0 to its max.
        levels: quantization levels available for that range.

    Returns:
        The number of bins to keep; the threshold is ``i * bin_width``.

    Example:
        >>> h = np.r_[np.full(128, 100.0), np.zeros(1920)]
        >>> kl_threshold(h, 128)
        128
    """
    hist = hist.astype(np.float64)
    best_i, best_kl = len(hist), math.inf
    for i in range(levels, len(hist) + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        kept = hist[:i]
        edges = np.linspace(0, i, levels + 1).astype(np.int64)
        mass = np.add.reduceat(kept, edges[:-1])
        nonzero = np.add.reduceat((kept > 0).astype(np.float64), edges[:-1])
        per_bin = np.divide(mass, nonzero, out=np.zeros_like(mass), where=nonzero > 0)
        q = np.repeat(per_bin, np.diff(edges)) * (kept > 0)
        kl = _kl(p, q)
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p, q = p / p.sum(), q / max(q.sum(), 1e-30)
    mask = p > 0
    if bool((q[mask] == 0).any()):
        return math.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


class KLObserver(_SampleObserver):
    """Entropy (KL-divergence) calibration over a ``KL_BINS``-bin histogram of ``|x|``."""

    def range(self, spec: QuantSpec) -> tuple[float, float]:
        """Symmetric threshold; ``(0, t)`` when no value is negative."""
        v = self.values()
        amax = float(v.abs().max())
        if amax == 0:
            return 0.0, 0.0
        nonneg = float(v.min()) >= 0
        levels = 2**spec.bits if nonneg and not spec.signed else 2 ** (spec.bits - 1)
        levels = min(levels, KL_BINS)
        hist = torch.histc(v.abs(), bins=KL_BINS, min=0.0, max=amax).numpy()
        t = kl_threshold(hist, levels) * amax / KL_BINS
        return (0.0 if nonneg else -t), t


def _check_seen(seen: bool) -> None:
    if not seen:
        raise DataError("observer saw no calibration data; pass at least one batch")


def make_observer(name: str, percentile: float = DEFAULT_PERCENTILE, seed: int = 0) -> Observer:
    """Build an observer by name (one of ``OBSERVERS``).

    Example:
        >>> type(make_observer("kl")).__name__
        'KLObserver'
    """
    if name == "minmax":
        return MinMaxObserver()
    if name == "moving_average":
        return MovingAverageMinMaxObserver()
    if name == "percentile":
        return PercentileObserver(percentile, seed)
    if name == "mse":
        return MSEObserver(seed)
    if name == "kl":
        return KLObserver(seed)
    raise ConfigError(f"observer: expected one of {', '.join(OBSERVERS)}, got {name!r}")
