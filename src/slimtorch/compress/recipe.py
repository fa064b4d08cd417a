"""Compression recipes: a TOML file listing the stages of a Deep Compression pipeline.

A recipe names the model it starts from (``[model]``), an optional distillation objective
(``[distill]``, fields of :class:`~slimtorch.distill.DistillConfig`) and an ordered list of
``[[stage]]`` tables. Each stage has a ``kind`` and the fields of that kind's config dataclass
(the table :data:`slimtorch.compress.stages.STAGES`; the configs without another home are in
:mod:`slimtorch.compress.configs`):

===================  =====================================================================
kind                 config
===================  =====================================================================
prune                :class:`~slimtorch.prune.PruneConfig` (criterion, sparsity, layers, ...)
finetune             ``FinetuneConfig`` (masks kept; ``distill = true`` uses [distill])
kmeans               :class:`~slimtorch.quantize.kmeans.KMeansConfig` (k-means weight sharing)
linear               ``LinearQuantConfig`` (affine weight quantization)
finetune_centroids   ``CentroidConfig`` (trained quantization of the k-means codebooks)
bias_kmeans          ``BiasKMeansConfig`` (share the values of each bias vector too)
encode               ``HuffmanConfig`` (relative indices, Huffman, the compressed file)
===================  =====================================================================

The shipped recipes are TOML files in :mod:`slimtorch.compress.recipes`.
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
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from slimtorch.compress.configs import ModelSection
from slimtorch.compress.stages import QUANTIZE_KINDS, SEARCH_KINDS, STAGES
from slimtorch.core.granularity import GRANULARITY_TYPES, format_granularity
from slimtorch.distill import DistillConfig
from slimtorch.errors import ConfigError
from slimtorch.io import read_text_file

RECIPE_VERSION = 1
DEFAULT_RECIPE = "default"
SHIPPED = "slimtorch.compress.recipes"  # the package holding the shipped TOML recipes
STAGE_CONFIGS: dict[str, type] = {kind: k.config for kind, k in STAGES.items()}


@dataclass(frozen=True)
class Stage:
    """One step of a recipe: its ``kind`` and config."""

    kind: str
    config: Any

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": ..., **config fields}`` (JSON-ready)."""
        values = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)}
        return {"kind": self.kind, **{k: _plain(v) for k, v in values.items()}}


def _plain(v: Any) -> Any:
    """A config value as the recipe spells it: granularities as text, tuples as lists."""
    if isinstance(v, GRANULARITY_TYPES):
        return format_granularity(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {k: _plain(x) for k, x in dataclasses.asdict(v).items()}
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: name, model section, optional distillation, stages."""

    name: str
    stages: tuple[Stage, ...]
    model: ModelSection = field(default_factory=ModelSection)
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
        if s.kind in SEARCH_KINDS and any(
            t.kind not in ("finetune", *SEARCH_KINDS) for t in stages[:i]
        ):
            raise ConfigError(f"{where}: a search stage comes before pruning and quantization")
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
    folder = resources.files(SHIPPED)
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
    text = resources.files(SHIPPED).joinpath(f"{source}.toml").read_text("utf-8")
    return parse_recipe(text, f"{source}.toml")
