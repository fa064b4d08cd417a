"""Deep Compression's relative index coding of sparse positions (Han, Mao & Dally 2016, Sec. 2).

Nonzero positions of a flattened tensor are stored as gaps in a fixed number of bits: an
entry's gap is the number of zeros skipped since the previous entry (the first counts from
position 0), so a gap fits in ``index_bits`` bits when at most ``2**index_bits - 1`` zeros are
skipped. A longer run gets **filler entries**: each filler skips the largest gap and then
occupies one (zero) position itself. The paper's Figure 2 with 3 bits: a run of 8 zeros
needs one filler. Fillers are entries of the value stream too (their value is zero), so the
decoder can tell them apart from real entries by their value (see :mod:`container`).

Example:
    >>> import numpy as np
    >>> gaps, filler = relative_gaps(np.array([1, 4, 15]), index_bits=3)
    >>> gaps.tolist(), filler.tolist()
    ([1, 2, 7, 2], [False, False, True, False])
    >>> positions_from_gaps(gaps).tolist()
    [1, 4, 12, 15]
"""

from __future__ import annotations

import numpy as np

from slimtorch.errors import ConfigError

# Han, Mao & Dally, "Deep Compression", ICLR 2016, Sec. 2: relative index bits per entry.
FC_INDEX_BITS = 5
CONV_INDEX_BITS = 8
MAX_INDEX_BITS = 16


def default_index_bits(shape: tuple[int, ...]) -> int:
    """The paper's gap width for a weight of this shape: 8 bits for conv (>2-D), else 5.

    Example:
        >>> default_index_bits((300, 64)), default_index_bits((16, 6, 5, 5))
        (5, 8)
    """
    return CONV_INDEX_BITS if len(shape) > 2 else FC_INDEX_BITS


def _check_bits(index_bits: int) -> None:
    if not isinstance(index_bits, int) or not 1 <= index_bits <= MAX_INDEX_BITS:
        raise ConfigError(f"index_bits must be an int in [1, {MAX_INDEX_BITS}], got {index_bits!r}")


def relative_gaps(positions: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Gap symbols (with fillers) for strictly increasing flat ``positions``.

    Args:
        positions: ``[nnz]`` strictly increasing non-negative integers.
        index_bits: bits per gap; gaps reach ``2**index_bits - 1``.

    Returns:
        ``(gaps, filler)``: ``[entries]`` int64 gaps in ``[0, 2**index_bits)`` and a bool mask
        of the filler entries (``entries = nnz + fillers``).

    Raises:
        ConfigError: positions not strictly increasing or negative; bad ``index_bits``.

    Example:
        >>> g, f = relative_gaps(np.array([0, 40]), index_bits=4)
        >>> g.tolist(), f.tolist()
        ([0, 15, 15, 7], [False, True, True, False])
    """
    _check_bits(index_bits)
    positions = np.asarray(positions, dtype=np.int64).reshape(-1)
    skipped = np.diff(positions, prepend=-1) - 1  # zeros before each entry
    if positions.size and (positions[0] < 0 or skipped.min() < 0):
        raise ConfigError("positions must be non-negative and strictly increasing")
    span = 1 << index_bits  # one filler skips span - 1 zeros and occupies one more position
    fillers = skipped // span
    reps = fillers + 1
    entries = int(reps.sum())
    gaps = np.full(entries, span - 1, dtype=np.int64)
    last = np.cumsum(reps) - 1  # each real entry comes after its fillers
    gaps[last] = skipped % span
    filler = np.ones(entries, dtype=bool)
    filler[last] = False
    return gaps, filler


def positions_from_gaps(gaps: np.ndarray) -> np.ndarray:
    """Flat positions of every entry (fillers included) from its gap symbols.

    Args:
        gaps: ``[entries]`` non-negative gaps.

    Returns:
        ``[entries]`` int64 positions: ``cumsum(gaps + 1) - 1``.

    Example:
        >>> positions_from_gaps(np.array([0, 0, 3])).tolist()
        [0, 1, 5]
    """
    return np.cumsum(np.asarray(gaps, dtype=np.int64) + 1) - 1


def relative_gaps_ref(positions: list[int], index_bits: int) -> tuple[list[int], list[bool]]:
    """Reference: walk the positions, emitting a filler whenever the gap overflows."""
    largest = 2**index_bits - 1
    gaps: list[int] = []
    filler: list[bool] = []
    previous = -1
    for p in positions:
        skipped = p - previous - 1
        while skipped > largest:
            gaps.append(largest)
            filler.append(True)
            skipped -= largest + 1
        gaps.append(skipped)
        filler.append(False)
        previous = p
    return gaps, filler
