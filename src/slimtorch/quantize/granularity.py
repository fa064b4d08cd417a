"""Which values share a scale: ``PerTensor()``, ``PerChannel(axis)``, ``PerGroup(size, axis)``.

The types live in :mod:`slimtorch.core.granularity` (shared with pruning); this module turns
them into block shapes.

Each granularity becomes a *block size* (as in torchao's ``quant_primitives``): the extent of
one block along every dimension. A tensor is viewed as ``(n0, b0, n1, b1, ...)``; statistics
reduce over the ``b`` dims, and scales have shape ``(n0, n1, ...)``, so one code path serves
all three.

``PerGroup(size, ragged=True)`` allows a size that does not divide the axis (the LLM
convention: SmolLM2's 576 columns in groups of 128 give four groups of 128 and one of 64). The
short last group is padded by repeating the axis' last value, which changes no group's minimum
or maximum; :func:`from_blocks` drops the padding again.

Example:
    >>> import torch
    >>> blocks, scale_shape = to_blocks(torch.arange(6.0).reshape(2, 3), PerGroup(2, ragged=True))
    >>> blocks.shape, scale_shape
    (torch.Size([2, 1, 2, 2]), (2, 2))
    >>> grouped(torch.arange(3.0)[None], 2).tolist()
    [[[0.0, 1.0], [2.0, 2.0]]]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from slimtorch.core.granularity import (
    Granularity,
    PerChannel,
    PerGroup,
    PerTensor,
    granularity_from_dict,
    granularity_to_dict,
)
from slimtorch.errors import ConfigError

__all__ = [
    "Granularity",
    "PerChannel",
    "PerGroup",
    "PerTensor",
    "block_size",
    "expand_blocks",
    "from_blocks",
    "granularity_from_dict",
    "granularity_to_dict",
    "grouped",
    "to_blocks",
]


def block_size(shape: tuple[int, ...] | torch.Size, granularity: Granularity) -> tuple[int, ...]:
    """The extent of one quantization block along every dimension.

    Args:
        shape: tensor shape.
        granularity: which values share a scale.

    Returns:
        A tuple as long as ``shape``; ``shape[d] % block[d] == 0`` for every ``d`` unless the
        granularity is a ragged ``PerGroup``.

    Example:
        >>> block_size((4, 6), PerChannel(0)), block_size((4, 6), PerGroup(3))
        ((1, 6), (1, 3))
    """
    shape = tuple(shape)
    if isinstance(granularity, PerTensor):
        return shape
    axis = _axis(granularity.axis, len(shape))
    if isinstance(granularity, PerChannel):
        return tuple(1 if d == axis else n for d, n in enumerate(shape))
    if shape[axis] % granularity.size and not granularity.ragged:
        raise ConfigError(
            f"group size {granularity.size} does not divide dim {axis} "
            f"of size {shape[axis]} (shape {list(shape)})"
        )
    return tuple(granularity.size if d == axis else 1 for d in range(len(shape)))


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ConfigError(f"granularity axis {axis} out of range for a {ndim}-d tensor")
    return axis % ndim


def _blocked_shape(shape: tuple[int, ...], block: tuple[int, ...]) -> tuple[int, ...]:
    """``(n0, b0, n1, b1, ...)`` for viewing a tensor block by block."""
    return tuple(v for n, b in zip(shape, block, strict=True) for v in (n // b, b))


def _pad_edge(x: Tensor, axis: int, multiple: int) -> Tensor:
    """``x`` with its last slice along ``axis`` repeated up to a multiple of ``multiple``."""
    pad = -x.shape[axis] % multiple
    if not pad:
        return x
    last = x.narrow(axis, x.shape[axis] - 1, 1)
    return torch.cat([x, last.expand(*[pad if d == axis else -1 for d in range(x.dim())])], axis)


def _padded(x: Tensor, granularity: Granularity) -> Tensor:
    if isinstance(granularity, PerGroup) and granularity.ragged:
        return _pad_edge(x, _axis(granularity.axis, x.dim()), granularity.size)
    return x


def to_blocks(x: Tensor, spec: Any) -> tuple[Tensor, tuple[int, ...]]:
    """``x`` viewed as ``(n0, b0, n1, b1, ...)`` plus the scale shape ``(n0, n1, ...)``.

    Args:
        x: a tensor (a 0-d one is treated as 1-d).
        spec: a granularity, or anything with a ``granularity`` (a ``QuantSpec``).

    Returns:
        The blocked view (a copy when a ragged group is padded) and the scale shape.
    """
    granularity = getattr(spec, "granularity", spec)
    if x.dim() == 0:
        x = x.reshape(1)
    x = _padded(x, granularity)
    block = block_size(x.shape, granularity)
    scale_shape = tuple(n // b for n, b in zip(x.shape, block, strict=True))
    return x.reshape(_blocked_shape(tuple(x.shape), block)), scale_shape


def from_blocks(blocks: Tensor, shape: tuple[int, ...] | torch.Size) -> Tensor:
    """Inverse of :func:`to_blocks`: back to ``shape``, dropping any ragged padding.

    Example:
        >>> x = torch.arange(5.0)[None]
        >>> torch.equal(from_blocks(to_blocks(x, PerGroup(2, ragged=True))[0], x.shape), x)
        True
    """
    padded = tuple(blocks.shape[i] * blocks.shape[i + 1] for i in range(0, blocks.dim(), 2))
    out = blocks.reshape(padded)
    for d, n in enumerate(tuple(shape) or (1,)):
        if padded[d] != n:
            out = out.narrow(d, 0, n)
    return out.reshape(shape)


def expand_blocks(p: Tensor) -> Tensor:
    """A ``(n0, n1, ...)`` parameter as ``(n0, 1, n1, 1, ...)`` to broadcast over blocks."""
    return p.reshape(tuple(v for n in p.shape for v in (n, 1)))


def grouped(w: Tensor, group_size: int | None) -> Tensor:
    """A 2-D weight ``(out, in)`` as ``(out, n_groups, group_size)`` (ragged groups padded).

    Args:
        w: a 2-D weight.
        group_size: columns per group, or None for the whole row.

    Returns:
        The grouped tensor (a view when no padding is needed).

    Example:
        >>> grouped(torch.zeros(3, 8), 4).shape
        torch.Size([3, 2, 4])
    """
    gs = w.shape[1] if group_size is None else group_size
    return _pad_edge(w, 1, gs).reshape(w.shape[0], -1, gs)


def ungrouped(wg: Tensor, in_features: int) -> Tensor:
    """Back to ``(out, in_features)`` from :func:`grouped`'s layout, padding dropped.

    Example:
        >>> ungrouped(grouped(torch.arange(3.0)[None], 2), 3).tolist()
        [[0.0, 1.0, 2.0]]
    """
    return wg.reshape(wg.shape[0], -1)[:, :in_features]
