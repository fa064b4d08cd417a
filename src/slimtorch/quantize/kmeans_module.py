"""Codebook (k-means weight-sharing) layers: packed indices plus a small table of centroids.

A codebook layer stores its weight as ``bits``-bit indices packed into bytes (``packed``, a
``uint8`` buffer) and a table of ``2**bits`` centroids (``codebook``, a float32 parameter).
The forward pass decodes ``weight = codebook[indices]`` and runs the ordinary linear or
convolution; the work is in the pure functions :func:`pack_indices`,
:func:`unpack_indices` and :func:`codebook_decode`. Because ``codebook`` is the only float
weight and the decode is a gather, autograd gives each centroid the sum of the gradients of
the weights that share it (the trained quantization of Han et al., "Deep Compression", 2016),
while the assignments stay fixed.

A layer built from a pruned weight reserves index ``zero_index`` for an exact zero: that
entry is masked to 0 in every forward pass, so pruned weights stay exactly zero and get no
gradient.

Packing is little-endian within each byte: value ``i`` occupies bits
``[i * bits, (i + 1) * bits)`` of the bit stream, byte ``j`` holding stream bits
``[8 j, 8 j + 8)`` with the lowest bit first.

Example:
    >>> import torch
    >>> packed = pack_indices(torch.tensor([1, 2, 3, 0]), bits=2)
    >>> packed.tolist(), unpack_indices(packed, bits=2, numel=4).tolist()
    ([57], [1, 2, 3, 0])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimtorch.errors import ConfigError
from slimtorch.quantize.packing import PackedTensor, pack, unpack

MAX_INDEX_BITS = 16
NO_ZERO_INDEX = -1  # zero_index when the layer keeps no reserved exact-zero entry

_CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= MAX_INDEX_BITS:
        raise ConfigError(f"bits: expected an integer in 1..{MAX_INDEX_BITS}, got {bits!r}")


def pack_indices(indices: Tensor, bits: int) -> Tensor:
    """Pack integer indices in ``[0, 2**bits)`` into a flat ``uint8`` tensor.

    A thin wrapper over :func:`slimtorch.quantize.packing.pack` (unsigned fields).

    Args:
        indices: Integer tensor of any shape (flattened in row-major order).
        bits: Bits per index, 1..16.

    Returns:
        ``uint8`` tensor of ``ceil(numel * bits / 8)`` bytes (layout in the module docstring).

    Example:
        >>> pack_indices(torch.tensor([5, 10]), bits=4).tolist()
        [165]
    """
    _check_bits(bits)
    return pack(indices.reshape(-1), bits, signed=False).data


def unpack_indices(packed: Tensor, bits: int, numel: int) -> Tensor:
    """Inverse of :func:`pack_indices`: the ``numel`` indices as ``int64``.

    Args:
        packed: ``uint8`` tensor from :func:`pack_indices`.
        bits: Bits per index used when packing.
        numel: Number of indices to read back.

    Returns:
        ``int64`` tensor ``[numel]``.

    Example:
        >>> unpack_indices(torch.tensor([165], dtype=torch.uint8), bits=4, numel=2).tolist()
        [5, 10]
    """
    _check_bits(bits)
    if packed.dtype != torch.uint8:
        raise ConfigError(f"packed: expected uint8 bytes, got {packed.dtype}")
    return unpack(PackedTensor(packed.reshape(-1), (numel,), bits, False)).long()


def codebook_decode(
    indices: Tensor, codebook: Tensor, shape: tuple[int, ...], zero_index: int
) -> Tensor:
    """Dense weight from indices and centroids: ``codebook[indices].view(shape)``.

    Args:
        indices: ``int64`` indices ``[numel]``.
        codebook: Centroids ``[2**bits]`` (gradients flow into it).
        shape: Weight shape.
        zero_index: Entry forced to exactly 0 (no gradient), or ``NO_ZERO_INDEX``.

    Returns:
        The weight tensor of ``shape``.

    Example:
        >>> codebook_decode(torch.tensor([1, 0]), torch.tensor([9.0, 2.0]), (2,), 0).tolist()
        [2.0, 0.0]
    """
    if zero_index != NO_ZERO_INDEX:
        keep = torch.ones_like(codebook)
        keep[zero_index] = 0.0
        codebook = codebook * keep  # [K]; the reserved entry is exactly 0, gradient 0
    return codebook[indices].view(shape)


class CodebookLayer(nn.Module):
    """Shared state of codebook layers: ``packed`` indices, ``codebook``, optional ``bias``.

    Args:
        indices: Integer assignments, same shape as the weight, values < ``2**bits``.
        codebook: Centroids ``[2**bits]``.
        bits: Index width (1..16).
        bias: Bias of the replaced layer, or None.
        zero_index: Codebook entry reserved for exact zeros, or ``NO_ZERO_INDEX``.
    """

    def __init__(
        self,
        indices: Tensor,
        codebook: Tensor,
        bits: int,
        bias: Tensor | None = None,
        zero_index: int = NO_ZERO_INDEX,
    ) -> None:
        super().__init__()
        _check_bits(bits)
        if codebook.shape != (2**bits,):
            raise ConfigError(f"codebook: expected shape ({2**bits},), got {tuple(codebook.shape)}")
        self.bits, self.zero_index = bits, zero_index
        self.weight_shape = tuple(indices.shape)
        self.register_buffer("packed", pack_indices(indices, bits))
        self.codebook = nn.Parameter(codebook.detach().float().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self._cache: tuple[tuple[int, int], Tensor] | None = None

    def indices(self) -> Tensor:
        """The unpacked ``int64`` assignments (cached until ``packed`` changes)."""
        key = (self.packed.data_ptr(), self.packed._version)
        if self._cache is None or self._cache[0] != key:
            numel = math.prod(self.weight_shape)
            # Never cache an inference tensor (first call under evaluate's inference_mode):
            # training later indexes with it, and autograd cannot save inference tensors.
            with torch.inference_mode(False):
                self._cache = (key, unpack_indices(self.packed, self.bits, numel))
        return self._cache[1]

    @property
    def weight(self) -> Tensor:
        """The decoded dense weight (differentiable with respect to ``codebook``)."""
        return codebook_decode(self.indices(), self.codebook, self.weight_shape, self.zero_index)

    def extra_repr(self) -> str:
        zero = "" if self.zero_index == NO_ZERO_INDEX else f", zero_index={self.zero_index}"
        return f"weight_shape={self.weight_shape}, bits={self.bits}{zero}"


class CodebookLinear(CodebookLayer):
    """``nn.Linear`` whose weight is a codebook of ``2**bits`` centroids and packed indices.

    Example:
        >>> layer = CodebookLinear(torch.tensor([[0, 1]]), torch.tensor([0.5, -1.0]), bits=1)
        >>> layer(torch.tensor([[2.0, 3.0]])).tolist()
        [[-2.0]]
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)  # [..., out]


class CodebookConv(CodebookLayer):
    """A 1-, 2- or 3-d convolution with a codebook weight (zero padding only).

    Args:
        indices, codebook, bits, bias, zero_index: As for :class:`CodebookLayer`.
        stride, padding, dilation, groups: As in the replaced ``nn.ConvNd``.

    Example:
        >>> conv = CodebookConv(torch.zeros(1, 1, 1, 1, dtype=torch.long),
        ...                     torch.tensor([2.0, 0.0]), bits=1)
        >>> conv(torch.ones(1, 1, 2, 2)).tolist()
        [[[[2.0, 2.0], [2.0, 2.0]]]]
    """

    def __init__(
        self,
        indices: Tensor,
        codebook: Tensor,
        bits: int,
        bias: Tensor | None = None,
        zero_index: int = NO_ZERO_INDEX,
        stride: tuple[int, ...] | int = 1,
        padding: tuple[int, ...] | int | str = 0,
        dilation: tuple[int, ...] | int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(indices, codebook, bits, bias, zero_index)
        dims = indices.dim() - 2
        if dims not in _CONV_FUNCTIONS:
            raise ConfigError(f"indices: expected a 3-5 dim conv weight, got {indices.dim()}")
        self.conv = _CONV_FUNCTIONS[dims]
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


def codebook_layer_like(
    module: nn.Module, indices: Tensor, codebook: Tensor, bits: int, zero_index: int
) -> CodebookLayer:
    """A codebook shell replacing ``module`` (an ``nn.Linear`` or zero-padded ``nn.ConvNd``).

    Args:
        module: The layer being replaced; its bias and conv geometry are copied.
        indices: Assignments shaped like ``module``'s weight.
        codebook: Centroids ``[2**bits]``.
        bits: Index width.
        zero_index: Reserved exact-zero entry, or ``NO_ZERO_INDEX``.

    Returns:
        A :class:`CodebookLinear` or :class:`CodebookConv`.

    Example:
        >>> shell = codebook_layer_like(nn.Linear(2, 1), torch.tensor([[0, 1]]),
        ...                             torch.tensor([1.0, 2.0]), 1, NO_ZERO_INDEX)
        >>> type(shell).__name__, shell.weight.tolist()
        ('CodebookLinear', [[1.0, 2.0]])
    """
    bias = getattr(module, "bias", None)
    if isinstance(module, nn.Linear):
        return CodebookLinear(indices, codebook, bits, bias, zero_index)
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        if module.padding_mode != "zeros":
            raise ConfigError(f"padding_mode {module.padding_mode!r}: only 'zeros' is supported")
        geometry = (module.stride, module.padding, module.dilation, module.groups)
        return CodebookConv(indices, codebook, bits, bias, zero_index, *geometry)
    raise ConfigError(f"cannot build a codebook layer for {type(module).__name__}")
