"""Compression recipes: a TOML file listing the stages of a Deep Compression pipeline.

A recipe names the model it starts from (``[model]``), an optional distillation objective
(``[distill]``, fields of :class:`~slimtorch.distill.DistillConfig`) and an ordered list of
``[[stage]]`` tables. Each stage has a ``kind`` and the fields of one config dataclass:

===================  =====================================================================
kind                 config
===================  =====================================================================
prune                :class:`~slimtorch.prune.PruneConfig` (criterion, sparsity, layers, ...)
finetune             :class:`FinetuneConfig` (masks kept; ``distill = true`` uses [distill])
kmeans               :class:`~slimtorch.quantize.kmeans.KMeansConfig` (k-means weight sharing)
linear               :class:`LinearQuantConfig` (affine weight quantization)
finetune_centroids   :class:`CentroidConfig` (trained quantization of the k-means codebooks)
bias_kmeans          :class:`BiasKMeansConfig` (share the values of each bias vector too)
encode               :class:`HuffmanConfig` (relative indices, Huffman, the compressed file)
===================  =====================================================================

Every mistake is one line naming the recipe file, the stage index and the field.

Example:
    >>> recipe = parse_recipe('''
    ... [model]
    ... name = "lenet300"
    ... [[stage]]
    ... kind = "kmeans"
    ... bits = 6
    ... [[stage]]
    ... kind = "encode"
    ... ''', "inline.toml")
    >>> [s.kind for s in recipe.stages], recipe.stages[0].config.bits
    (['kmeans', 'encode'], 6)
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from slimtorch.distill import DistillConfig
from slimtorch.encode import EncodeConfig
from slimtorch.errors import ConfigError
from slimtorch.io import read_text_file
from slimtorch.prune import PruneConfig
from slimtorch.quantize.kmeans import KMeansConfig

RECIPE_VERSION = 1
DEFAULT_RECIPE = "default"
FC_INDEX_BITS = 5  # Han, Mao & Dally 2016, Sec. 2: 5-bit relative indices for fc layers
CONV_INDEX_BITS = 8  # ... and 8 bits for conv layers
CODEBOOK_DTYPES = ("float32", "float16")
GRANULARITIES = ("tensor", "channel")


def _positive(name: str, value: object, kind: type = float) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and value > 0  # type: ignore[arg-type]
    if kind is int:
        ok = ok and isinstance(value, int)
    if not ok:
        what = "an integer >= 1" if kind is int else "a number > 0"
        raise ConfigError(f"{name}: expected {what}, got {value!r}")


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
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"optimizer: expected adam, adamw or sgd, got {self.optimizer!r}")
        if not isinstance(self.distill, bool):
            raise ConfigError(f"distill: expected true or false, got {self.distill!r}")


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
        if not isinstance(self.distill, bool):
            raise ConfigError(f"distill: expected true or false, got {self.distill!r}")


@dataclass(frozen=True)
class LinearQuantConfig:
    """Affine (symmetric, signed) weight quantization of every Linear/Conv layer.

    Attributes:
        bits: bits per weight (2..8).
        granularity: ``tensor`` (one scale per layer) or ``channel`` (per output channel).
        layer_bits: qualified name or regex -> bits (first match wins).
        exclude: layers left in float (names or regexes).
        version: schema version.

    Example:
        >>> LinearQuantConfig(bits=4).granularity
        'tensor'
    """

    bits: int = 8
    granularity: str = "tensor"
    layer_bits: dict[str, int] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    version: int = 1

    def __post_init__(self) -> None:
        for name, bits in {"bits": self.bits, **self.layer_bits}.items():
            if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 8:
                raise ConfigError(f"layer_bits[{name!r}]: expected 2..8, got {bits!r}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"granularity: expected tensor or channel, got {self.granularity!r}")
        object.__setattr__(self, "exclude", tuple(self.exclude))


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


STAGE_CONFIGS: dict[str, type] = {
    "prune": PruneConfig,
    "finetune": FinetuneConfig,
    "kmeans": KMeansConfig,
    "linear": LinearQuantConfig,
    "finetune_centroids": CentroidConfig,
    "bias_kmeans": BiasKMeansConfig,
    "encode": HuffmanConfig,
}
QUANTIZE_KINDS = ("kmeans", "linear")


@dataclass(frozen=True)
class Stage:
    """One step of a recipe: its ``kind`` and config."""

    kind: str
    config: Any

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": ..., **config fields}`` (JSON-ready)."""
        d = dataclasses.asdict(self.config)
        return {"kind": self.kind, **{k: _plain(v) for k, v in d.items()}}


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: name, model section, optional distillation, stages."""

    name: str
    stages: tuple[Stage, ...]
    model: ModelSection = ModelSection()
    distill: DistillConfig | None = None
    description: str = ""
    source: str = "<recipe>"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for reports)."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "model": dataclasses.asdict(self.model),
            "distill": None if self.distill is None else self.distill.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
        }


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {unknown[0]!r}; {cls.__name__} has {', '.join(sorted(names))}"
        )
    values = dict(table)
    for key in ("exclude", "hints", "attention"):
        if isinstance(values.get(key), list):
            values[key] = tuple(tuple(x) if isinstance(x, list) else x for x in values[key])
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _parse_stage(index: int, table: Any, source: str) -> Stage:
    where = f"{source}: stage {index}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a [[stage]] table")
    kind = table.get("kind")
    if kind not in STAGE_CONFIGS:
        raise ConfigError(
            f"{where}: field 'kind' must be one of {', '.join(STAGE_CONFIGS)}, got {kind!r}"
        )
    body = {k: v for k, v in table.items() if k != "kind"}
    return Stage(kind, _build(STAGE_CONFIGS[kind], body, f"{where} ({kind})"))


def _check_order(stages: tuple[Stage, ...], source: str) -> None:
    """Stages must make sense in sequence (quantize once, encode last, ...)."""
    quantized = None
    for i, s in enumerate(stages):
        where = f"{source}: stage {i} ({s.kind})"
        if s.kind == "encode" and i != len(stages) - 1:
            raise ConfigError(f"{where}: encode must be the last stage")
        if s.kind in ("prune", "finetune") and quantized:
            raise ConfigError(
                f"{where}: comes after quantization (stage {quantized}); prune and fine-tune first"
            )
        if s.kind in QUANTIZE_KINDS:
            if quantized is not None:
                raise ConfigError(f"{where}: the model is already quantized (stage {quantized})")
            quantized = i
        if s.kind == "finetune_centroids" and (
            quantized is None or stages[quantized].kind != "kmeans"
        ):
            raise ConfigError(f"{where}: needs a kmeans stage before it")


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    """Parse and validate a recipe's TOML text.

    Args:
        text: the TOML document.
        source: its file name, used in error messages.

    Returns:
        The :class:`Recipe`.

    Raises:
        ConfigError: one line naming ``source``, the stage index and the field.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    known = {"name", "description", "version", "model", "distill", "stage"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level key {unknown[0]!r}; expected {', '.join(sorted(known))}"
        )
    if int(doc.get("version", RECIPE_VERSION)) > RECIPE_VERSION:
        raise ConfigError(
            f"{source}: recipe version {doc['version']} is newer than {RECIPE_VERSION}"
        )
    stages = doc.get("stage", [])
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{source}: no [[stage]] tables; a recipe needs at least one stage")
    parsed = tuple(_parse_stage(i, t, source) for i, t in enumerate(stages))
    _check_order(parsed, source)
    model = _build(ModelSection, doc.get("model", {}), f"{source}: [model]")
    distill = None
    if "distill" in doc:
        distill = _build(DistillConfig, doc["distill"], f"{source}: [distill]")
    if any(getattr(s.config, "distill", False) for s in parsed) and distill is None:
        raise ConfigError(f"{source}: a stage sets distill = true but there is no [distill] table")
    name = str(doc.get("name", Path(source).stem))
    return Recipe(name, parsed, model, distill, str(doc.get("description", "")), source)


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped with slimtorch.

    Example:
        >>> "default" in shipped_recipes()
        True
    """
    folder = resources.files("slimtorch.recipes")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_recipe(source: str | Path = DEFAULT_RECIPE) -> Recipe:
    """Load a recipe from a file path or by shipped name (``default``, ``lenet300-paper``...).

    Args:
        source: a path to a TOML file, or the name of a shipped recipe.

    Returns:
        The validated :class:`Recipe`.

    Raises:
        ConfigError: no such file or recipe, an unreadable or non-UTF-8 file, or an invalid
            recipe.

    Example:
        >>> load_recipe("lenet300-paper").stages[0].kind
        'prune'
    """
    path = Path(source)
    if path.suffix == ".toml" or path.exists():
        text = read_text_file(path, f"--recipe {path}", ConfigError)
        return parse_recipe(text, str(path))
    names = shipped_recipes()
    if str(source) not in names:
        raise ConfigError(f"--recipe {source}: no such file or shipped recipe ({', '.join(names)})")
    text = resources.files("slimtorch.recipes").joinpath(f"{source}.toml").read_text("utf-8")
    return parse_recipe(text, f"{source}.toml")
