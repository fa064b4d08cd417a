"""Shared helpers for the slimtorch.data tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

try:  # an editable install (make install) provides slimtorch; fall back to the source tree
    import slimtorch  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the venv was built
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))


def _gather(splits) -> tuple[np.ndarray, np.ndarray]:
    """All (x, y) of train, val and test concatenated, as numpy arrays."""
    xs, ys = [], []
    for dataset in (splits.train, splits.val, splits.test):
        x, y = dataset.tensors
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _sorted_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rows (flattened x, then y) in lexicographic order: a multiset fingerprint."""
    rows = np.concatenate([x.reshape(len(x), -1).astype(np.float64), y[:, None]], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


@pytest.fixture
def gather() -> Callable:
    return _gather


@pytest.fixture
def sorted_rows() -> Callable:
    return _sorted_rows


@pytest.fixture
def assert_same_samples() -> Callable:
    """Assert that a Splits holds exactly the uint8 source samples (any order), scaled by 1/255."""

    def check(splits, x_uint8: np.ndarray, y: np.ndarray) -> None:
        x, labels = _gather(splits)
        assert x.dtype == np.float32 and labels.dtype == np.int64
        assert x.min() >= 0.0 and x.max() <= 1.0
        pixels = x * 255.0
        np.testing.assert_allclose(pixels, np.rint(pixels), atol=1e-3)
        got = _sorted_rows(np.rint(pixels).astype(np.uint8), labels)
        np.testing.assert_array_equal(got, _sorted_rows(x_uint8, y))

    return check
