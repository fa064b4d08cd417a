"""load_data dispatch on its source string, and the examples in the module docstrings."""

from __future__ import annotations

import doctest
import gzip
import struct

import numpy as np
import pytest
from PIL import Image

import slimtorch.data
from slimtorch.data import arrays, folder, idx, load_data, splits, vision
from slimtorch.errors import DataError


def test_digits() -> None:
    data = load_data("digits", seed=2)
    assert data.name == "digits" and data.input_shape == (1, 8, 8)
    assert len(data.train) + len(data.val) + len(data.test) == 1797


def test_npz_path(tmp_path) -> None:
    path = tmp_path / "user.npz"
    np.savez(path, x=np.zeros((30, 5), np.float32), y=np.arange(30) % 3)
    data = load_data(str(path))
    assert data.name == str(path) and data.input_shape == (5,) and data.num_classes == 3


def test_folder_path(tmp_path) -> None:
    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.new("L", (3, 2), color=i).save(tmp_path / name / f"{i}.png")
    data = load_data(str(tmp_path))
    assert data.class_names == ("cats", "dogs") and data.input_shape == (1, 2, 3)


def test_idx_pair(tmp_path) -> None:
    images = np.zeros((20, 3, 3), np.uint8)
    labels = (np.arange(20) % 2).astype(np.uint8)
    (tmp_path / "im.gz").write_bytes(
        gzip.compress(struct.pack(">BBBB3I", 0, 0, 0x08, 3, 20, 3, 3) + images.tobytes())
    )
    (tmp_path / "lb").write_bytes(struct.pack(">BBBBI", 0, 0, 0x08, 1, 20) + labels.tobytes())
    data = load_data(f"idx:{tmp_path / 'im.gz'},{tmp_path / 'lb'}")
    assert data.input_shape == (1, 3, 3) and data.num_classes == 2
    assert len(data.train) + len(data.val) + len(data.test) == 20


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        ("idx:only-one-path", "expected 'idx:IMAGES,LABELS'"),
        ("idx:a,b,c", "expected 'idx:IMAGES,LABELS'"),
        ("no/such/place.npz", r"no/such/place\.npz: no such file or folder"),
    ],
)
def test_bad_sources(source, pattern) -> None:
    with pytest.raises(DataError, match=pattern):
        load_data(source)


@pytest.mark.parametrize("module", [slimtorch.data, splits, arrays, idx, folder, vision])
def test_docstring_examples_run(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
