"""IDX files written byte by byte per the spec: round trips (raw, gzip) and every error."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from slimtorch.data import load_idx, parse_idx, read_idx
from slimtorch.errors import DataError

# Type codes from the IDX spec (http://yann.lecun.com/exdb/mnist/), written out independently.
SPEC_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array: np.ndarray, code: int | None = None) -> bytes:
    """Reference IDX writer: magic 00 00 <code> <ndim>, big-endian uint32 dims, big-endian data."""
    code = SPEC_CODES[array.dtype] if code is None else code
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return header + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(tmp_path, name: str, data: bytes, compress: bool = False) -> str:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if compress else data)
    return str(path)


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype and got.dtype.isnative
    assert got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()  # bitwise, so NaNs compare equal


def test_golden_bytes_big_endian() -> None:
    data = bytes([0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE])
    assert_same(parse_idx(data), np.array([[258, -2]], dtype=np.int16))
    data = bytes([0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3F, 0xC0, 0, 0])
    assert_same(parse_idx(data), np.array([1.5], dtype=np.float32))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from(list(SPEC_CODES)),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    ),
    compress=st.booleans(),
)
def test_write_read_round_trip(tmp_path, array, compress) -> None:
    path = write(tmp_path, "any.idx", idx_bytes(array), compress)
    assert_same(read_idx(path), array)


def test_read_result_is_writable(tmp_path) -> None:
    array = read_idx(write(tmp_path, "w.idx", idx_bytes(np.arange(6, dtype=np.int32))))
    array[0] = 7
    assert array[0] == 7


def _mnist_like(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 7, 6), dtype=np.uint8), (np.arange(n) % 4).astype(np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_round_trip(tmp_path, assert_same_samples, compress) -> None:
    images, labels = _mnist_like()
    images_path = write(tmp_path, "images", idx_bytes(images), compress)
    labels_path = write(tmp_path, "labels", idx_bytes(labels), compress)
    splits = load_idx(images_path, labels_path, seed=0)
    assert splits.input_shape == (1, 7, 6)
    assert splits.num_classes == 4
    assert splits.name == images_path
    assert_same_samples(splits, images[:, None], labels.astype(np.int64))


FULL = idx_bytes(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
BAD_BYTES = {
    "empty": (b"", "expected at least a 4-byte IDX header"),
    "bad magic": (b"\x12\x34" + FULL[2:], "magic starts with 0x12 0x34"),
    "unknown type code": (FULL[:2] + b"\x0a" + FULL[3:], "type code 0x0a"),
    "truncated header": (FULL[:9], "truncated header of 9 bytes; expected 16"),
    "truncated data": (FULL[:-1], "truncated: 63 bytes; expected 64"),
    "trailing bytes": (FULL + b"\x00", "trailing bytes: 65 bytes; expected 64"),
}


@pytest.mark.parametrize("case", BAD_BYTES)
@pytest.mark.parametrize("compress", [False, True])
def test_malformed_idx_raises_data_error_naming_file(tmp_path, case, compress) -> None:
    data, pattern = BAD_BYTES[case]
    path = write(tmp_path, "broken-idx3-ubyte", data, compress)
    with pytest.raises(DataError, match=pattern) as info:
        read_idx(path)
    assert "broken-idx3-ubyte" in str(info.value) and "\n" not in str(info.value)


def test_truncated_gzip_stream(tmp_path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(FULL)[:-6])
    with pytest.raises(DataError, match=r"cut\.gz: corrupt gzip stream"):
        read_idx(path)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match=r"nothing-here: cannot read"):
        read_idx(tmp_path / "nothing-here")


def test_label_count_mismatch(tmp_path) -> None:
    images, labels = _mnist_like()
    images_path = write(tmp_path, "imgs", idx_bytes(images))
    labels_path = write(tmp_path, "short-labels", idx_bytes(labels[:-3]))
    with pytest.raises(DataError, match=r"short-labels: 37 labels for 40 inputs"):
        load_idx(images_path, labels_path)


def test_non_integer_labels(tmp_path) -> None:
    images, labels = _mnist_like()
    images_path = write(tmp_path, "imgs", idx_bytes(images))
    labels_path = write(tmp_path, "float-labels", idx_bytes(labels.astype(np.float32) + 0.25))
    with pytest.raises(DataError, match=r"float-labels: labels of dtype float32 are not all"):
        load_idx(images_path, labels_path)


def test_labels_not_one_dimensional(tmp_path) -> None:
    images, labels = _mnist_like()
    images_path = write(tmp_path, "imgs", idx_bytes(images))
    labels_path = write(tmp_path, "labels-2d", idx_bytes(labels[:, None]))
    with pytest.raises(DataError, match=r"labels-2d: labels shaped \(40, 1\)"):
        load_idx(images_path, labels_path)


def test_signed_integer_images_rejected(tmp_path) -> None:
    images, labels = _mnist_like()
    images_path = write(tmp_path, "int16-images", idx_bytes(images.astype(np.int16)))
    labels_path = write(tmp_path, "labels", idx_bytes(labels))
    with pytest.raises(DataError, match=r"int16-images: inputs have dtype int16"):
        load_idx(images_path, labels_path)
