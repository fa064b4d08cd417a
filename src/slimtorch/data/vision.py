"""Vision data sets: scikit-learn's digits built in, ``.npz`` files, and :func:`load_data`.

``.npz`` convention: arrays ``x`` and ``y``. ``x`` is ``[N, D]`` (flat features), ``[N, H, W]``
(one channel), ``[N, C, H, W]`` or ``[N, H, W, C]`` with C in 1, 3 or 4 (channels-first when
axis 1 could be channels); uint8 is scaled by 1/255, floats are kept. ``y`` is ``[N]`` integer
class indices (whole-number floats are accepted).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from slimtorch.data.arrays import as_labels, one_line, scale_pixels, to_channels_first
from slimtorch.data.folder import load_image_folder
from slimtorch.data.idx import load_idx
from slimtorch.data.splits import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    Splits,
    build_splits,
)
from slimtorch.errors import ConfigError, DataError

DIGITS_NAME = "digits"
DIGITS_MAX_PIXEL = 16.0  # sklearn's digits hold counts 0..16 per 4x4 block
NPZ_KEYS = ("x", "y")
IDX_PREFIX = "idx:"
SOURCES = (
    "'digits' (or 'digits:SIZE', resized), an .npz file, a folder of class subfolders, "
    "or 'idx:IMAGES,LABELS'"
)


MAX_DIGITS_SIZE = 512  # 1,797 images of 512x512 float32 are 1.9 GB; larger is a mistake


def load_digits(
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    image_size: int | None = None,
) -> Splits:
    """scikit-learn's 1,797 handwritten 8x8 digits, split seeded and stratified.

    Args:
        seed: split seed.
        val_fraction: validation share of each class.
        test_fraction: test share of each class.
        image_size: resize the 8x8 images to this square size (bilinear, as the conv nets of
            the pruning/quantization literature take 28x28 or 32x32 input); None keeps 8x8.
            The same ``load_data("digits:32")``.

    Returns:
        :class:`Splits` with x float32 ``[1, S, S]`` in [0, 1] and 10 classes.

    Example:
        >>> s = load_digits()
        >>> len(s.train) + len(s.val) + len(s.test), s.input_shape, s.num_classes
        (1797, (1, 8, 8), 10)
    """
    # deferred: sklearn.datasets adds 0.64 s to importing slimtorch (python -X importtime);
    # only the digits data set needs it
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x = (digits.images / DIGITS_MAX_PIXEL).astype(np.float32)[:, None]  # [N, 1, 8, 8]
    y = digits.target.astype(np.int64)  # [N]
    name = DIGITS_NAME
    if image_size is not None and image_size != x.shape[-1]:
        if not 1 <= image_size <= MAX_DIGITS_SIZE:
            raise ConfigError(
                f"digits: image_size must be an integer in 1..{MAX_DIGITS_SIZE}, got {image_size}"
            )
        big = torch.nn.functional.interpolate(
            torch.from_numpy(x),
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
        )  # [N, 1, S, S]
        x = big.clamp_(0.0, 1.0).numpy()
        name = f"{DIGITS_NAME}:{image_size}"
    return build_splits(x, y, name, seed, val_fraction, test_fraction)


def read_npz(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read arrays ``x`` and ``y`` from an ``.npz`` file (pickles refused).

    Args:
        path: the file, as written by ``numpy.savez(path, x=..., y=...)``.

    Returns:
        ``(x, y)`` exactly as stored.

    Example:
        >>> x, y = read_npz("my_data.npz")  # doctest: +SKIP
    """
    source = str(path)
    if not Path(path).is_file():
        raise DataError(f"{source}: no such file; expected an .npz file with arrays 'x' and 'y'")
    try:
        with open(path, "rb") as file:  # we own the handle: numpy leaks it on a bad zip
            archive = np.load(file, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataError(f"{source}: a single .npy array; expected an .npz with 'x', 'y'")
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataError(
                    f"{source}: missing array(s) {', '.join(missing)} (found: "
                    f"{', '.join(archive.files) or 'none'}); expected arrays 'x' and 'y'"
                )
            return archive["x"], archive["y"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(
            f"{source}: cannot read as .npz ({one_line(err)}); expected a file written by "
            "numpy.savez with arrays 'x' and 'y'"
        ) from err


def load_npz(
    path: str | os.PathLike[str],
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> Splits:
    """Load an ``.npz`` file of inputs ``x`` and labels ``y`` (module docstring: layouts).

    Args:
        path: the ``.npz`` file.
        seed: split seed.
        val_fraction: validation share of each class.
        test_fraction: test share of each class.

    Returns:
        :class:`Splits` named ``path``; x is float32 ``[C, H, W]`` or ``[D]``.

    Example:
        >>> x, y = np.zeros((40, 28, 28), np.uint8), np.arange(40) % 4
        >>> np.savez("toy.npz", x=x, y=y)  # doctest: +SKIP
        >>> load_npz("toy.npz").input_shape  # doctest: +SKIP
        (1, 28, 28)
    """
    source = str(path)
    x, y = read_npz(path)
    inputs = to_channels_first(scale_pixels(x, source), source)
    labels = as_labels(y, len(inputs), source)
    return build_splits(inputs, labels, source, seed, val_fraction, test_fraction)


def _parse_idx_source(source: str) -> tuple[str, str]:
    parts = source[len(IDX_PREFIX) :].split(",")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise DataError(f"{source}: expected 'idx:IMAGES,LABELS' (two paths, one comma)")
    return parts[0].strip(), parts[1].strip()


def load_data(source: str, seed: int = 0) -> Splits:
    """Load a data set named by one string, with default split fractions.

    Args:
        source: ``"digits"``; a path to an ``.npz`` file; a path to a folder of class
            subfolders (grayscale, one common size); or ``"idx:IMAGES,LABELS"``.
        seed: split seed.

    Returns:
        The :class:`Splits` of that source.

    Example:
        >>> load_data("digits").name
        'digits'
    """
    if source == DIGITS_NAME:
        return load_digits(seed=seed)
    if source.startswith(DIGITS_NAME + ":"):
        size = source.partition(":")[2]
        if not size.isdigit() or not 1 <= int(size) <= MAX_DIGITS_SIZE:
            raise DataError(f"{source}: expected digits:SIZE with SIZE in 1..{MAX_DIGITS_SIZE}")
        return load_digits(seed=seed, image_size=int(size))
    if source.startswith(IDX_PREFIX):
        images, labels = _parse_idx_source(source)
        return load_idx(images, labels, seed=seed)
    path = Path(source)
    if path.is_dir():
        return load_image_folder(path, seed=seed)
    if path.is_file():
        return load_npz(path, seed=seed)
    raise DataError(f"{source}: no such file or folder; expected {SOURCES}")
