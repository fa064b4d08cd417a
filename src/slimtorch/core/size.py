"""Model size in bits, aware of sparsity, bit width, codebooks and quantization scales.

Every tensor is viewed as a matrix ``rows x cols`` with ``rows = shape[0]`` and
``cols = numel // rows`` (a conv weight ``[O, I, kh, kw]`` becomes ``O x I*kh*kw``); tensors
with fewer than two dims are one row. That one view serves the sparse layouts and the scale
granularities alike.

Counting rules (``b`` = ``WeightFormat.bits``, ``nnz`` = nonzeros, ``n`` = numel):

- ``dense``: ``n * b`` value bits, no index.
- ``csr``: ``nnz * b`` value bits; index ``nnz * col_bits + (rows + 1) * row_ptr_bits`` with
  ``col_bits = index_bits or ceil(log2(cols))`` and ``row_ptr_bits = ceil(log2(nnz + 1))``,
  the narrowest unsigned width that holds every row pointer ``0..nnz`` (widths are at least 1).
- ``bitmask``: ``n`` mask bits plus ``nnz * b`` value bits.
- ``relative`` (Deep Compression, Han et al. 2016): each stored entry carries the gap to the
  previous stored entry in ``index_bits`` bits (default 5 for tensors of at most 2 dims, 8 for
  convolutions). Gaps are taken over the flattened tensor, the first one from position 0. A gap
  ``g`` above ``2**index_bits - 1`` needs ``ceil(g / (2**index_bits - 1)) - 1`` filler zero
  entries, and each filler costs value bits as well as index bits.
- ``auto``: the smallest of dense, csr and bitmask; ties go to that order (dense first).

A codebook (k-means weight sharing) adds ``2**b * codebook_entry_bits`` bits; the stored values
are then ``b``-bit indices. Scales and zero points count one per block of the granularity:
``tensor`` one, ``channel`` one per row, ``group`` one per ``group_size`` values along each row
(the last group may be partial).

Example:
    >>> import torch
    >>> w = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    >>> tensor_size_bits(w, WeightFormat(bits=8, sparse="bitmask")).total_bits
    12
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from slimtorch.errors import ConfigError

Granularity = Literal["none", "tensor", "channel", "group"]
SparseLayout = Literal["auto", "dense", "csr", "bitmask", "relative"]

# Han, Mao & Dally, "Deep Compression", ICLR 2016, Sec. 3: relative index bits per entry.
DEEP_COMPRESSION_FC_INDEX_BITS = 5
DEEP_COMPRESSION_CONV_INDEX_BITS = 8
MAX_BITS = 64

_SUB_BYTE_DTYPE_BITS = {
    getattr(torch, f"{kind}{bits}"): bits
    for kind in ("uint", "int")
    for bits in range(1, 8)
    if hasattr(torch, f"{kind}{bits}")
}


@dataclass(frozen=True)
class WeightFormat:
    """How one tensor is stored.

    Args:
        bits: Bits per stored value, or per codebook index when ``codebook`` is true.
        codebook: Values are indices into ``2**bits`` shared centroids (k-means).
        codebook_entry_bits: Bits per centroid.
        granularity: Which values share a scale: ``"none"`` (no scales), ``"tensor"``,
            ``"channel"`` (one per row) or ``"group"`` (``group_size`` values along a row).
        group_size: Values per group; required with, and only with, ``granularity="group"``.
        scale_bits: Bits per scale.
        zero_point_bits: Bits per zero point; 0 means symmetric (no zero points).
        sparse: How zero values are stored (see the module docstring): ``"auto"`` picks the
            smallest of dense, csr and bitmask; ``"relative"`` is Deep Compression's gap
            coding.
        index_bits: Gap bits for ``"relative"``; column-index bits for ``"csr"`` (and the csr
            candidate of ``"auto"``). None uses the defaults in the module docstring.

    Example:
        >>> WeightFormat(bits=4, granularity="group", group_size=128, scale_bits=16).bits
        4
    """

    bits: int = 32
    codebook: bool = False
    codebook_entry_bits: int = 32
    granularity: Granularity = "none"
    group_size: int | None = None
    scale_bits: int = 32
    zero_point_bits: int = 0
    sparse: SparseLayout = "auto"
    index_bits: int | None = None

    def __post_init__(self) -> None:
        _check_range("bits", self.bits, 1, MAX_BITS)
        _check_range("codebook_entry_bits", self.codebook_entry_bits, 1, MAX_BITS)
        _check_range("scale_bits", self.scale_bits, 1, MAX_BITS)
        _check_range("zero_point_bits", self.zero_point_bits, 0, MAX_BITS)
        if self.granularity not in ("none", "tensor", "channel", "group"):
            raise ConfigError(f"granularity: unknown {self.granularity!r}")
        if (self.granularity == "group") != (self.group_size is not None):
            raise ConfigError("group_size: set it with granularity='group' and only then")
        if self.group_size is not None:
            _check_range("group_size", self.group_size, 1, None)
        if self.sparse not in ("auto", "dense", "csr", "bitmask", "relative"):
            raise ConfigError(f"sparse: unknown layout {self.sparse!r}")
        if self.index_bits is not None:
            if self.sparse in ("dense", "bitmask"):
                raise ConfigError(f"index_bits: not used by sparse={self.sparse!r}")
            _check_range("index_bits", self.index_bits, 1, MAX_BITS)


@dataclass(frozen=True)
class TensorSize:
    """Bits one tensor takes in a given format; ``total_bits`` is the sum of the parts.

    ``values_bits`` counts stored values (for ``relative`` including filler entries);
    ``index_bits`` counts sparse indices, masks and row pointers.
    """

    numel: int
    nonzeros: int
    values_bits: int
    index_bits: int
    codebook_bits: int
    scale_bits: int
    zero_point_bits: int
    total_bits: int
    layout: str

    @property
    def total_bytes(self) -> int:
        """``total_bits`` rounded up to whole bytes."""
        return -(-self.total_bits // 8)


def _check_range(name: str, value: int, low: int, high: int | None) -> None:
    if not isinstance(value, int) or value < low or (high is not None and value > high):
        upper = "" if high is None else f"..{high}"
        raise ConfigError(f"{name}: expected an integer in {low}{upper}, got {value!r}")


def dtype_bits(dtype: torch.dtype) -> int:
    """Bits one element of ``dtype`` takes (bool counts 1, ``torch.uint4`` counts 4).

    Args:
        dtype: A torch dtype.

    Returns:
        The element width in bits.

    Example:
        >>> dtype_bits(torch.float16)
        16
    """
    if dtype == torch.bool:
        return 1
    return _SUB_BYTE_DTYPE_BITS.get(dtype, dtype.itemsize * 8)


def _matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    rows = shape[0] if len(shape) >= 2 else 1
    return rows, math.prod(shape) // rows if rows else 0


def _width(n: int) -> int:
    """Unsigned bits needed to hold the values ``0..n-1``, i.e. ``ceil(log2(n))``, at least 1."""
    return max(1, (n - 1).bit_length())


def _csr_index_bits(t: Tensor, nnz: int, fmt: WeightFormat) -> int:
    rows, cols = _matrix_shape(t.shape)
    need = _width(cols)
    col_bits = need if fmt.index_bits is None else fmt.index_bits
    if col_bits < need:
        raise ConfigError(f"index_bits: {col_bits} cannot address {cols} columns (need {need})")
    return nnz * col_bits + (rows + 1) * _width(nnz + 1)


def relative_index_fillers(t: Tensor, index_bits: int) -> int:
    """Filler zero entries Deep Compression's relative indexing needs for ``t``.

    Args:
        t: Any tensor; its nonzero positions in flattened order are used.
        index_bits: Bits per gap; gaps above ``2**index_bits - 1`` need fillers.

    Returns:
        The number of filler entries.

    Example:
        >>> relative_index_fillers(torch.tensor([0.0, 1.0, 0, 0, 2.0] + [0.0] * 10 + [3.0]), 3)
        1
    """
    max_gap = 2**index_bits - 1
    positions = torch.flatten(t).nonzero().flatten()
    gaps = torch.diff(positions, prepend=positions.new_zeros(1))
    return int(((gaps + max_gap - 1) // max_gap - 1).clamp(min=0).sum())


def _default_relative_bits(t: Tensor) -> int:
    return DEEP_COMPRESSION_CONV_INDEX_BITS if t.dim() > 2 else DEEP_COMPRESSION_FC_INDEX_BITS


def _layout_bits(t: Tensor, nnz: int, layout: str, fmt: WeightFormat) -> tuple[int, int]:
    """(value bits, index bits) of ``t`` in one concrete layout."""
    n, b = t.numel(), fmt.bits
    if layout == "dense":
        return n * b, 0
    if layout == "csr":
        return nnz * b, _csr_index_bits(t, nnz, fmt)
    if layout == "bitmask":
        return nnz * b, n
    gap_bits = fmt.index_bits or _default_relative_bits(t)
    entries = nnz + relative_index_fillers(t, gap_bits)
    return entries * b, entries * gap_bits


def _choose_layout(t: Tensor, nnz: int, fmt: WeightFormat) -> tuple[str, int, int]:
    if fmt.sparse != "auto":
        return (fmt.sparse, *_layout_bits(t, nnz, fmt.sparse, fmt))
    candidates = [(lay, *_layout_bits(t, nnz, lay, fmt)) for lay in ("dense", "csr", "bitmask")]
    return min(candidates, key=lambda c: c[1] + c[2])


def scale_count(shape: Sequence[int], fmt: WeightFormat) -> int:
    """Number of scales (and zero points) a tensor of ``shape`` carries under ``fmt``.

    Args:
        shape: Tensor shape; viewed as ``rows x cols`` as in the module docstring.
        fmt: The format whose granularity applies.

    Returns:
        0 for ``"none"``, else ``ceil(rows / block_rows) * ceil(cols / block_cols)``.

    Example:
        >>> scale_count((8, 300), WeightFormat(granularity="group", group_size=128))
        24
    """
    rows, cols = _matrix_shape(shape)
    if fmt.granularity == "none" or rows * cols == 0:
        return 0
    block_rows = rows if fmt.granularity == "tensor" else 1
    block_cols = fmt.group_size if fmt.granularity == "group" else cols
    return -(-rows // block_rows) * -(-cols // block_cols)


def tensor_size_bits(t: Tensor, fmt: WeightFormat | None = None) -> TensorSize:
    """Bits ``t`` takes when stored in ``fmt``.

    Args:
        t: The tensor; zeros in it are what sparse layouts skip.
        fmt: Storage format; None means ``WeightFormat(bits=dtype_bits(t.dtype))``: the
            tensor's own width, in the smallest of dense, csr and bitmask.

    Returns:
        A ``TensorSize`` with every part counted (see the module docstring).

    Example:
        >>> size = tensor_size_bits(torch.eye(4), WeightFormat(bits=16))
        >>> size.layout, size.total_bits
        ('bitmask', 80)
    """
    fmt = fmt or WeightFormat(bits=dtype_bits(t.dtype))
    t = t.detach()
    nnz = int(torch.count_nonzero(t))
    layout, values, index = _choose_layout(t, nnz, fmt)
    codebook = 2**fmt.bits * fmt.codebook_entry_bits if fmt.codebook else 0
    scales = scale_count(t.shape, fmt)
    scale_bits, zero_bits = scales * fmt.scale_bits, scales * fmt.zero_point_bits
    total = values + index + codebook + scale_bits + zero_bits
    return TensorSize(t.numel(), nnz, values, index, codebook, scale_bits, zero_bits, total, layout)


PRUNE_ORIG_SUFFIX = "_orig"  # torch.nn.utils.prune keeps the dense tensor as <name>_orig
PRUNE_MASK_SUFFIX = "_mask"  # ... and the 0/1 mask as the buffer <name>_mask


def effective_parameters(model: nn.Module) -> dict[str, Tensor]:
    """Parameters as they will be stored, by qualified name, shared tensors once.

    A weight pruned with ``torch.nn.utils.prune`` (``<name>_orig`` parameter plus
    ``<name>_mask`` buffer) is reported once, as ``<name>`` = orig * mask: the mask is an
    artifact of training, not something a compressed model stores.

    Example:
        >>> import torch.nn.utils.prune as prune
        >>> m = prune.l1_unstructured(nn.Linear(4, 2), "weight", amount=0.5)
        >>> sorted(effective_parameters(m)), int((effective_parameters(m)["weight"] != 0).sum())
        (['bias', 'weight'], 4)
    """
    tensors = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for name in [n for n in tensors if n.endswith(PRUNE_ORIG_SUFFIX)]:
        base = name[: -len(PRUNE_ORIG_SUFFIX)]
        mask = buffers.get(base + PRUNE_MASK_SUFFIX)
        if mask is not None:
            tensors[base] = (tensors.pop(name) * mask).detach()
    return tensors


def _stored_tensors(model: nn.Module) -> dict[str, Tensor]:
    """Effective parameters plus persistent buffers (pruning masks excluded)."""
    tensors = effective_parameters(model)
    persistent = model.state_dict(keep_vars=True).keys()
    for n, b in model.named_buffers():
        is_mask = n.endswith(PRUNE_MASK_SUFFIX) and n[: -len(PRUNE_MASK_SUFFIX)] in tensors
        if n in persistent and not is_mask:
            tensors[n] = b
    return tensors


def _matches(pattern: str, name: str) -> bool:
    module = name.rpartition(".")[0]
    if pattern in (name, module):
        return True
    try:
        return any(re.fullmatch(pattern, s) for s in (name, module))
    except re.error as err:
        raise ConfigError(f"formats: {pattern!r} is not a valid regex ({err})") from err


def _format_for(
    name: str, t: Tensor, formats: Mapping[str, WeightFormat], default: WeightFormat | None
) -> WeightFormat | None:
    for pattern, fmt in formats.items():
        if _matches(pattern, name):
            return fmt
    return default if default is not None and t.is_floating_point() else None


def model_size_bits(
    model: nn.Module,
    formats: Mapping[str, WeightFormat] | None = None,
    default: WeightFormat | None = None,
) -> dict[str, TensorSize]:
    """Size of every stored tensor of ``model`` (parameters and persistent buffers).

    Args:
        model: The model; it is only read.
        formats: Per-tensor formats. A key matches a tensor when it equals the tensor's
            qualified name or its module's name, or ``re.fullmatch``-es either; the first
            matching key (in mapping order) wins.
        default: Format for floating-point tensors no key matches. Unmatched tensors
            otherwise (and all unmatched integer/bool tensors such as ``num_batches_tracked``)
            count at their own dtype width with ``sparse="auto"`` (so a tensor without zeros
            counts ``numel * dtype bits``; a pruned one, its smallest sparse layout).

    Returns:
        ``{qualified name: TensorSize}`` in ``named_parameters()`` then ``named_buffers()``
        order; tied parameters appear once.

    Example:
        >>> m = nn.Linear(4, 2)
        >>> sizes = model_size_bits(m, {"weight": WeightFormat(bits=8, sparse="dense")})
        >>> sizes["weight"].total_bits, sizes["bias"].total_bits
        (64, 64)
    """
    formats = formats or {}
    return {
        name: tensor_size_bits(t, _format_for(name, t, formats, default))
        for name, t in _stored_tensors(model).items()
    }
