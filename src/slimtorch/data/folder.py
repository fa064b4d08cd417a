"""Image folders: one subfolder per class, class index = position among sorted subfolder names.

``root/cat/1.png, root/dog/a.jpg`` gives classes ``("cat", "dog")``. Files are read with
Pillow; only files whose extension Pillow registers as an image format are read, and hidden
entries (names starting with ``.``) and files directly inside ``root`` are ignored. Every image
is converted to one mode (grayscale ``L`` or ``RGB``) and must share one size, unless
``image_size`` resizes them all.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from slimtorch.data.arrays import one_line, scale_pixels
from slimtorch.data.splits import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    Splits,
    build_splits,
)
from slimtorch.errors import ConfigError, DataError

RESAMPLE = Image.Resampling.BILINEAR


def _visible(entries: list[Path]) -> list[Path]:
    return sorted(p for p in entries if not p.name.startswith("."))


def _class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; expected a folder with one subfolder per class")
    folders = _visible([p for p in root.iterdir() if p.is_dir()])
    if not folders:
        raise DataError(f"{root}: no class subfolders; expected one subfolder of images per class")
    return folders


def _image_files(folder: Path) -> list[Path]:
    extensions = Image.registered_extensions()
    files = _visible([p for p in folder.iterdir() if p.is_file()])
    images = [p for p in files if p.suffix.lower() in extensions]
    if not images:
        raise DataError(
            f"{folder}: no image files; expected at least one image per class "
            "(.png, .jpg, .bmp or another format Pillow reads)"
        )
    return images


def _read_image(path: Path, mode: str, image_size: tuple[int, int] | None) -> np.ndarray:
    try:
        with Image.open(path) as image:
            converted = image.convert(mode)  # forces a full decode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(
            f"{path}: unreadable image ({one_line(err)}); expected a file Pillow can decode"
        ) from err
    if image_size is not None:
        height, width = image_size
        converted = converted.resize((width, height), RESAMPLE)
    return np.asarray(converted, dtype=np.uint8)  # [H, W] or [H, W, 3]


def _check_size(path: Path, pixels: np.ndarray, first: Path, first_shape: tuple[int, ...]) -> None:
    if pixels.shape[:2] != first_shape[:2]:
        (h, w), (fh, fw) = pixels.shape[:2], first_shape[:2]
        raise DataError(
            f"{path}: image is {h}x{w} (HxW) but {first} is {fh}x{fw}; expected one size for "
            "all images, or pass image_size=(H, W) to resize"
        )


def _check_image_size(image_size: tuple[int, int] | None) -> None:
    if image_size is None:
        return
    if len(image_size) != 2 or not all(isinstance(d, int) and d > 0 for d in image_size):
        raise ConfigError(f"image_size={image_size}; expected (height, width), positive ints")


def read_image_folder(
    path: str | os.PathLike[str],
    image_size: tuple[int, int] | None = None,
    grayscale: bool = True,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read every image of a class-per-subfolder tree into arrays.

    Args:
        path: the root folder.
        image_size: ``(height, width)`` to resize every image to (bilinear), or None to
            require one common size.
        grayscale: convert to one channel (``L``) if True, else to ``RGB``.

    Returns:
        ``(x, y, class_names)``: uint8 ``[N, C, H, W]``, int64 ``[N]``, sorted folder names.

    Example:
        >>> x, y, names = read_image_folder("shapes/", image_size=(32, 32))  # doctest: +SKIP
        >>> x.shape, names  # doctest: +SKIP
        ((120, 1, 32, 32), ('circle', 'square'))
    """
    _check_image_size(image_size)
    mode = "L" if grayscale else "RGB"
    folders = _class_folders(Path(path))
    files = [(f, label) for label, folder in enumerate(folders) for f in _image_files(folder)]
    pixels = [_read_image(file, mode, image_size) for file, _ in files]
    for (file, _), image in zip(files, pixels, strict=True):
        _check_size(file, image, files[0][0], pixels[0].shape)
    x = np.stack(pixels)  # [N, H, W] or [N, H, W, 3]
    x = x[:, None] if grayscale else x.transpose(0, 3, 1, 2)  # -> [N, C, H, W]
    y = np.array([label for _, label in files], dtype=np.int64)
    return x, y, tuple(folder.name for folder in folders)


def load_image_folder(
    path: str | os.PathLike[str],
    image_size: tuple[int, int] | None = None,
    grayscale: bool = True,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> Splits:
    """Load a folder of class subfolders as seeded, stratified splits.

    Args:
        path: root folder; each visible subfolder is one class, indexed in sorted order.
        image_size: ``(height, width)`` to resize to, or None to require one common size.
        grayscale: one channel if True, three (RGB) if False.
        seed: split seed.
        val_fraction: validation share of each class.
        test_fraction: test share of each class.

    Returns:
        :class:`Splits` with x float32 ``[C, H, W]`` in [0, 1] and ``class_names`` set to
        the subfolder names.

    Example:
        >>> s = load_image_folder("shapes/", image_size=(32, 32), grayscale=False)  # doctest: +SKIP
        >>> s.input_shape, s.class_names  # doctest: +SKIP
        ((3, 32, 32), ('circle', 'square'))
    """
    x, y, names = read_image_folder(path, image_size, grayscale)
    source = str(path)
    pixels = scale_pixels(x, source)
    return build_splits(pixels, y, source, seed, val_fraction, test_fraction, names)
