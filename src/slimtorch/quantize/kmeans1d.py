"""Exact 1-D k-means (Lloyd's algorithm) on sorted values, one codebook or one per row.

In one dimension every cluster is an interval of the sorted values, so an iteration is a
binary search for the ``k - 1`` midpoints between neighbouring centroids plus ``k`` range sums
from prefix sums (float64), i.e. ``O(k log n)`` instead of ``O(n k)``. Iterations stop when no
boundary moves, which is the fixed point of the ordinary Lloyd algorithm (same initialization,
same result). :func:`kmeans_1d_rows` runs many independent codebooks at once (the LLM path: one
per output row or group); :func:`kmeans_1d` is the one-codebook case (Deep Compression's weight
sharing). A row that has converged stays where it is while the others go on (its update is
then the identity), so every row ends at its own fixed point.

Example:
    >>> import torch
    >>> centroids, idx = kmeans_1d(torch.tensor([0.0, 0.1, 1.0, 1.1]), k=2)
    >>> [round(c, 4) for c in centroids.tolist()], idx.tolist()
    ([0.05, 1.05], [0, 0, 1, 1])
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from slimtorch.errors import ConfigError

KMeansInit = Literal["linear", "density", "random"]
KMEANS_INITS: tuple[str, ...] = ("linear", "density", "random")
DEFAULT_MAX_ITER = 300  # an iteration costs O(k log n); Lloyd in 1-D converges well before
SUM_BLOCK = 4096  # values per block of the float64 partial sums of long rows
FULL_PREFIX_MAX = 1 << 22  # up to this many values per row, a full float64 prefix sum


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class _RangeSums:
    """Sums of ``rows[r, a:b]`` (sorted rows) in float64: a full prefix sum for short rows,
    per-block partial sums (plus the partial block before each end) for long ones."""

    def __init__(self, rows: np.ndarray) -> None:
        r, n = rows.shape
        block = 1 if n <= FULL_PREFIX_MAX else SUM_BLOCK
        n_blocks = n // block
        blocks = rows[:, : n_blocks * block].reshape(r, n_blocks, block)
        self.rows, self.block = rows, block
        sums = np.cumsum(blocks.sum(axis=2, dtype=np.float64), axis=1)
        self.prefix = np.concatenate([np.zeros((r, 1)), sums], axis=1)

    def prefix_sums(self, ends: np.ndarray) -> np.ndarray:
        """``sum(rows[r, :e])`` for every ``e`` in ``ends[r]``."""
        full = ends // self.block
        out = _take(self.prefix, full)
        if self.block > 1:  # add the partial block before each end (k + 1 short sums a row)
            for (r, i), e in np.ndenumerate(ends):
                start = full[r, i] * self.block
                out[r, i] += self.rows[r, start:e].sum(dtype=np.float64)
        return out


def _linspace(lo: np.ndarray, hi: np.ndarray, k: int) -> np.ndarray:
    """``numpy.linspace(lo[r], hi[r], k)`` for every row, bit for bit (float64 ``[r, k]``)."""
    steps = np.arange(k, dtype=np.float64)[None, :]
    delta = (hi - lo)[:, None]
    if k == 1:
        return steps * delta + lo[:, None]
    step = delta / (k - 1)
    y = np.where(step == 0, steps / (k - 1) * delta, steps * step) + lo[:, None]
    y[:, -1] = hi
    return y


def _initial_centroids(rows: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    """Sorted float64 start centroids ``[r, k]`` of sorted ``rows``."""
    n = rows.shape[1]
    if init == "linear":  # Deep Compression Sec. 3.2: evenly spaced over [min, max]
        return _linspace(rows[:, 0].astype(np.float64), rows[:, -1].astype(np.float64), k)
    if init == "density":  # evenly spaced in the CDF: the (i + 0.5) / k quantiles
        positions = ((np.arange(k) + 0.5) / k * n).astype(np.int64)
        return rows[:, np.minimum(positions, n - 1)].astype(np.float64)
    if init == "random":  # Forgy: k distinct observations (repeats only when n < k)
        rng = np.random.default_rng(seed)
        picks = [rng.choice(n, size=k, replace=n < k) for _ in range(len(rows))]
        return np.sort(np.stack([v[p] for v, p in zip(rows, picks, strict=True)]), axis=1).astype(
            np.float64
        )
    raise ConfigError(f"init: expected one of {', '.join(KMEANS_INITS)}, got {init!r}")


def _boundaries(centroids: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Midpoints between neighbouring centroids, rounded down to ``dtype``.

    Rounding down keeps ``v <= boundary`` exact for values ``v`` of ``dtype``.
    """
    mid = (centroids[:, :-1] + centroids[:, 1:]) / 2  # float64 [r, k-1]
    low = mid.astype(dtype)
    return np.where(low.astype(np.float64) > mid, np.nextafter(low, dtype.type(-np.inf)), low)


def _search(rows: np.ndarray, bounds: np.ndarray, right: bool) -> np.ndarray:
    """Row-wise ``searchsorted`` (numpy's is 1-D only, and faster for one row)."""
    if len(rows) == 1:
        return np.searchsorted(rows[0], bounds[0], side="right" if right else "left")[None]
    values = torch.from_numpy(np.ascontiguousarray(bounds))
    found = torch.searchsorted(torch.from_numpy(rows), values, right=right)
    return found.numpy()


def _take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[r, idx[r, j]]`` (``take_along_axis`` on axis 1 without its overhead)."""
    return a.ravel()[idx + (np.arange(len(a)) * a.shape[1])[:, None]]


def _lloyd_sorted(
    rows: np.ndarray, centroids: np.ndarray, max_iter: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Lloyd iterations on sorted rows; returns (centroids float64, boundaries, iterations)."""
    r, n = rows.shape
    sums, ends, iterations = _RangeSums(rows), None, 0
    first, last = np.zeros((r, 1), dtype=np.int64), np.full((r, 1), n, dtype=np.int64)
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        bounds = _boundaries(centroids, rows.dtype)
        new_ends = _search(rows, bounds, right=True)  # cluster i: (b_i-1, b_i]
        if ends is not None and (new_ends == ends).all():
            break
        ends = new_ends
        edges = np.concatenate([first, ends, last], axis=1)  # [r, k+1]
        counts, prefix = edges[:, 1:] - edges[:, :-1], sums.prefix_sums(edges)
        means = (prefix[:, 1:] - prefix[:, :-1]) / np.maximum(counts, 1)
        # a mean lies within its cluster's range; clipping absorbs prefix-sum rounding so
        # centroids stay ordered even for clusters of tiny values next to large ones
        lowest = _take(rows, np.minimum(edges[:, :-1], n - 1))
        highest = _take(rows, np.maximum(edges[:, 1:] - 1, 0))
        means = np.clip(means, lowest, highest)
        centroids = np.where(counts > 0, means, centroids)  # an empty cluster keeps its place
    return centroids, _boundaries(centroids, rows.dtype), iterations


def _check(k: int, max_iter: int, values: Tensor) -> None:
    if not _is_int(k) or k < 1:
        raise ConfigError(f"k: expected an integer >= 1, got {k!r}")
    if not _is_int(max_iter) or max_iter < 1:
        raise ConfigError(f"max_iter: expected an integer >= 1, got {max_iter!r}")
    if values.numel() == 0 or not values.is_floating_point():
        raise ConfigError("values: expected a non-empty floating-point tensor")


def kmeans_1d_rows(
    rows: Tensor,
    k: int,
    init: KMeansInit = "linear",
    max_iter: int = DEFAULT_MAX_ITER,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Cluster the scalars of every row of ``rows`` into ``k`` centroids of its own.

    Ties go to the lower centroid (as ``argmin`` of distances would); an empty cluster keeps
    its centroid. The input is not modified.

    Args:
        rows: Float tensor ``[r, n]`` (``n >= 1``).
        k: Centroids per row (>= 1).
        init: ``"linear"`` (evenly spaced between min and max, Deep Compression's best),
            ``"density"`` (quantiles) or ``"random"`` (Forgy: random values of the row).
        max_iter: Lloyd iterations at most.
        seed: Seed of the ``"random"`` initialization.

    Returns:
        ``(centroids, assignments)``: centroids ascending ``[r, k]`` in ``rows``' float dtype
        (float32 for half types), assignments ``int64 [r, n]``.

    Example:
        >>> c, a = kmeans_1d_rows(torch.tensor([[1.0, 1.2, 9.0, 9.2], [0.0, 0.0, 1.0, 5.0]]), 2)
        >>> c
        tensor([[1.1000, 9.1000],
                [0.3333, 5.0000]])
        >>> a.tolist()
        [[0, 0, 1, 1], [0, 0, 0, 1]]
    """
    _check(k, max_iter, rows)
    if rows.dim() != 2:
        raise ConfigError(f"rows: expected a 2-D tensor, got shape {list(rows.shape)}")
    dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
    x = rows.detach().to(device="cpu", dtype=dtype).contiguous()
    if not bool(torch.isfinite(x).all()):
        raise ConfigError("values: contains NaN or infinity")
    ordered = np.sort(x.numpy(), axis=1)
    start = _initial_centroids(ordered, k, init, seed)
    centroids, bounds, _ = _lloyd_sorted(ordered, start, max_iter)
    bounds_t = torch.from_numpy(np.ascontiguousarray(bounds))
    assignments = torch.searchsorted(bounds_t, x, right=False)  # [r, n]
    return torch.from_numpy(centroids).to(dtype), assignments


def kmeans_1d(
    values: Tensor,
    k: int,
    init: KMeansInit = "linear",
    max_iter: int = DEFAULT_MAX_ITER,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Cluster the scalars in ``values`` into ``k`` centroids (one :func:`kmeans_1d_rows` row).

    Args:
        values: Float tensor of any shape (flattened); must hold at least one value.
        k: Number of centroids (>= 1).
        init: ``"linear"``, ``"density"`` or ``"random"`` (see :func:`kmeans_1d_rows`).
        max_iter: Lloyd iterations at most.
        seed: Seed of the ``"random"`` initialization.

    Returns:
        ``(centroids, assignments)``: centroids ascending ``[k]`` in ``values``' float dtype
        (float32 for half types), assignments ``int64`` indices shaped like ``values``.

    Example:
        >>> c, a = kmeans_1d(torch.tensor([1.0, 2.0, 9.0, 10.0, 11.0]), k=2, init="density")
        >>> c.tolist(), a.tolist()
        ([1.5, 10.0], [0, 0, 1, 1, 1])
    """
    _check(k, max_iter, values)
    centroids, assignments = kmeans_1d_rows(values.reshape(1, -1), k, init, max_iter, seed)
    return centroids[0], assignments.view(values.shape)
