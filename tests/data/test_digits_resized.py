"""Digits resized for conv nets that take 28x28 / 32x32 input."""

from __future__ import annotations

import pytest
import torch

from slimtorch.data import load_data, load_digits
from slimtorch.errors import DataError


def test_resized_digits_keep_labels_split_and_mean() -> None:
    small = load_digits(seed=0)
    big = load_data("digits:32", seed=0)
    assert big.input_shape == (1, 32, 32) and big.name == "digits:32"
    assert len(big.train) == len(small.train) and len(big.test) == len(small.test)
    xs, ys = small.test[:]
    xb, yb = big.test[:]
    assert torch.equal(ys, yb)
    # Bilinear upsampling without corner alignment preserves each image's mean closely.
    assert torch.allclose(xs.mean(dim=(1, 2, 3)), xb.mean(dim=(1, 2, 3)), atol=0.03)
    assert xb.min() >= 0 and xb.max() <= 1


@pytest.mark.parametrize("source", ["digits:", "digits:x", "digits:0"])
def test_bad_digits_size(source: str) -> None:
    with pytest.raises(DataError, match="digits:SIZE"):
        load_data(source)
