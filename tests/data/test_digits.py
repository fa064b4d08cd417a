"""Built-in digits: sizes, disjoint seeded splits, stratification, scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sklearn_digits

from slimtorch.data import load_digits, split_indices

DIGITS_COUNT = 1797
DIGITS_MAX = 16.0


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


@pytest.fixture(scope="module")
def source():
    raw = sklearn_digits()
    return raw.images, raw.target


def test_sizes_shapes_and_dtypes(digits) -> None:
    sizes = [len(digits.train), len(digits.val), len(digits.test)]
    assert sum(sizes) == DIGITS_COUNT
    # 15% of each class, rounded per class: within one sample per class of the global share
    for size in sizes[1:]:
        assert abs(size - 0.15 * DIGITS_COUNT) <= 10
    assert digits.num_classes == 10
    assert digits.input_shape == (1, 8, 8)
    assert digits.name == "digits"
    assert digits.class_names == tuple(str(i) for i in range(10))
    x, y = digits.train[0]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8)
    assert y.dtype == torch.int64 and y.ndim == 0


def test_values_in_unit_interval(digits, gather) -> None:
    x, _ = gather(digits)
    assert x.min() == 0.0 and x.max() == 1.0


def test_splits_partition_the_source(digits, source, gather, sorted_rows) -> None:
    images, target = source
    x, y = gather(digits)
    expected = sorted_rows(images / DIGITS_MAX, target)
    np.testing.assert_allclose(sorted_rows(x, y), expected, atol=1e-7)


def test_indices_disjoint_and_cover(source) -> None:
    _, target = source
    train, val, test = split_indices(target, seed=0, val_fraction=0.15, test_fraction=0.15)
    together = np.concatenate([train, val, test])
    assert len(together) == DIGITS_COUNT
    np.testing.assert_array_equal(np.sort(together), np.arange(DIGITS_COUNT))


def test_same_seed_same_split_other_seed_differs(digits) -> None:
    again = load_digits(seed=0)
    other = load_digits(seed=1)
    for a, b in zip(digits.train.tensors, again.train.tensors, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(digits.val.tensors[0], again.val.tensors[0])
    assert torch.equal(digits.test.tensors[1], again.test.tensors[1])
    assert digits.val.tensors[0].shape == other.val.tensors[0].shape
    assert not torch.equal(digits.val.tensors[0], other.val.tensors[0])


def test_stratified(digits, source) -> None:
    _, target = source
    class_counts = np.bincount(target, minlength=10)
    for dataset, fraction in ((digits.val, 0.15), (digits.test, 0.15), (digits.train, 0.70)):
        counts = np.bincount(dataset.tensors[1].numpy(), minlength=10)
        assert np.all(np.abs(counts - fraction * class_counts) <= 1.0)


def test_custom_fractions() -> None:
    splits = load_digits(seed=3, val_fraction=0.1, test_fraction=0.2)
    assert len(splits.train) + len(splits.val) + len(splits.test) == DIGITS_COUNT
    assert abs(len(splits.val) - 0.1 * DIGITS_COUNT) <= 10
    assert abs(len(splits.test) - 0.2 * DIGITS_COUNT) <= 10
