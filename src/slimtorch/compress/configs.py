"""The configs of the recipe stages that have no home in another package.

``prune`` and ``kmeans`` stages take :class:`~slimtorch.prune.PruneConfig` and
:class:`~slimtorch.quantize.kmeans.KMeansConfig`; the other kinds take one of these frozen,
validated dataclasses (a mistake is a one-line :class:`~slimtorch.errors.ConfigError`).

Example:
    >>> HuffmanConfig().bits_for((300, 64)), HuffmanConfig().bits_for((6, 1, 5, 5))
    (5, 8)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from slimtorch.core.granularity import Granularity, PerChannel, PerTensor, parse_granularity
from slimtorch.encode import EncodeConfig
from slimtorch.errors import ConfigError

FC_INDEX_BITS = 5  # Han, Mao & Dally 2016, Sec. 2: 5-bit relative indices for fc layers
CONV_INDEX_BITS = 8  # ... and 8 bits for conv layers
CODEBOOK_DTYPES = ("float32", "float16")
LINEAR_KINDS: tuple[type, ...] = (PerTensor, PerChannel)  # one codebook per layer to encode
OPTIMIZERS = ("adam", "adamw", "sgd")


def _positive(name: str, value: object, kind: type = float) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and value > 0  # type: ignore[arg-type]
    if kind is int:
        ok = ok and isinstance(value, int)
    if not ok:
        what = "an integer >= 1" if kind is int else "a number > 0"
        raise ConfigError(f"{name}: expected {what}, got {value!r}")


def _check_distill(value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"distill: expected true or false, got {value!r}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tune every weight, pruned positions held at zero.

    Attributes:
        epochs: passes over the training data (>= 1).
        lr: learning rate (> 0).
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        distill: learn from the uncompressed model with the recipe's ``[distill]`` settings.
        version: schema version.

    Example:
        >>> FinetuneConfig(epochs=3).lr
        0.001
    """

    epochs: int = 5
    lr: float = 1e-3
    optimizer: str = "adam"
    distill: bool = False
    version: int = 1

    def __post_init__(self) -> None:
        _positive("epochs", self.epochs, int)
        _positive("lr", self.lr)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer: expected adam, adamw or sgd, got {self.optimizer!r}")
        _check_distill(self.distill)


@dataclass(frozen=True)
class CentroidConfig:
    """Fine-tune the shared centroids of k-means layers (assignments fixed).

    Attributes:
        epochs: passes over the training data (>= 1).
        lr: Adam learning rate (> 0).
        distill: learn from the uncompressed model (the recipe's ``[distill]``).
        version: schema version.

    Example:
        >>> CentroidConfig().epochs
        3
    """

    epochs: int = 3
    lr: float = 1e-3
    distill: bool = False
    version: int = 1

    def __post_init__(self) -> None:
        _positive("epochs", self.epochs, int)
        _positive("lr", self.lr)
        _check_distill(self.distill)


@dataclass(frozen=True)
class LinearQuantConfig:
    """Affine (symmetric, signed) weight quantization of every Linear/Conv layer.

    Attributes:
        bits: bits per weight (2..8).
        granularity: ``PerTensor()`` (one scale per layer) or ``PerChannel(0)`` (per output
            channel), or its spelling ``tensor`` / ``channel``, parsed into the type. Groups
            are not offered: the encode stage codes each layer's values with one codebook.
        layer_bits: qualified name or regex -> bits (first match wins).
        exclude: layers left in float (names or regexes).
        version: schema version.

    Example:
        >>> cfg = LinearQuantConfig(bits=4, layer_bits={"fc.*": 3})
        >>> cfg.granularity, cfg.bits_for("fc1"), cfg.bits_for("conv1")
        (PerTensor(), 3, 4)
    """

    bits: int = 8
    granularity: Granularity = field(default_factory=PerTensor)
    layer_bits: dict[str, int] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    version: int = 1

    def __post_init__(self) -> None:
        for name, bits in {"bits": self.bits, **self.layer_bits}.items():
            if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 8:
                raise ConfigError(f"layer_bits[{name!r}]: expected 2..8, got {bits!r}")
        g = parse_granularity(self.granularity, LINEAR_KINDS, "LinearQuantConfig.granularity")
        object.__setattr__(self, "granularity", g)
        object.__setattr__(self, "exclude", tuple(self.exclude))
        for pattern in (*self.layer_bits, *self.exclude):
            try:
                re.compile(pattern)
            except re.error as err:
                raise ConfigError(f"{pattern!r}: not a valid regex ({err})") from None

    def bits_for(self, name: str) -> int:
        """Bits of layer ``name``: the first ``layer_bits`` entry naming or matching it."""
        matches = (b for p, b in self.layer_bits.items() if p == name or re.fullmatch(p, name))
        return next(matches, self.bits)


@dataclass(frozen=True)
class BiasKMeansConfig:
    """Share the values of each bias vector with at least ``min_numel`` entries.

    Attributes:
        bits: codebook index bits (1..8).
        min_numel: smaller biases stay plain.
        version: schema version.

    Example:
        >>> BiasKMeansConfig().bits
        4
    """

    bits: int = 4
    min_numel: int = 16
    version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or not 1 <= self.bits <= 8:
            raise ConfigError(f"bits: expected an integer in 1..8, got {self.bits!r}")
        _positive("min_numel", self.min_numel, int)


@dataclass(frozen=True)
class HuffmanConfig:
    """How the final file is written (:func:`slimtorch.encode.save_compressed`).

    Attributes:
        index_bits: relative-gap bits of pruned fully connected (2-D) weights (paper: 5).
        conv_index_bits: relative-gap bits of pruned conv weights (paper: 8).
        codebook_dtype: ``float32`` or ``float16`` centroids (rounded in the model too, so the
            file still decodes to exactly the evaluated weights).
        max_code_length: longest Huffman code (1..24).
        compress_header: zlib the JSON header.
        version: schema version.

    Example:
        >>> HuffmanConfig().encode_config().max_code_length
        15
    """

    index_bits: int = FC_INDEX_BITS
    conv_index_bits: int = CONV_INDEX_BITS
    codebook_dtype: str = "float32"
    max_code_length: int = 15
    compress_header: bool = True
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("index_bits", "conv_index_bits"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 16:
                raise ConfigError(f"{name}: expected an integer in 1..16, got {v!r}")
        if self.codebook_dtype not in CODEBOOK_DTYPES:
            raise ConfigError(
                f"codebook_dtype: expected float32 or float16, got {self.codebook_dtype!r}"
            )
        self.encode_config()

    def encode_config(self) -> EncodeConfig:
        """The :class:`~slimtorch.encode.EncodeConfig` for ``save_compressed``."""
        return EncodeConfig(self.max_code_length, self.compress_header)

    def bits_for(self, shape: tuple[int, ...]) -> int:
        """Relative-index bits of a weight of this shape (conv = more than 2 dims)."""
        return self.conv_index_bits if len(shape) > 2 else self.index_bits


@dataclass(frozen=True)
class ModelSection:
    """Where the pipeline starts: a zoo model trained on a data set (or a checkpoint).

    Attributes:
        name: zoo name, ``package.module:factory`` or a checkpoint folder.
        data: data source (``digits``, ``digits:28``, a .npz, ...).
        epochs: training epochs of the uncompressed baseline.
        lr: its learning rate.
        batch_size: batch size of every stage.
        seed: split, initialization and training seed.
    """

    name: str = "lenet300"
    data: str = "digits"
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("name", "data"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ConfigError(f"{key}: expected a non-empty string")
        _positive("epochs", self.epochs, int)
        _positive("lr", self.lr)
        _positive("batch_size", self.batch_size, int)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed: expected an integer >= 0, got {self.seed!r}")
