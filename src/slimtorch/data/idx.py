"""MNIST-style IDX files: the parser and a loader for an images file plus a labels file.

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number
``0x00 0x00 <type code> <number of dims>``, then one big-endian uint32 size per dimension,
then the values in C order, big-endian. Files may be gzip-compressed; compression is detected
from the gzip magic bytes, never from the file name.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from slimtorch.data.arrays import as_labels, one_line, scale_pixels, to_channels_first
from slimtorch.data.splits import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    Splits,
    build_splits,
)
from slimtorch.errors import DataError

MAGIC_BYTES = 4  # 0x00 0x00 <type code> <ndim>
DIM_BYTES = 4  # each size is a big-endian uint32
GZIP_MAGIC = b"\x1f\x8b"
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _parse_header(data: bytes, source: str) -> tuple[np.dtype, tuple[int, ...], int]:
    if len(data) < MAGIC_BYTES:
        raise DataError(f"{source}: {len(data)} bytes; expected at least a 4-byte IDX header")
    zero0, zero1, code, ndim = data[:MAGIC_BYTES]
    if zero0 != 0 or zero1 != 0:
        raise DataError(
            f"{source}: magic starts with 0x{zero0:02x} 0x{zero1:02x}; "
            "expected an IDX file starting with 0x00 0x00"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DataError(f"{source}: IDX type code 0x{code:02x}; expected one of {known}")
    header_bytes = MAGIC_BYTES + DIM_BYTES * ndim
    if len(data) < header_bytes:
        raise DataError(
            f"{source}: truncated header of {len(data)} bytes; "
            f"expected {header_bytes} bytes for {ndim} dimensions"
        )
    shape = struct.unpack(f">{ndim}I", data[MAGIC_BYTES:header_bytes])
    return IDX_DTYPES[code], shape, header_bytes


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file.

    Args:
        data: the whole file content.
        source: name used in error messages.

    Returns:
        A writable array in native byte order with the header's shape and dtype
        (uint8, int8, int16, int32, float32 or float64).

    Example:
        >>> parse_idx(bytes([0, 0, 0x08, 1, 0, 0, 0, 2, 7, 9]))
        array([7, 9], dtype=uint8)
    """
    dtype, shape, offset = _parse_header(data, source)
    expected = offset + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{source}: {problem}: {len(data)} bytes; expected {expected} for an IDX "
            f"array of shape {shape} and dtype {dtype.newbyteorder('=').name}"
        )
    values = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset)
    return values.reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed.

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        The array stored in the file (see :func:`parse_idx`).

    Example:
        >>> images = read_idx("train-images-idx3-ubyte.gz")  # doctest: +SKIP
        >>> images.shape, images.dtype  # doctest: +SKIP
        ((60000, 28, 28), dtype('uint8'))
    """
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"{source}: cannot read ({one_line(err)}); expected an IDX file") from err
    if data[: len(GZIP_MAGIC)] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(
                f"{source}: corrupt gzip stream ({one_line(err)}); expected a gzip-compressed "
                "IDX file"
            ) from err
    return parse_idx(data, source)


def load_idx(
    images_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> Splits:
    """Load an IDX images file and an IDX labels file, split seeded and stratified.

    Images follow the ``.npz`` layout rules (usually ``[N, H, W]``, which becomes
    ``[N, 1, H, W]``); uint8 pixels are scaled by 1/255. Labels must be a 1-D integer array
    with one entry per image.

    Args:
        images_path: IDX file of inputs, raw or gzip.
        labels_path: IDX file of labels, raw or gzip.
        seed: split seed.
        val_fraction: validation share of each class.
        test_fraction: test share of each class.

    Returns:
        The :class:`Splits`, named ``images_path``.

    Example:
        >>> s = load_idx("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")  # doctest: +SKIP
        >>> s.input_shape, s.num_classes  # doctest: +SKIP
        ((1, 28, 28), 10)
    """
    images_source = str(images_path)
    x = to_channels_first(scale_pixels(read_idx(images_path), images_source), images_source)
    y = as_labels(read_idx(labels_path), len(x), str(labels_path))
    return build_splits(x, y, images_source, seed, val_fraction, test_fraction)
