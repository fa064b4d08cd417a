"""K-means weight sharing (Han, Mao & Dally, "Deep Compression", ICLR 2016).

Each layer's weights are clustered into ``2**bits`` shared values (a codebook); the layer then
stores ``bits``-bit indices plus the codebook. Three pieces:

- :func:`~slimtorch.quantize.kmeans1d.kmeans_1d`, the solver (exact Lloyd iterations on
  sorted values, ``O(k log n)`` per iteration; the LLM path's per-row codebooks run the same
  solver). 100 million weights take seconds (see BENCHMARKS.md).
- :func:`kmeans_codebook`, sparse-aware: when a weight contains exact zeros (left by
  pruning) the zeros are not clustered; codebook entry 0 is reserved for an exact 0 and the
  nonzeros share the other ``2**bits - 1`` entries.
- :func:`kmeans_quantize_model`, the transform: every ``nn.Linear`` / ``nn.ConvNd`` not
  excluded becomes a codebook shell (:mod:`slimtorch.quantize.kmeans_module`), and a
  :class:`~slimtorch.quantize.report.QuantReport` gives per-layer bits, size, MSE and SQNR.

Example:
    >>> import torch
    >>> centroids, idx = kmeans_1d(torch.tensor([0.0, 0.1, 1.0, 1.1]), k=2)
    >>> [round(c, 4) for c in centroids.tolist()], idx.tolist()
    ([0.05, 1.05], [0, 0, 1, 1])
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from slimtorch.core.size import WeightFormat
from slimtorch.errors import ConfigError
from slimtorch.quantize.kmeans1d import (
    DEFAULT_MAX_ITER,
    KMEANS_INITS,
    KMeansInit,
    _is_int,
    kmeans_1d,
)
from slimtorch.quantize.kmeans_module import (
    MAX_INDEX_BITS,
    NO_ZERO_INDEX,
    codebook_layer_like,
)
from slimtorch.quantize.report import QuantReport, layer_report

__all__ = ["KMeansConfig", "kmeans_1d", "kmeans_codebook", "kmeans_quantize_model"]

KMEANS_CONFIG_VERSION = 1
MIN_BITS = 1
CODEBOOK_ENTRY_BITS = 32  # centroids are stored as fp32
ZERO_INDEX = 0  # codebook entry reserved for exact zeros in a sparse weight


@dataclass(frozen=True)
class KMeansConfig:
    """How :func:`kmeans_quantize_model` clusters a model's weights.

    Args:
        bits: Index width; each layer gets ``2**bits`` centroids (1..16).
        init: ``"linear"`` (evenly spaced between min and max, the paper's best),
            ``"density"`` (quantiles of the weights) or ``"random"`` (Forgy: random weights).
        exclude: Layers left in float: qualified module names or regexes (``re.fullmatch``).
        per: Codebook granularity; ``"layer"`` (one codebook per layer) is the only one.
        max_iter: Lloyd iterations at most (>= 1).
        seed: Seed of the ``"random"`` initialization.
        keep_zeros: Keep exact zeros (pruned weights) exactly zero and out of the clustering.
        layer_bits: Per-layer bit widths overriding ``bits``: ``{name or regex: bits}`` (a dict
            is accepted and stored as a tuple of pairs; the first match wins).
        version: Serialization version.

    Example:
        >>> KMeansConfig(bits=4, exclude=("classifier",)).init
        'linear'
    """

    bits: int = 4
    init: KMeansInit = "linear"
    exclude: tuple[str, ...] = ()
    per: Literal["layer"] = "layer"
    max_iter: int = DEFAULT_MAX_ITER
    seed: int = 0
    keep_zeros: bool = True
    layer_bits: tuple[tuple[str, int], ...] = field(default=())
    version: int = KMEANS_CONFIG_VERSION

    def __post_init__(self) -> None:
        _check_bits("bits", self.bits)
        if self.init not in KMEANS_INITS:
            raise ConfigError(f"init: expected one of {', '.join(KMEANS_INITS)}, got {self.init!r}")
        if self.per != "layer":
            raise ConfigError(f"per: only 'layer' is supported, got {self.per!r}")
        if not _is_int(self.max_iter) or self.max_iter < 1:
            raise ConfigError(f"max_iter: expected an integer >= 1, got {self.max_iter!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed: expected an integer >= 0, got {self.seed!r}")
        if isinstance(self.exclude, str):
            object.__setattr__(self, "exclude", (self.exclude,))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        pairs = self.layer_bits.items() if isinstance(self.layer_bits, Mapping) else self.layer_bits
        object.__setattr__(self, "layer_bits", tuple((str(k), v) for k, v in pairs))
        for name, bits in self.layer_bits:
            _check_bits(f"layer_bits[{name!r}]", bits)
        for pattern in (*self.exclude, *(k for k, _ in self.layer_bits)):
            _check_pattern(pattern)
        if self.version > KMEANS_CONFIG_VERSION:
            raise ConfigError(f"version: {self.version} is newer than {KMEANS_CONFIG_VERSION}")

    def bits_for(self, name: str) -> int:
        """Bit width of layer ``name`` (the first matching ``layer_bits`` entry, else ``bits``)."""
        return next((b for p, b in self.layer_bits if _name_matches(p, name)), self.bits)

    def excludes(self, name: str) -> bool:
        """Whether layer ``name`` stays in float."""
        return any(_name_matches(p, name) for p in self.exclude)


def _check_bits(name: str, bits: object) -> None:
    if not _is_int(bits) or not MIN_BITS <= bits <= MAX_INDEX_BITS:  # type: ignore[operator]
        raise ConfigError(
            f"{name}: expected an integer in {MIN_BITS}..{MAX_INDEX_BITS}, got {bits!r}"
        )


def _check_pattern(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"layer pattern {pattern!r} is not a valid regex ({err})") from err


def _name_matches(pattern: str, name: str) -> bool:
    return pattern == name or re.fullmatch(pattern, name) is not None


def kmeans_codebook(
    weight: Tensor,
    bits: int,
    init: KMeansInit = "linear",
    max_iter: int = DEFAULT_MAX_ITER,
    seed: int = 0,
    keep_zeros: bool = True,
) -> tuple[Tensor, Tensor, int]:
    """A ``2**bits`` codebook and indices for one weight tensor, sparse-aware.

    Args:
        weight: Float weight of any shape.
        bits: Index width (1..16).
        init, max_iter, seed: As for :func:`kmeans_1d`.
        keep_zeros: If the weight holds exact zeros, reserve entry ``ZERO_INDEX`` for them and
            cluster only the nonzeros into the other ``2**bits - 1`` entries.

    Returns:
        ``(codebook [2**bits] float32, indices int64 shaped like weight, zero_index)`` with
        ``zero_index`` = ``ZERO_INDEX`` or ``NO_ZERO_INDEX``.

    Example:
        >>> cb, idx, z = kmeans_codebook(torch.tensor([0.0, 1.0, 1.2, 0.0, -2.0, 3.0]), bits=2)
        >>> cb.tolist()[0], z, idx.tolist()
        (0.0, 0, [0, 2, 2, 0, 1, 3])
    """
    _check_bits("bits", bits)
    w = weight.detach().float()
    nonzero = w != 0
    sparse = keep_zeros and not bool(nonzero.all())
    if not sparse:
        centroids, idx = kmeans_1d(w, 2**bits, init, max_iter, seed)
        return centroids.float(), idx, NO_ZERO_INDEX
    codebook, idx = torch.zeros(2**bits), torch.full(w.shape, ZERO_INDEX, dtype=torch.long)
    if bool(nonzero.any()):
        centroids, assign = kmeans_1d(w[nonzero], 2**bits - 1, init, max_iter, seed)
        codebook[1:] = centroids.float()
        idx[nonzero] = assign + 1
    return codebook, idx, ZERO_INDEX


def codebook_format(bits: int) -> WeightFormat:
    """Storage format of a k-means layer for ``slimtorch.core.size``: ``bits``-bit indices,
    ``2**bits`` fp32 centroids, smallest sparse layout.

    Example:
        >>> codebook_format(4).codebook
        True
    """
    return WeightFormat(bits=bits, codebook=True, codebook_entry_bits=CODEBOOK_ENTRY_BITS)


def effective_weight(module: nn.Module) -> Tensor:
    """The weight a layer computes with: ``weight_orig * weight_mask`` under a torch prune
    hook, else ``module.weight`` (parametrized weights included).

    Example:
        >>> effective_weight(nn.Linear(3, 2)).shape
        torch.Size([2, 3])
    """
    mask = getattr(module, "weight_mask", None)
    orig = getattr(module, "weight_orig", None)
    if isinstance(mask, Tensor) and isinstance(orig, Tensor):
        return (orig * mask).detach()
    return module.weight.detach()


def quantizable_layers(model: nn.Module, exclude: tuple[str, ...] = ()) -> list[str]:
    """Qualified names of the ``nn.Linear`` and (non-transposed) ``nn.ConvNd`` layers of
    ``model``, minus those matching ``exclude`` (names or regexes).

    Example:
        >>> quantizable_layers(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)))
        ['0', '2']
    """
    names = []
    for name, module in model.named_modules():
        is_conv = isinstance(module, nn.modules.conv._ConvNd) and not module.transposed
        excluded = any(_name_matches(p, name) for p in exclude)
        if (isinstance(module, nn.Linear) or is_conv) and name and not excluded:
            names.append(name)
    return names


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also copies models pruned with ``torch.nn.utils.prune`` (their
    computed ``weight`` attribute is not a graph leaf; it is copied detached and recomputed
    by the hook at the next forward).

    Example:
        >>> import torch.nn.utils.prune as prune
        >>> m = prune.random_unstructured(nn.Linear(4, 2), "weight", amount=0.5)
        >>> int((copy_model(m).weight == 0).sum())
        4
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at qualified ``name`` inside ``model``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def kmeans_quantize_model(
    model: nn.Module, config: KMeansConfig, *, inplace: bool = False
) -> tuple[nn.Module, QuantReport]:
    """Replace every linear and conv layer (not excluded) with a k-means codebook layer.

    Args:
        model: The float model (copied unless ``inplace``).
        config: Bits (per layer via ``layer_bits``), initialization, exclusions.
        inplace: Modify ``model`` itself instead of a deep copy.

    Returns:
        ``(quantized model, QuantReport)``; the report has one row per weight with its bits,
        size (``WeightFormat(codebook=True)``), MSE and SQNR.

    Example:
        >>> m = nn.Sequential(nn.Linear(16, 4))
        >>> q, report = kmeans_quantize_model(m, KMeansConfig(bits=2))
        >>> type(q[0]).__name__, report.layers[0].bits, len(q[0].weight.unique()) <= 4
        ('CodebookLinear', 2, True)
    """
    model = model if inplace else copy_model(model)
    report = QuantReport(method="kmeans", extra={"config": _config_dict(config)})
    for name in quantizable_layers(model, config.exclude):
        module = model.get_submodule(name)
        if isinstance(module, nn.modules.conv._ConvNd) and module.padding_mode != "zeros":
            continue  # no codebook shell for circular/reflect padding: stays float
        w, bits = effective_weight(module), config.bits_for(name)
        codebook, idx, zero = kmeans_codebook(
            w, bits, config.init, config.max_iter, config.seed, config.keep_zeros
        )
        shell = codebook_layer_like(module, idx, codebook, bits, zero)
        replace_module(model, name, shell)
        report.layers.append(
            layer_report(
                f"{name}.weight", w, shell.weight.detach(), codebook_format(bits), "kmeans"
            )
        )
    return model, report


def _config_dict(config: KMeansConfig) -> dict[str, object]:
    return {
        "bits": config.bits,
        "init": config.init,
        "exclude": list(config.exclude),
        "per": config.per,
        "max_iter": config.max_iter,
        "seed": config.seed,
        "keep_zeros": config.keep_zeros,
        "layer_bits": dict(config.layer_bits),
        "version": config.version,
    }
