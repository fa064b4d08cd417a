"""Seeded, stratified train/validation/test splits, tensor datasets and data loaders.

Every loader in ``slimtorch.data`` ends in :func:`build_splits`: normalized arrays go in
(images float32 ``[N, C, H, W]`` or features ``[N, D]``, labels int64 ``[N]``), a
:class:`Splits` of three ``TensorDataset`` objects comes out. The split is a pure function of
the labels and the seed (:func:`split_indices`), so the same data and seed always give the same
samples in the same split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from slimtorch.errors import ConfigError, DataError

DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.15


@dataclass(frozen=True)
class Splits:
    """A data set cut into train, validation and test parts.

    Attributes:
        train: items ``(x, y)``: x float32 ``[C, H, W]`` (or ``[D]``), y an int64 scalar.
        val: same layout as ``train``; never shuffled by :func:`make_loaders`.
        test: same layout as ``train``; never shuffled by :func:`make_loaders`.
        num_classes: ``max(label) + 1`` over the whole data set.
        input_shape: the per-sample shape of x, e.g. ``(1, 8, 8)``.
        name: ``"digits"`` or the file or folder path the data came from.
        class_names: one name per class index (folder names for image folders,
            ``"0"``, ``"1"``, ... otherwise).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    class_names: tuple[str, ...] = ()


DEFAULT_DATA = "digits"


def recorded_split(
    metrics: object, where: str, data: str | None = None, seed: int | None = None
) -> tuple[str, int]:
    """The data source and split seed a checkpoint was trained on, unless the user gave them.

    Scoring with the training seed keeps the test split held out, so a recorded value of the
    wrong type is refused rather than coerced.

    Args:
        metrics: the checkpoint's metrics (its ``model.json``); ``data`` and ``seed`` are read.
        where: the checkpoint, for the message.
        data: the user's ``--data``; used instead of the recorded one when given.
        seed: the user's ``--seed``; likewise.

    Returns:
        ``(data, seed)``.

    Raises:
        DataError: the metrics are not an object, ``data`` is not a string or ``seed`` not a
            non-negative integer.

    Example:
        >>> recorded_split({"data": "digits:16", "seed": 3}, "ck")
        ('digits:16', 3)
        >>> recorded_split({"seed": "3"}, "ck")
        Traceback (most recent call last):
        ...
        slimtorch.errors.DataError: ck: metrics.seed must be a non-negative integer, got '3'
    """
    if not isinstance(metrics, dict):
        raise DataError(f"{where}: metrics must be a JSON object, got {type(metrics).__name__}")
    if data is None:
        data = metrics.get("data", DEFAULT_DATA)
        if not isinstance(data, str) or not data:
            raise DataError(f"{where}: metrics.data must be a data source name, got {data!r}")
    if seed is None:
        seed = metrics.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise DataError(f"{where}: metrics.seed must be a non-negative integer, got {seed!r}")
    return data, seed


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise ConfigError unless both fractions lie in [0, 1) and leave room for training."""
    for field, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{field}={value}; expected a fraction in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction}; "
            "expected less than 1 so that training data remains"
        )


def _round_half_up(value: float) -> int:
    return int(np.floor(value + 0.5))


def split_indices(
    labels: np.ndarray,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded split of sample indices into train, validation and test.

    Each class is shuffled with ``numpy.random.default_rng(seed)`` and cut on its own:
    ``round(n_c * val_fraction)`` samples go to validation, ``round(n_c * test_fraction)``
    to test, the rest to train. Class proportions therefore match to within one sample.

    Args:
        labels: int array ``[N]`` of class indices.
        seed: seed of the shuffle; the same labels and seed give the same split.
        val_fraction: share of each class that goes to validation, in [0, 1).
        test_fraction: share of each class that goes to test, in [0, 1).

    Returns:
        ``(train, val, test)``: sorted, disjoint int64 index arrays covering ``range(N)``.

    Example:
        >>> train, val, test = split_indices(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 0, 0.25, 0.25)
        >>> len(train), len(val), len(test)
        (4, 2, 2)
    """
    check_fractions(val_fraction, test_fraction)
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], ...] = ([], [], [])
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))  # [n_c]
        n_val = _round_half_up(len(members) * val_fraction)
        n_test = _round_half_up(len(members) * test_fraction)
        parts[1].append(members[:n_val])
        parts[2].append(members[n_val : n_val + n_test])
        parts[0].append(members[n_val + n_test :])
    train, val, test = (np.sort(np.concatenate([*p, np.empty(0, np.int64)])) for p in parts)
    return train.astype(np.int64), val.astype(np.int64), test.astype(np.int64)


def to_tensor_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    """Wrap arrays as a ``TensorDataset`` of float32 inputs and int64 labels.

    Args:
        x: array ``[N, ...]``; converted to a contiguous float32 tensor.
        y: integer array ``[N]``; converted to an int64 tensor.

    Returns:
        A ``TensorDataset`` whose items are ``(x[i], y[i])``.

    Example:
        >>> ds = to_tensor_dataset(np.zeros((2, 1, 8, 8)), np.array([0, 1]))
        >>> ds[1][0].shape, ds[1][1].dtype
        (torch.Size([1, 8, 8]), torch.int64)
    """
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    targets = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    return TensorDataset(inputs, targets)


def _check_not_empty(name: str, n: int, sizes: dict[str, tuple[int, float]]) -> None:
    for split, (size, fraction) in sizes.items():
        if size == 0 and fraction > 0.0:
            raise DataError(
                f"{name}: {n} samples leave the {split} split empty; "
                f"expected enough samples per class for a {fraction:g} {split} fraction"
            )


def build_splits(
    x: np.ndarray,
    y: np.ndarray,
    name: str,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    class_names: tuple[str, ...] | None = None,
) -> Splits:
    """Split normalized arrays into a :class:`Splits` (see :func:`split_indices`).

    Args:
        x: float32 inputs ``[N, ...]`` (already scaled and laid out).
        y: int64 labels ``[N]``, non-negative.
        name: where the data came from; used in messages and ``Splits.name``.
        seed: split seed.
        val_fraction: validation share of each class.
        test_fraction: test share of each class.
        class_names: one name per class; defaults to ``"0"``, ``"1"``, ...

    Returns:
        The three datasets plus ``num_classes``, ``input_shape`` and ``name``.

    Example:
        >>> s = build_splits(np.zeros((20, 3)), np.arange(20) % 2, "toy", 0, 0.2, 0.2)
        >>> len(s.train), len(s.val), len(s.test), s.input_shape
        (12, 4, 4, (3,))
    """
    train, val, test = split_indices(y, seed, val_fraction, test_fraction)
    sizes = {
        "train": (len(train), 1.0),
        "val": (len(val), val_fraction),
        "test": (len(test), test_fraction),
    }
    _check_not_empty(name, len(y), sizes)
    num_classes = int(y.max()) + 1
    return Splits(
        train=to_tensor_dataset(x[train], y[train]),
        val=to_tensor_dataset(x[val], y[val]),
        test=to_tensor_dataset(x[test], y[test]),
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in x.shape[1:]),
        name=name,
        class_names=class_names or tuple(str(i) for i in range(num_classes)),
    )


def make_loaders(
    splits: Splits, batch_size: int = 64, seed: int = 0, num_workers: int = 0
) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Data loaders for the three splits; only the train loader shuffles.

    Args:
        splits: the data, e.g. from :func:`slimtorch.data.load_digits`.
        batch_size: samples per batch (the last batch may be smaller).
        seed: seeds the train loader's ``torch.Generator``; the same seed gives the same
            batch order epoch by epoch.
        num_workers: worker processes per loader (0 loads in the main process).

    Returns:
        ``(train_loader, val_loader, test_loader)``.

    Example:
        >>> from slimtorch.data import load_digits
        >>> train_dl, val_dl, test_dl = make_loaders(load_digits(), batch_size=32)
        >>> next(iter(train_dl))[0].shape
        torch.Size([32, 1, 8, 8])
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}; expected a positive integer")
    if num_workers < 0:
        raise ConfigError(f"num_workers={num_workers}; expected 0 or more")
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(
        splits.train,
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        num_workers=num_workers,
    )
    val = DataLoader(splits.val, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    test = DataLoader(splits.test, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train, val, test
