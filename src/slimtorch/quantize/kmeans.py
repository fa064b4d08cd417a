"""K-means weight sharing (Han, Mao & Dally, "Deep Compression", ICLR 2016).

Each layer's weights are clustered into ``2**bits`` shared values (a codebook); the layer then
stores ``bits``-bit indices plus the codebook. Three pieces:

- :func:`kmeans_1d`, the solver: exact Lloyd iterations on *sorted* values. The values are
  sorted once; in 1-D every cluster is an interval of the sorted array, so an iteration is a
  binary search for the ``k - 1`` midpoints between neighbouring centroids plus ``k`` range sums
  from block partial sums (float64), i.e. ``O(k log n)`` instead of ``O(n k)``. Iterations stop
  when no boundary moves, which is the fixed point of the ordinary Lloyd algorithm
  (same initialization, same result). 100 million weights take seconds (see BENCHMARKS.md).
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

import numpy as np
import torch
from torch import Tensor, nn

from slimtorch.errors import ConfigError
from slimtorch.profile.size import WeightFormat
from slimtorch.quantize.kmeans_module import (
    MAX_INDEX_BITS,
    NO_ZERO_INDEX,
    codebook_layer_like,
)
from slimtorch.quantize.report import QuantReport, layer_report

KMeansInit = Literal["linear", "density", "random"]
KMEANS_INITS: tuple[str, ...] = ("linear", "density", "random")
KMEANS_CONFIG_VERSION = 1
MIN_BITS = 1
DEFAULT_MAX_ITER = 300  # an iteration costs O(k log n); Lloyd in 1-D converges well before
CODEBOOK_ENTRY_BITS = 32  # centroids are stored as fp32
SUM_BLOCK = 4096  # values per block of the float64 partial sums of large arrays
FULL_PREFIX_MAX = 1 << 22  # up to this many values, a full float64 prefix sum
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


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


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


class _RangeSums:
    """Sums of ``sorted_values[a:b]`` in float64: a full prefix sum for small arrays, per-block
    partial sums (plus the partial block at each end) for large ones."""

    def __init__(self, values: np.ndarray) -> None:
        block = 1 if len(values) <= FULL_PREFIX_MAX else SUM_BLOCK
        n_blocks = len(values) // block
        self.block = block
        blocks = values[: n_blocks * block].reshape(n_blocks, block)
        self.values, self.blocks = values, blocks
        self.prefix = np.concatenate([[0.0], np.cumsum(blocks.sum(axis=1, dtype=np.float64))])

    def prefix_sums(self, ends: np.ndarray) -> np.ndarray:
        """``sum(values[:e])`` for every ``e`` in ``ends``."""
        full = ends // self.block
        out = self.prefix[full]
        if self.block > 1:  # add the partial block before each end (k + 1 short sums)
            for i, (e, b) in enumerate(zip(ends, full, strict=True)):
                out[i] += self.values[b * self.block : e].sum(dtype=np.float64)
        return out


def _initial_centroids(sorted_values: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    """Sorted float64 start centroids ``[k]``."""
    n = len(sorted_values)
    if init == "linear":  # Deep Compression Sec. 3.2: evenly spaced over [min, max]
        return np.linspace(float(sorted_values[0]), float(sorted_values[-1]), k)
    if init == "density":  # evenly spaced in the CDF: the (i + 0.5) / k quantiles
        positions = ((np.arange(k) + 0.5) / k * n).astype(np.int64)
        return sorted_values[np.minimum(positions, n - 1)].astype(np.float64)
    if init == "random":  # Forgy: k distinct observations (repeats only when n < k)
        picks = np.random.default_rng(seed).choice(n, size=k, replace=n < k)
        return np.sort(sorted_values[picks].astype(np.float64))
    raise ConfigError(f"init: expected one of {', '.join(KMEANS_INITS)}, got {init!r}")


def _boundaries(centroids: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Midpoints between neighbouring centroids, rounded down to ``dtype``.

    Rounding down keeps ``v <= boundary`` exact for values ``v`` of ``dtype``.
    """
    mid = (centroids[:-1] + centroids[1:]) / 2  # float64 [k-1]
    low = mid.astype(dtype)
    return np.where(low.astype(np.float64) > mid, np.nextafter(low, dtype.type(-np.inf)), low)


def _lloyd_sorted(
    sorted_values: np.ndarray, centroids: np.ndarray, max_iter: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Lloyd iterations on sorted values; returns (centroids float64, boundaries, iterations)."""
    n, sums = len(sorted_values), _RangeSums(sorted_values)
    ends, iterations = None, 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        bounds = _boundaries(centroids, sorted_values.dtype)
        new_ends = np.searchsorted(sorted_values, bounds, side="right")  # cluster i: (b_i-1, b_i]
        if ends is not None and np.array_equal(new_ends, ends):
            break
        ends = new_ends
        edges = np.concatenate([[0], ends, [n]])
        counts, totals = np.diff(edges), np.diff(sums.prefix_sums(edges))
        means = totals / np.maximum(counts, 1)
        # a mean lies within its cluster's range; clipping absorbs prefix-sum rounding so
        # centroids stay ordered even for clusters of tiny values next to large ones
        lowest = sorted_values[np.minimum(edges[:-1], n - 1)]
        highest = sorted_values[np.maximum(edges[1:] - 1, 0)]
        means = np.clip(means, lowest, highest)
        centroids = np.where(counts > 0, means, centroids)  # an empty cluster keeps its centroid
    return centroids, _boundaries(centroids, sorted_values.dtype), iterations


def kmeans_1d(
    values: Tensor,
    k: int,
    init: KMeansInit = "linear",
    max_iter: int = DEFAULT_MAX_ITER,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Cluster the scalars in ``values`` into ``k`` centroids (Lloyd's algorithm, exact).

    Ties go to the lower centroid (as ``argmin`` of distances would); an empty cluster keeps
    its centroid. The input is not modified.

    Args:
        values: Float tensor of any shape (flattened); must hold at least one value.
        k: Number of centroids (>= 1).
        init: ``"linear"``, ``"density"`` or ``"random"`` (see :class:`KMeansConfig`).
        max_iter: Lloyd iterations at most.
        seed: Seed of the ``"random"`` initialization.

    Returns:
        ``(centroids, assignments)``: centroids ascending ``[k]`` in ``values``' float dtype
        (float32 for half types), assignments ``int64`` indices shaped like ``values``.

    Example:
        >>> c, a = kmeans_1d(torch.tensor([1.0, 2.0, 9.0, 10.0, 11.0]), k=2, init="density")
        >>> c.tolist(), a.tolist()
        ([1.5, 10.0], [0, 0, 1, 1, 1])
    """
    if not _is_int(k) or k < 1:
        raise ConfigError(f"k: expected an integer >= 1, got {k!r}")
    if not _is_int(max_iter) or max_iter < 1:
        raise ConfigError(f"max_iter: expected an integer >= 1, got {max_iter!r}")
    if values.numel() == 0 or not values.is_floating_point():
        raise ConfigError("values: expected a non-empty floating-point tensor")
    dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
    flat = values.detach().reshape(-1).to(device="cpu", dtype=dtype)
    if not bool(torch.isfinite(flat).all()):
        raise ConfigError("values: contains NaN or infinity")
    sorted_values = np.sort(flat.numpy())
    start = _initial_centroids(sorted_values, k, init, seed)
    centroids, bounds, _ = _lloyd_sorted(sorted_values, start, max_iter)
    assignments = torch.bucketize(flat, torch.from_numpy(bounds), right=False)  # [n]
    return torch.from_numpy(centroids).to(dtype), assignments.view(values.shape)


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
    """Storage format of a k-means layer for ``slimtorch.profile.size``: ``bits``-bit indices,
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
