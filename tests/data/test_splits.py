"""split_indices, build_splits and make_loaders against closed forms and properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtorch.data import build_splits, make_loaders, split_indices, to_tensor_dataset
from slimtorch.errors import ConfigError, DataError


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    seed=st.integers(0, 2**31),
    val=st.floats(0.0, 0.45),
    test=st.floats(0.0, 0.45),
)
def test_split_is_a_stratified_partition(counts, seed, val, test) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(labels)
    train_idx, val_idx, test_idx = split_indices(labels, seed, val, test)
    together = np.concatenate([train_idx, val_idx, test_idx])
    np.testing.assert_array_equal(np.sort(together), np.arange(len(labels)))
    for idx, fraction in ((val_idx, val), (test_idx, test)):
        per_class = np.bincount(labels[idx], minlength=len(counts))
        assert np.all(np.abs(per_class - fraction * np.array(counts)) <= 0.5 + 1e-9)
    again = split_indices(labels, seed, val, test)
    for a, b in zip((train_idx, val_idx, test_idx), again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_split_closed_form() -> None:
    labels = np.array([0] * 20 + [1] * 40)
    train, val, test = split_indices(labels, seed=0, val_fraction=0.25, test_fraction=0.1)
    assert np.bincount(labels[val]).tolist() == [5, 10]
    assert np.bincount(labels[test]).tolist() == [2, 4]
    assert np.bincount(labels[train]).tolist() == [13, 26]


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (1.0, 0.0), (0.5, 0.5), (0.2, 1.2)])
def test_bad_fractions_raise_config_error(val, test) -> None:
    with pytest.raises(ConfigError, match="fraction"):
        split_indices(np.zeros(10, np.int64), 0, val, test)


def test_too_few_samples_raise_data_error() -> None:
    x, y = np.zeros((3, 2), np.float32), np.zeros(3, np.int64)
    with pytest.raises(DataError, match=r"tiny\.npz: 3 samples leave the val split empty"):
        build_splits(x, y, "tiny.npz", 0, 0.15, 0.15)


def test_zero_fraction_allows_empty_split() -> None:
    x, y = np.zeros((3, 2), np.float32), np.zeros(3, np.int64)
    splits = build_splits(x, y, "tiny", 0, 0.0, 0.0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3, 0, 0)


def test_build_splits_fields() -> None:
    x = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    y = np.array([0, 4] * 20)
    splits = build_splits(x, y, "toy", 0, 0.25, 0.25)
    assert splits.num_classes == 5
    assert splits.input_shape == (3,)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (20, 10, 10)
    assert splits.class_names == ("0", "1", "2", "3", "4")


def test_to_tensor_dataset_dtypes() -> None:
    dataset = to_tensor_dataset(np.ones((2, 1, 3, 3), np.float64), np.array([1, 0], np.int32))
    x, y = dataset[0]
    assert x.dtype == torch.float32 and x.shape == (1, 3, 3)
    assert y.dtype == torch.int64 and int(y) == 1


def _toy_splits():
    x = np.arange(100, dtype=np.float32)[:, None]  # sample i holds the value i
    y = np.arange(100) % 2
    return build_splits(x, y, "toy", 0, 0.2, 0.2)


def _epoch(loader) -> torch.Tensor:
    return torch.cat([x[:, 0] for x, _ in loader])


def test_loaders_seeded_shuffle_and_fixed_eval_order() -> None:
    splits = _toy_splits()
    train, val, test = make_loaders(splits, batch_size=7, seed=0)
    train_again, _, _ = make_loaders(splits, batch_size=7, seed=0)
    train_other, _, _ = make_loaders(splits, batch_size=7, seed=1)
    first = _epoch(train)
    assert torch.equal(first, _epoch(train_again))
    assert not torch.equal(first, _epoch(train_other))
    assert torch.equal(torch.sort(first).values, splits.train.tensors[0][:, 0])
    assert not torch.equal(first, splits.train.tensors[0][:, 0])
    assert torch.equal(_epoch(val), splits.val.tensors[0][:, 0])
    assert torch.equal(_epoch(test), splits.test.tensors[0][:, 0])
    sizes = [len(x) for x, _ in val]
    assert sizes == [7, 7, 6]


def test_loader_batches_have_model_dtypes() -> None:
    train, _, _ = make_loaders(_toy_splits(), batch_size=16)
    x, y = next(iter(train))
    assert x.dtype == torch.float32 and x.shape == (16, 1)
    assert y.dtype == torch.int64 and y.shape == (16,)


@pytest.mark.parametrize(("batch_size", "workers"), [(0, 0), (-3, 0), (8, -1)])
def test_bad_loader_options(batch_size, workers) -> None:
    with pytest.raises(ConfigError):
        make_loaders(_toy_splits(), batch_size=batch_size, num_workers=workers)
