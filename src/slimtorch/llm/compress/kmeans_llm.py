"""Non-uniform weight quantization: a k-means codebook of ``2**bits`` values per output row
(or per group of input columns), Lloyd's algorithm run on all rows at once.

In one dimension the optimal clusters are intervals, so assignment is a sorted search against
the midpoints between sorted centroids; centroids start evenly spaced over [min, max] (the
"linear" init of ``slimtorch.quantize.kmeans.kmeans_1d``, which fits one codebook at a time;
this batched variant fits thousands of small ones, one per row or group, in vectorised passes
and reaches the same fixed point: the tests check it against ``kmeans_1d``).

Example:
    >>> import torch
    >>> w = torch.tensor([[0.0, 1.1, 1.9, 3.0]])
    >>> kmeans_quantize(w, KMeansConfig(bits=2, iters=5)).tolist() == w.tolist()
    True
"""

from __future__ import annotations

import torch

from slimtorch.llm.compress.config import KMeansConfig
from slimtorch.llm.compress.rtn import grouped, ungrouped


def _assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest sorted centroid index of each value (rows independent)."""
    mids = (centroids[:, 1:] + centroids[:, :-1]) / 2
    return torch.searchsorted(mids.contiguous(), x.contiguous())


def kmeans_rows(x: torch.Tensor, k: int, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D k-means on every row of ``x`` independently.

    Args:
        x: ``(rows, n)`` values.
        k: clusters per row.
        iters: Lloyd iterations.

    Returns:
        ``(centroids (rows, k) sorted, assignment (rows, n) int64)``.

    Example:
        >>> c, a = kmeans_rows(torch.tensor([[1.0, 1.2, 9.0, 9.2]]), 2, 10)
        >>> c
        tensor([[1.1000, 9.1000]])
    """
    lo, hi = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    steps = torch.linspace(0, 1, k, dtype=x.dtype)[None, :]
    centroids = lo + (hi - lo) * steps  # "linear" init (Deep Compression, Sec. 3.2)
    assign = _assign(x, centroids)
    for _ in range(iters):
        sums = torch.zeros_like(centroids).scatter_add_(1, assign, x)
        counts = torch.zeros_like(centroids).scatter_add_(1, assign, torch.ones_like(x))
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        centroids = centroids.sort(dim=1).values
        new = _assign(x, centroids)
        if torch.equal(new, assign):
            break
        assign = new
    return centroids, _assign(x, centroids)


def kmeans_quantize(w: torch.Tensor, config: KMeansConfig) -> torch.Tensor:
    """Replace each weight by its row's (or group's) nearest k-means centroid.

    Args:
        w: weight ``(out, in)``.
        config: codebook bits, grouping and iterations.

    Returns:
        The quantized weight (at most ``2**bits`` distinct values per row or group).
    """
    wg = grouped(w, config.group_size)
    flat = wg.reshape(-1, wg.shape[-1])
    centroids, assign = kmeans_rows(flat, 2**config.bits, config.iters)
    return ungrouped(torch.gather(centroids, 1, assign).reshape(wg.shape), w.shape[1])
