"""What the encoder is given: a weight described by its codebook, or by its kept values.

:class:`CodebookWeight` (k-means weight sharing, optionally pruned) and :class:`SparseWeight`
(pruned, no sharing) say which positions are kept and what they hold; the codecs of
:mod:`slimtorch.encode.codecs` turn them into byte streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slimtorch.errors import ConfigError


@dataclass(frozen=True)
class CodebookWeight:
    """A weight whose kept entries are ``codebook[indices]`` (k-means weight sharing).

    Attributes:
        shape: the weight's shape.
        codebook: ``[K]`` floating-point centroids (stored in their own dtype).
        indices: ``[kept]`` integer indices into ``codebook``, one per kept position in
            row-major (flattened) order.
        mask: bool tensor of ``shape``; True = kept. None with ``positions`` None = dense.
        positions: alternative to ``mask``: ``[kept]`` increasing flat positions.
        index_bits: relative-gap bits for sparse weights (default: 5 for 2-D, 8 for conv).

    Example:
        >>> cw = CodebookWeight((2,), torch.tensor([1.0]), torch.tensor([0]), positions=[1])
        >>> cw.flat_positions().tolist(), cw.is_sparse
        ([1], True)
    """

    shape: tuple[int, ...]
    codebook: Tensor
    indices: Tensor
    mask: Tensor | None = None
    positions: Any = None
    index_bits: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.mask is not None and self.positions is not None:
            raise ConfigError("CodebookWeight: give mask or positions, not both")
        if not self.codebook.is_floating_point() or self.codebook.ndim != 1:
            raise ConfigError("CodebookWeight.codebook must be a 1-D floating-point tensor")
        if self.codebook.numel() == 0:
            raise ConfigError("CodebookWeight.codebook is empty")
        if self.mask is not None and tuple(self.mask.shape) != self.shape:
            raise ConfigError(
                f"CodebookWeight.mask has shape {list(self.mask.shape)}, "
                f"expected {list(self.shape)}"
            )

    @property
    def is_sparse(self) -> bool:
        """True when only some positions are stored (a mask or positions was given)."""
        return self.mask is not None or self.positions is not None

    def flat_positions(self) -> np.ndarray:
        """The kept positions as increasing flat int64 indices."""
        if self.mask is not None:
            return np.flatnonzero(self.mask.detach().cpu().numpy().reshape(-1))
        if self.positions is not None:
            return np.asarray(self.positions, dtype=np.int64).reshape(-1)
        return np.arange(math.prod(self.shape), dtype=np.int64)


def from_quantized(
    weight: Tensor, codebook: Tensor, mask: Tensor | None = None, index_bits: int | None = None
) -> CodebookWeight:
    """Describe a quantized weight by its codebook: each kept value must equal a centroid.

    Args:
        weight: the quantized (and possibly pruned) weight.
        codebook: ``[K]`` centroids; ``codebook.to(weight.dtype)`` must contain every kept value.
        mask: kept positions (bool, weight's shape); None = every position.
        index_bits: relative-gap bits (default by the weight's rank).

    Returns:
        The :class:`CodebookWeight` that rebuilds ``weight`` exactly.

    Raises:
        ConfigError: a kept value is not a centroid.

    Example:
        >>> from_quantized(torch.tensor([0.5, -1.0, 0.5]), torch.tensor([-1.0, 0.5])).indices
        tensor([1, 0, 1])
    """
    flat = weight.detach().reshape(-1)
    kept = flat if mask is None else flat[mask.reshape(-1).bool()]
    centroids = codebook.detach().to(weight.dtype)
    match = kept.unsqueeze(1) == centroids.unsqueeze(0)  # [kept, K]
    if kept.numel() and not bool(match.any(dim=1).all()):
        raise ConfigError("from_quantized: some kept weight values are not in the codebook")
    indices = match.to(torch.uint8).argmax(dim=1)  # first matching centroid
    return CodebookWeight(tuple(weight.shape), codebook.detach(), indices, mask, None, index_bits)


@dataclass(frozen=True)
class SparseWeight:
    """A pruned weight stored as its kept values plus relative gaps (no weight sharing).

    Attributes:
        shape: the weight's shape.
        values: ``[kept]`` values at the kept positions, row-major order.
        mask: bool tensor of ``shape`` (True = kept); or ``positions`` instead.
        positions: ``[kept]`` increasing flat positions.
        index_bits: relative-gap bits (default: 5 for 2-D, 8 for conv).
    """

    shape: tuple[int, ...]
    values: Tensor
    mask: Tensor | None = None
    positions: Any = None
    index_bits: int | None = None

    def flat_positions(self) -> np.ndarray:
        """The kept positions as increasing flat int64 indices."""
        if self.mask is not None:
            return np.flatnonzero(self.mask.detach().cpu().numpy().reshape(-1))
        return np.asarray(self.positions, dtype=np.int64).reshape(-1)
