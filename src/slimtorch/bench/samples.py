"""Query sample libraries, the seeded sample order and Poisson arrival times.

A query sample library (QSL, as LoadGen calls it) holds the samples a run draws from and turns
a list of sample indices into the one input the system under test takes: a stacked tensor for
a model, a list for an LLM generator. The order in which samples are drawn is a pure function
of the seed, as are the Server scenario's arrival times.

Example:
    >>> order = SampleOrder(4, seed=0)
    >>> sorted(order.take(4)) == [0, 1, 2, 3]    # every sample once per pass
    True
    >>> poisson_arrivals(100.0, 3, seed=0).shape
    (3,)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from slimtorch.errors import ConfigError


class QuerySampleLibrary(Protocol):
    """Samples a run can draw from."""

    def __len__(self) -> int:
        """Number of samples."""
        ...

    def load(self, indices: Sequence[int]) -> Any:
        """The system-under-test input holding these samples, in this order."""
        ...


class TensorSamples:
    """Samples stacked along dim 0 of one tensor; ``load`` returns ``x[indices]``.

    Args:
        x: ``[N, ...]`` samples (e.g. ``[N, C, H, W]`` images).

    Example:
        >>> TensorSamples(torch.arange(10).view(5, 2)).load([4, 0]).tolist()
        [[8, 9], [0, 1]]
    """

    def __init__(self, x: torch.Tensor) -> None:
        if x.dim() < 1 or len(x) == 0:
            raise ConfigError(f"TensorSamples: expected [N, ...] with N >= 1, got {tuple(x.shape)}")
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        """``x[indices]`` as a new tensor."""
        return self.x[torch.as_tensor(np.asarray(indices, dtype=np.int64))]


class ListSamples:
    """Samples of any kind (prompts, token lists); ``load`` returns a list.

    Example:
        >>> ListSamples(["a", "b", "c"]).load([2, 2])
        ['c', 'c']
    """

    def __init__(self, items: Sequence[Any]) -> None:
        if len(items) == 0:
            raise ConfigError("ListSamples: expected at least one sample")
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, indices: Sequence[int]) -> list[Any]:
        """The items at ``indices``."""
        return [self.items[int(i)] for i in indices]


class SampleOrder:
    """An endless seeded stream of sample indices: a fresh permutation per pass over the set.

    Every sample is used equally often (to within one pass), and the same seed gives the same
    stream.

    Args:
        n: number of samples.
        seed: seed of ``numpy.random.default_rng``.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        if n < 1:
            raise ConfigError(f"SampleOrder: need at least one sample, got {n}")
        self.n, self._rng = n, np.random.default_rng(seed)
        self._buf = np.empty(0, dtype=np.int64)

    def take(self, count: int) -> np.ndarray:
        """The next ``count`` indices (int64 array)."""
        while len(self._buf) < count:
            self._buf = np.concatenate([self._buf, self._rng.permutation(self.n)])
        out, self._buf = self._buf[:count], self._buf[count:]
        return out


def unit_exponential_gaps(count: int, seed: int = 0) -> np.ndarray:
    """``count`` independent Exp(1) draws, seeded (the gaps of a rate-1 Poisson process)."""
    if count < 0:
        raise ConfigError(f"count must be >= 0, got {count}")
    return np.random.default_rng(seed).exponential(1.0, size=count)


def poisson_arrivals(rate: float, count: int, seed: int = 0) -> np.ndarray:
    """Arrival times (seconds from 0) of a Poisson process with ``rate`` arrivals per second.

    Gaps are ``Exp(1) / rate`` drawn from the same seeded stream for every rate, so a faster
    rate with the same seed compresses the same schedule (common random numbers): a queue's
    latencies then grow monotonically with the rate, which a peak search relies on.

    Args:
        rate: mean arrivals per second, > 0.
        count: number of arrivals.
        seed: seed of the gaps.

    Returns:
        float64 ``[count]``, increasing; mean gap ``1 / rate``, gap variance ``1 / rate**2``.

    Example:
        >>> t = poisson_arrivals(1000.0, 100_000, seed=1)
        >>> round(float(np.diff(t).mean()) * 1000, 2)
        1.0
    """
    if not (np.isfinite(rate) and rate > 0):
        raise ConfigError(f"target rate: expected a rate > 0 queries/s, got {rate}")
    return np.cumsum(unit_exponential_gaps(count, seed)) / rate
