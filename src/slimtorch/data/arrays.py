"""Checks and conversions shared by every user data format.

Pixels: ``uint8`` is scaled by 1/255 to [0, 1]; floating point is kept as float32 (it must be
finite); any other dtype is an error rather than a guess. Labels: a 1-D array of non-negative
integers (integer dtype, or floats that are all whole numbers), one per sample.

Layouts accepted by :func:`to_channels_first` (the ``.npz`` and IDX convention):

- ``[N, D]``: flat feature vectors, kept as they are.
- ``[N, H, W]``: single-channel images, become ``[N, 1, H, W]``.
- ``[N, C, H, W]`` when axis 1 has 1, 3 or 4 entries (channels-first wins ties).
- ``[N, H, W, C]`` when only the last axis has 1, 3 or 4 entries; transposed to channels-first.
"""

from __future__ import annotations

import numpy as np

from slimtorch.errors import DataError

UINT8_MAX = 255
CHANNEL_COUNTS = (1, 3, 4)  # gray, RGB, RGBA
MAX_CLASSES = 100_000  # well above ImageNet-21k's 21,841; larger labels are taken as a mistake
LAYOUTS = "[N,D], [N,H,W], [N,C,H,W] or [N,H,W,C] with C in 1, 3 or 4"


def one_line(err: BaseException) -> str:
    """An exception's message folded onto one line."""
    return " ".join(str(err).split()) or type(err).__name__


def scale_pixels(x: np.ndarray, source: str) -> np.ndarray:
    """Float32 copy of ``x`` with uint8 scaled to [0, 1]; DataError for other dtypes.

    Args:
        x: pixel or feature array of any shape.
        source: file or folder named in error messages.

    Returns:
        float32 array of the same shape.

    Example:
        >>> scale_pixels(np.array([0, 255], np.uint8), "a.npz")
        array([0., 1.], dtype=float32)
    """
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(UINT8_MAX)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(
            f"{source}: inputs have dtype {x.dtype}; expected uint8 (scaled by 1/255) "
            "or floating point (kept as is)"
        )
    scaled = x.astype(np.float32)
    if not np.isfinite(scaled).all():
        raise DataError(f"{source}: inputs contain NaN or infinite values; expected finite numbers")
    return scaled


def to_channels_first(x: np.ndarray, source: str) -> np.ndarray:
    """Bring an ``[N, ...]`` array into ``[N, D]`` or ``[N, C, H, W]`` (see module docstring).

    Args:
        x: array with 2, 3 or 4 axes and at least one sample.
        source: file named in error messages.

    Returns:
        ``x`` itself, ``x[:, None]`` or ``x`` transposed from channels-last.

    Example:
        >>> to_channels_first(np.zeros((5, 8, 8, 3)), "a.npz").shape
        (5, 3, 8, 8)
    """
    if x.ndim not in (2, 3, 4) or 0 in x.shape[1:]:
        raise DataError(f"{source}: inputs shaped {x.shape}; expected {LAYOUTS}")
    if x.shape[0] == 0:
        raise DataError(f"{source}: inputs hold 0 samples; expected at least one")
    if x.ndim == 2:
        return x  # [N, D]
    if x.ndim == 3:
        return x[:, None]  # [N, H, W] -> [N, 1, H, W]
    if x.shape[1] in CHANNEL_COUNTS:
        return x  # [N, C, H, W]
    if x.shape[3] in CHANNEL_COUNTS:
        return x.transpose(0, 3, 1, 2)  # [N, H, W, C] -> [N, C, H, W]
    raise DataError(f"{source}: inputs shaped {x.shape} have no channel axis; expected {LAYOUTS}")


def as_labels(y: np.ndarray, num_samples: int, source: str) -> np.ndarray:
    """Check labels and return them as int64.

    Args:
        y: class indices, one per sample.
        num_samples: number of inputs the labels must match.
        source: file named in error messages.

    Returns:
        int64 array ``[num_samples]`` of non-negative class indices.

    Example:
        >>> as_labels(np.array([1.0, 0.0]), 2, "a.npz")
        array([1, 0])
    """
    if y.ndim != 1:
        raise DataError(f"{source}: labels shaped {y.shape}; expected a 1-D array [N]")
    if len(y) != num_samples:
        raise DataError(
            f"{source}: {len(y)} labels for {num_samples} inputs; expected one label per input"
        )
    if not _integral(y):
        raise DataError(
            f"{source}: labels of dtype {y.dtype} are not all integers; "
            "expected integer class indices"
        )
    labels = y.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(f"{source}: labels include {labels.min()}; expected class indices >= 0")
    if len(labels) and labels.max() >= MAX_CLASSES:
        raise DataError(
            f"{source}: labels include {labels.max()}; expected class indices below {MAX_CLASSES}"
        )
    return labels


def _integral(y: np.ndarray) -> bool:
    if np.issubdtype(y.dtype, np.integer):
        return True
    if not np.issubdtype(y.dtype, np.floating):
        return False
    return bool(np.isfinite(y).all() and (y == np.rint(y)).all())
