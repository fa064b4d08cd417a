"""User .npz files: layouts, scaling, round trip and every malformed-file error."""

from __future__ import annotations

import numpy as np
import pytest

from slimtorch.data import load_npz
from slimtorch.errors import DataError

N = 40


def _labels() -> np.ndarray:
    return np.arange(N) % 4


def _pixels(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)


def _save(tmp_path, name: str = "data.npz", **arrays) -> str:
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


# (stored shape, how to bring the stored array to the documented channels-first layout)
LAYOUTS = {
    "flat [N,D]": ((N, 12), lambda a: a, (12,)),
    "gray [N,H,W]": ((N, 6, 5), lambda a: a[:, None], (1, 6, 5)),
    "channels-first [N,C,H,W]": ((N, 3, 6, 5), lambda a: a, (3, 6, 5)),
    "channels-last [N,H,W,C]": ((N, 6, 5, 3), lambda a: a.transpose(0, 3, 1, 2), (3, 6, 5)),
    "channels-last gray [N,H,W,1]": ((N, 6, 5, 1), lambda a: a[..., 0][:, None], (1, 6, 5)),
    "tie goes to channels-first": ((N, 3, 5, 3), lambda a: a, (3, 5, 3)),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_uint8_round_trip(tmp_path, assert_same_samples, layout) -> None:
    shape, to_chw, input_shape = LAYOUTS[layout]
    x = _pixels(shape)
    splits = load_npz(_save(tmp_path, x=x, y=_labels()))
    assert splits.input_shape == input_shape
    assert splits.num_classes == 4
    assert splits.name == str(tmp_path / "data.npz")
    assert_same_samples(splits, to_chw(x), _labels())


def test_float_kept_and_float_labels_accepted(tmp_path, gather, sorted_rows) -> None:
    x = np.random.default_rng(1).normal(size=(N, 3, 4, 4)) * 10.0
    y = _labels().astype(np.float64)
    splits = load_npz(_save(tmp_path, x=x, y=y))
    got_x, got_y = gather(splits)
    expected = sorted_rows(x.astype(np.float32), y.astype(np.int64))
    np.testing.assert_array_equal(sorted_rows(got_x, got_y), expected)


def test_seeded(tmp_path, gather) -> None:
    path = _save(tmp_path, x=_pixels((N, 4, 4)), y=_labels())
    a, b, c = load_npz(path, seed=5), load_npz(path, seed=5), load_npz(path, seed=6)
    np.testing.assert_array_equal(a.val.tensors[0].numpy(), b.val.tensors[0].numpy())
    assert not np.array_equal(a.val.tensors[0].numpy(), c.val.tensors[0].numpy())


BAD = {
    "missing y": ({"x": np.zeros((N, 4, 4), np.uint8)}, r"missing array\(s\) y"),
    "missing x": ({"y": np.zeros(N, np.int64)}, r"missing array\(s\) x"),
    "x 1-D": ({"x": np.zeros(N, np.uint8), "y": _labels()}, r"shaped \(40,\); expected"),
    "x 5-D": ({"x": np.zeros((N, 1, 2, 2, 2), np.uint8), "y": _labels()}, "expected"),
    "no channel axis": ({"x": np.zeros((N, 5, 5, 5), np.uint8), "y": _labels()}, "channel"),
    "zero-size sample": ({"x": np.zeros((N, 0), np.uint8), "y": _labels()}, "expected"),
    "no samples": ({"x": np.zeros((0, 4), np.uint8), "y": np.zeros(0, np.int64)}, "0 samples"),
    "y 2-D": ({"x": np.zeros((N, 4), np.uint8), "y": _labels()[:, None]}, "1-D"),
    "count mismatch": (
        {"x": np.zeros((N, 4), np.uint8), "y": _labels()[:-1]},
        "39 labels for 40 inputs",
    ),
    "non-integer labels": (
        {"x": np.zeros((N, 4), np.uint8), "y": _labels() + 0.5},
        "not all integers",
    ),
    "string labels": (
        {"x": np.zeros((N, 4), np.uint8), "y": np.array(["a"] * N)},
        "not all integers",
    ),
    "negative labels": ({"x": np.zeros((N, 4), np.uint8), "y": _labels() - 1}, ">= 0"),
    "huge label": ({"x": np.zeros((N, 4), np.uint8), "y": _labels() * 10**6}, "below 100000"),
    "int16 pixels": ({"x": np.zeros((N, 4), np.int16), "y": _labels()}, "dtype int16"),
    "NaN pixels": ({"x": np.full((N, 4), np.nan), "y": _labels()}, "NaN"),
    "object array": (
        {"x": np.array([[1], [2, 3]] * (N // 2), dtype=object), "y": _labels()},
        "cannot read as .npz",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_malformed_npz_raises_data_error_naming_file(tmp_path, case) -> None:
    arrays, pattern = BAD[case]
    path = _save(tmp_path, name="bad_input.npz", **arrays)
    with pytest.raises(DataError, match=pattern) as info:
        load_npz(path)
    message = str(info.value)
    assert "bad_input.npz" in message and "\n" not in message


def test_not_an_npz_file(tmp_path) -> None:
    path = tmp_path / "notes.npz"
    path.write_text("hello, not a zip archive\n")
    with pytest.raises(DataError, match=r"notes\.npz: cannot read as \.npz"):
        load_npz(path)


def test_truncated_npz(tmp_path) -> None:
    path = tmp_path / "cut.npz"
    np.savez(path, x=_pixels((N, 4, 4)), y=_labels())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"cut\.npz"):
        load_npz(path)


def test_npy_instead_of_npz(tmp_path) -> None:
    path = tmp_path / "single.npz"
    with path.open("wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match=r"single\.npz: a single \.npy array"):
        load_npz(path)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match=r"absent\.npz: no such file"):
        load_npz(tmp_path / "absent.npz")
