"""Image folders written with Pillow: class mapping, round trip, resizing and errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from slimtorch.data import load_image_folder
from slimtorch.errors import ConfigError, DataError

CLASSES = ("beta", "alpha", "gamma")  # written unsorted; class index follows sorted names
PER_CLASS = 10


def _write_tree(root, shape: tuple[int, ...], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Random lossless PNGs per class; returns uint8 [N, C, H, W] and labels by sorted name."""
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for name in CLASSES:
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode=mode).save(folder / f"{i}.png")
            xs.append(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
            ys.append(sorted(CLASSES).index(name))
    return np.stack(xs), np.array(ys)


def test_grayscale_round_trip(tmp_path, assert_same_samples) -> None:
    x, y = _write_tree(tmp_path / "root", (5, 4), "L")
    splits = load_image_folder(tmp_path / "root")
    assert splits.class_names == ("alpha", "beta", "gamma")
    assert splits.num_classes == 3 and splits.input_shape == (1, 5, 4)
    assert splits.name == str(tmp_path / "root")
    assert_same_samples(splits, x, y)


def test_rgb_round_trip(tmp_path, assert_same_samples) -> None:
    x, y = _write_tree(tmp_path / "root", (5, 4, 3), "RGB")
    splits = load_image_folder(tmp_path / "root", grayscale=False)
    assert splits.input_shape == (3, 5, 4)
    assert_same_samples(splits, x, y)


def test_gray_images_read_as_rgb_repeat_the_channel(tmp_path, gather) -> None:
    _write_tree(tmp_path / "root", (5, 4), "L")
    x, _ = gather(load_image_folder(tmp_path / "root", grayscale=False))
    assert x.shape[1:] == (3, 5, 4)
    np.testing.assert_array_equal(x[:, 0], x[:, 1])
    np.testing.assert_array_equal(x[:, 0], x[:, 2])


def test_image_size_resizes_mixed_sizes(tmp_path, gather) -> None:
    """Constant images stay constant under any resampling: an exact oracle for resizing."""
    values = {}
    for c, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        for i in range(10):
            value = 20 * c + i
            size = (3 + i, 9 - i % 4)  # (width, height), all different
            Image.new("L", size, color=value).save(tmp_path / name / f"{i}.png")
            values[value] = c
    splits = load_image_folder(tmp_path, image_size=(6, 5))
    assert splits.input_shape == (1, 6, 5)
    x, y = gather(splits)
    found = {}
    for image, label in zip(x, y, strict=True):
        value = round(float(image[0, 0, 0]) * 255)
        np.testing.assert_allclose(image * 255, value, atol=1e-3)
        found[value] = int(label)
    assert found == values


def test_hidden_and_non_image_files_ignored(tmp_path, gather) -> None:
    x, _ = _write_tree(tmp_path / "root", (4, 4), "L")
    (tmp_path / "root" / "alpha" / "notes.txt").write_text("not an image")
    (tmp_path / "root" / "alpha" / ".hidden.png").write_bytes(b"junk")
    (tmp_path / "root" / ".cache").mkdir()
    (tmp_path / "root" / "loose.png").write_bytes(b"junk")
    splits = load_image_folder(tmp_path / "root")
    assert splits.num_classes == 3
    assert len(gather(splits)[0]) == len(x)


def _expect_error(path, pattern: str, **kwargs) -> str:
    with pytest.raises(DataError, match=pattern) as info:
        load_image_folder(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unreadable_image(tmp_path) -> None:
    _write_tree(tmp_path / "root", (4, 4), "L")
    (tmp_path / "root" / "beta" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _expect_error(tmp_path / "root", r"beta/broken\.png: unreadable image")


def test_truncated_image(tmp_path) -> None:
    _write_tree(tmp_path / "root", (16, 16), "L")
    path = tmp_path / "root" / "gamma" / "3.png"
    path.write_bytes(path.read_bytes()[:60])
    _expect_error(tmp_path / "root", r"gamma/3\.png: unreadable image")


def test_mixed_sizes_without_image_size(tmp_path) -> None:
    _write_tree(tmp_path / "root", (4, 4), "L")
    Image.new("L", (7, 5)).save(tmp_path / "root" / "gamma" / "odd.png")
    _expect_error(tmp_path / "root", r"gamma/odd\.png: image is 5x7 \(HxW\) but .* is 4x4")


def test_empty_folder(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    _expect_error(tmp_path / "empty", r"empty: no class subfolders")


def test_empty_class_folder(tmp_path) -> None:
    _write_tree(tmp_path / "root", (4, 4), "L")
    (tmp_path / "root" / "delta").mkdir()
    (tmp_path / "root" / "delta" / "readme.txt").write_text("no images here")
    _expect_error(tmp_path / "root", r"root/delta: no image files")


def test_missing_folder(tmp_path) -> None:
    _expect_error(tmp_path / "nowhere", r"nowhere: no such folder")


@pytest.mark.parametrize("size", [(0, 4), (4,), (4, 4, 4), (2.5, 4)])
def test_bad_image_size(tmp_path, size) -> None:
    _write_tree(tmp_path / "root", (4, 4), "L")
    with pytest.raises(ConfigError, match="image_size"):
        load_image_folder(tmp_path / "root", image_size=size)
