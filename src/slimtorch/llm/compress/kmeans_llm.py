"""Non-uniform weight quantization: a k-means codebook of ``2**bits`` values per output row
(or per group of input columns), all rows at once.

The solver is ``slimtorch.quantize``'s exact 1-D k-means (:func:`kmeans_1d_rows`, the one Deep
Compression's weight sharing uses): centroids start evenly spaced over [min, max] ("linear"
init), Lloyd's iterations run on sorted values with float64 sums until no boundary moves. A
short last group (``group_size`` not dividing the row) gets a codebook of its own values.

Example:
    >>> import torch
    >>> w = torch.tensor([[0.0, 1.1, 1.9, 3.0]])
    >>> kmeans_quantize(w, GroupKMeansConfig(bits=2, iters=5)).tolist() == w.tolist()
    True
"""

from __future__ import annotations

import torch

from slimtorch.llm.compress.config import GroupKMeansConfig
from slimtorch.quantize.kmeans1d import kmeans_1d_rows


def _snap(rows: torch.Tensor, k: int, iters: int) -> torch.Tensor:
    """Every value of ``rows`` replaced by the nearest centroid of its row's codebook."""
    centroids, assign = kmeans_1d_rows(rows, k, init="linear", max_iter=iters)
    return torch.gather(centroids.to(rows.dtype), 1, assign)


def kmeans_quantize(w: torch.Tensor, config: GroupKMeansConfig) -> torch.Tensor:
    """Replace each weight by its row's (or group's) nearest k-means centroid.

    Args:
        w: weight ``(out, in)``.
        config: codebook bits, grouping and iterations.

    Returns:
        The quantized weight (at most ``2**bits`` distinct values per row or group).
    """
    out_f, in_f = w.shape
    k, gs = 2**config.bits, config.group_size or in_f
    full = in_f - in_f % gs
    parts = []
    if full:
        parts.append(_snap(w[:, :full].reshape(-1, gs), k, config.iters).reshape(out_f, full))
    if full < in_f:
        parts.append(_snap(w[:, full:], k, config.iters))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
