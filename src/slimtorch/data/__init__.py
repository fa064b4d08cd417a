"""Data sets for slimtorch: built-in digits and user data (``.npz``, image folders, IDX).

Every loader returns a :class:`Splits` of seeded, stratified train/validation/test
``TensorDataset`` objects whose items are ``(x float32 [C, H, W] or [D], y int64)``;
:func:`make_loaders` turns them into data loaders.

Example:
    >>> from slimtorch.data import load_data, make_loaders
    >>> splits = load_data("digits", seed=0)
    >>> train, val, test = make_loaders(splits, batch_size=64, seed=0)
"""

from __future__ import annotations

from slimtorch.data.folder import load_image_folder, read_image_folder
from slimtorch.data.idx import load_idx, parse_idx, read_idx
from slimtorch.data.splits import (
    Splits,
    build_splits,
    make_loaders,
    recorded_split,
    split_indices,
    to_tensor_dataset,
)
from slimtorch.data.vision import load_data, load_digits, load_npz, read_npz

__all__ = [
    "Splits",
    "build_splits",
    "load_data",
    "load_digits",
    "load_idx",
    "load_image_folder",
    "load_npz",
    "make_loaders",
    "parse_idx",
    "read_idx",
    "read_image_folder",
    "read_npz",
    "recorded_split",
    "split_indices",
    "to_tensor_dataset",
]
