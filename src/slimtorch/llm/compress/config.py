"""Frozen, validated configs for every LLM compression method (one dataclass per algorithm).

Each config carries a ``version`` so a saved report says which rules produced it. Granularity
is data: ``group_size=None`` means one scale per output channel (per-channel), an integer means
groups of that many consecutive input columns inside each output row.

Example:
    >>> RTNConfig(bits=4, group_size=128).bits_per_weight()
    4.25
    >>> WandaConfig(sparsity=0.5, nm=(2, 4)).nm
    (2, 4)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from slimtorch.errors import ConfigError
from slimtorch.quantize.primitives import PerChannel, PerGroup, QuantSpec

CONFIG_VERSION = 1
WEIGHT_BITS = (2, 3, 4, 8)
SCALE_BITS = 16  # each group stores an fp16 scale and an fp16 minimum (llama.cpp Q4_1 style)
SCALE_EPS = 1e-8  # smallest grid step, so constant groups do not divide by zero
# AWQ (Lin et al. 2024, llm-awq auto_scale/auto_clip): 20 grid points for alpha in [0, 1),
# clipping shrinks the max down to 50% in 20 steps on 512 sampled tokens.
AWQ_SCALE_GRID = 20
AWQ_CLIP_GRID = 20
AWQ_CLIP_MAX_SHRINK = 0.5
AWQ_CLIP_TOKENS = 512
# The alpha grid's loss and the clipping search read whole calibration sequences spread over
# the set, at most this many tokens (the activation statistics s_X use every token).
AWQ_SEARCH_TOKENS = 1024
# AutoAWQ's "duo scaling": s = s_X^alpha / s_W^(1 - alpha) (s_W: mean |w| per input channel,
# each group normalised by its max |w|).
AWQ_SCALE_SEARCHES = ("x", "duo", "both")
AWQ_SOLVERS = ("rtn", "gptq")
AWQ_CLIP_MODES = ("sym", "asym")
# GPTQ / SparseGPT (Frantar et al. 2022/2023): 1% of the mean Hessian diagonal as damping,
# lazy batch updates over blocks of 128 columns.
GPTQ_PERCDAMP = 0.01
GPTQ_BLOCK_SIZE = 128
KMEANS_ITERS = 100  # Lloyd iterations at most (stops once no cluster boundary moves)


def _check_bits(bits: int) -> None:
    if bits not in WEIGHT_BITS:
        raise ConfigError(f"bits: expected one of {WEIGHT_BITS}, got {bits}")


def _check_group(group_size: int | None) -> None:
    if group_size is not None and group_size < 1:
        raise ConfigError(f"group_size: expected a positive integer or None, got {group_size}")


def _check_sparsity(sparsity: float, nm: tuple[int, int] | None) -> None:
    if nm is not None:
        n, m = nm
        if not (0 < n < m):
            raise ConfigError(f"nm: expected N:M with 0 < N < M (keep N of every M), got {n}:{m}")
    elif not (0.0 <= sparsity < 1.0):
        raise ConfigError(f"sparsity: expected a fraction in [0, 1), got {sparsity}")


def _overhead_bits(group_size: int | None, in_features: int) -> float:
    groups = 1 if group_size is None else -(-in_features // group_size)  # last may be short
    return 2 * SCALE_BITS * groups / in_features


@dataclass(frozen=True)
class RTNConfig:
    """Round-to-nearest weight-only quantization.

    Args:
        bits: bits per weight: 2, 3, 4 or 8.
        group_size: input columns per scale, or None (``channel`` on the command line) for
            one scale per output channel.
        symmetric: symmetric signed grid (scale only) instead of scale + minimum.
    """

    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = False
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        _check_group(self.group_size)

    def bits_per_weight(self, in_features: int = 4096) -> float:
        """Stored bits per weight including fp16 scale (and minimum) per group."""
        over = _overhead_bits(self.group_size, in_features)
        return self.bits + (over / 2 if self.symmetric else over)

    def spec(self) -> QuantSpec:
        """The grid as ``slimtorch.quantize``'s affine spec: per output channel or per group of
        input columns (a short last group allowed), unsigned with the group minimum as a real
        offset (``w ~ scale * q + min``), or signed symmetric.

        Example:
            >>> RTNConfig(4, 128).spec().granularity
            PerGroup(size=128, axis=-1, ragged=True)
        """
        granularity = (
            PerChannel(0) if self.group_size is None else PerGroup(self.group_size, ragged=True)
        )
        return QuantSpec(
            self.bits,
            symmetric=self.symmetric,
            signed=self.symmetric,
            granularity=granularity,
            scale_dtype="float64",  # as computed (a float64 weight keeps float64 scales)
            zero_point_domain="float",
            eps=SCALE_EPS,
        )


@dataclass(frozen=True)
class AWQConfig:
    """Activation-aware weight quantization: scale search, folding, clipping search, then RTN.

    Args:
        bits, group_size, symmetric: the final round-to-nearest grid (as ``RTNConfig``).
        scale_grid: number of alpha values tried in [0, 1).
        clip: run the weight-clipping search after scaling.
        clip_grid, clip_max_shrink, clip_tokens: clipping search resolution, the smallest
            fraction of the max tried, and how many calibration tokens it uses.
        scale_search: candidate scales: "x" (``s_X^alpha``, llm-awq), "duo"
            (``s_X^alpha / s_W^(1-alpha)``, AutoAWQ) or "both" grids.
        search_tokens: tokens (whole sequences) the scale and clipping searches measure on.
        solver: how the scaled (and clipped) weights are rounded: "rtn" (round to nearest)
            or "gptq" (GPTQ error feedback on the block's calibration Hessians, on the grid
            the clipping search chose).
        gptq_percdamp: GPTQ's damping when ``solver="gptq"``.
        gptq_act_order: GPTQ visits columns by decreasing Hessian diagonal (the grid is fixed
            before the solve either way: the clipped one, or static groups of the weight).
        clip_mode: "sym" clamps to ``[-m, m]`` (llm-awq); "asym" then refines the maximum
            and the minimum separately (see ``awq_clip``).
    """

    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = False
    scale_grid: int = AWQ_SCALE_GRID
    clip: bool = True
    clip_grid: int = AWQ_CLIP_GRID
    clip_max_shrink: float = AWQ_CLIP_MAX_SHRINK
    clip_tokens: int = AWQ_CLIP_TOKENS
    scale_search: str = field(default="x", metadata={"choices": AWQ_SCALE_SEARCHES})
    search_tokens: int = AWQ_SEARCH_TOKENS
    solver: str = field(default="rtn", metadata={"choices": AWQ_SOLVERS})
    gptq_percdamp: float = GPTQ_PERCDAMP
    clip_mode: str = field(default="sym", metadata={"choices": AWQ_CLIP_MODES})
    gptq_act_order: bool = False
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        _check_group(self.group_size)
        if min(self.scale_grid, self.clip_grid, self.clip_tokens, self.search_tokens) < 1:
            raise ConfigError(
                "scale_grid, clip_grid, clip_tokens, search_tokens: expected positive integers"
            )
        if not (0.0 <= self.clip_max_shrink < 1.0):
            raise ConfigError(f"clip_max_shrink: expected [0, 1), got {self.clip_max_shrink}")
        if self.scale_search not in AWQ_SCALE_SEARCHES:
            raise ConfigError(
                f"scale_search: expected one of {AWQ_SCALE_SEARCHES}, got {self.scale_search!r}"
            )
        if self.solver not in AWQ_SOLVERS:
            raise ConfigError(f"solver: expected one of {AWQ_SOLVERS}, got {self.solver!r}")
        if self.clip_mode not in AWQ_CLIP_MODES:
            raise ConfigError(
                f"clip_mode: expected one of {AWQ_CLIP_MODES}, got {self.clip_mode!r}"
            )
        if self.gptq_percdamp <= 0:
            raise ConfigError(f"gptq_percdamp: expected > 0, got {self.gptq_percdamp}")

    def rtn(self) -> RTNConfig:
        """The round-to-nearest grid AWQ ends with."""
        return RTNConfig(self.bits, self.group_size, self.symmetric)


@dataclass(frozen=True)
class GPTQConfig:
    """GPTQ: column-by-column quantization with second-order error feedback.

    Args:
        bits, group_size, symmetric: the grid (as ``RTNConfig``).
        block_size: columns per lazy batch update.
        percdamp: damping added to the Hessian diagonal, as a fraction of its mean.
        act_order: visit columns by decreasing Hessian diagonal (groups stay contiguous in
            the original column order: their scales are fixed before the solve).
    """

    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = False
    block_size: int = GPTQ_BLOCK_SIZE
    percdamp: float = GPTQ_PERCDAMP
    act_order: bool = False
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        _check_group(self.group_size)
        if self.block_size < 1:
            raise ConfigError(f"block_size: expected a positive integer, got {self.block_size}")
        if self.percdamp <= 0:
            raise ConfigError(f"percdamp: expected a positive fraction, got {self.percdamp}")

    def rtn(self) -> RTNConfig:
        """The grid GPTQ rounds onto."""
        return RTNConfig(self.bits, self.group_size, self.symmetric)


@dataclass(frozen=True)
class GroupKMeansConfig:
    """Non-uniform quantization: a k-means codebook of 2**bits values per output row or group
    (``slimtorch.quantize.KMeansConfig`` configures one codebook per CNN layer instead).

    Args:
        bits: codebook index bits (4 gives 16 centroids).
        group_size: input columns sharing a codebook, or None for one per output channel.
        iters: Lloyd iterations.
    """

    bits: int = 4
    group_size: int | None = None
    iters: int = KMEANS_ITERS
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        _check_group(self.group_size)
        if self.iters < 1:
            raise ConfigError(f"iters: expected a positive integer, got {self.iters}")

    def bits_per_weight(self, in_features: int = 4096) -> float:
        """Index bits plus an fp16 codebook per row or group."""
        groups = 1 if self.group_size is None else -(-in_features // self.group_size)
        return self.bits + (2**self.bits) * SCALE_BITS * groups / in_features


@dataclass(frozen=True)
class MagnitudeConfig:
    """Magnitude pruning: smallest |W| per layer (unstructured) or per M-group (N:M).

    Args:
        sparsity: fraction of weights set to zero (ignored when ``nm`` is set).
        nm: keep N of every M consecutive input weights, e.g. (2, 4) (``2:4`` on the
            command line).
    """

    sparsity: float = 0.5
    nm: tuple[int, int] | None = None
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        _check_sparsity(self.sparsity, self.nm)


@dataclass(frozen=True)
class WandaConfig:
    """Wanda: prune the smallest |W| * ||X||_2, compared within each output row.

    Args:
        sparsity: fraction of weights set to zero (ignored when ``nm`` is set).
        nm: keep N of every M consecutive input weights, e.g. (2, 4) (``2:4`` on the
            command line).
    """

    sparsity: float = 0.5
    nm: tuple[int, int] | None = None
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        _check_sparsity(self.sparsity, self.nm)


@dataclass(frozen=True)
class SparseGPTConfig:
    """SparseGPT: OBS-style mask selection and weight update, column block by block.

    Args:
        sparsity: fraction of weights set to zero (ignored when ``nm`` is set).
        nm: keep N of every M consecutive input weights, e.g. (2, 4) (``2:4`` on the
            command line).
        block_size: columns per lazy batch update (and per unstructured mask selection).
        percdamp: Hessian damping as a fraction of its mean diagonal.
    """

    sparsity: float = 0.5
    nm: tuple[int, int] | None = None
    block_size: int = GPTQ_BLOCK_SIZE
    percdamp: float = GPTQ_PERCDAMP
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        _check_sparsity(self.sparsity, self.nm)
        if self.block_size < 1 or self.percdamp <= 0:
            raise ConfigError("block_size and percdamp: expected positive values")


@dataclass(frozen=True)
class CalibConfig:
    """Calibration data: ``n_samples`` windows of ``seq_len`` tokens from a text file.

    Args:
        n_samples: windows taken, evenly spaced through the text.
        seq_len: tokens per window.
        batch_size: windows run through a block at once.
        propagate: "quantized" feeds each block the compressed previous block's outputs;
            "fp" feeds the original (uncompressed) outputs.
    """

    n_samples: int = 32
    seq_len: int = 512
    batch_size: int = 4
    propagate: str = "quantized"
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        if min(self.n_samples, self.seq_len, self.batch_size) < 1:
            raise ConfigError("n_samples, seq_len, batch_size: expected positive integers")
        if self.propagate not in ("quantized", "fp"):
            raise ConfigError(f"propagate: expected 'quantized' or 'fp', got {self.propagate!r}")
