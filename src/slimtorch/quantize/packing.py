"""Sub-byte integer storage: ``bits``-wide values packed into a little-endian bit stream.

Value ``i`` occupies stream bits ``[i*bits, (i+1)*bits)``, least significant bit first; byte
``k`` holds stream bits ``8k .. 8k+7`` with stream bit ``8k`` in its least significant bit. So
two int4 values share a byte with the first in the low nibble, four int2 values fill a byte from
the bottom, and 3-bit values straddle bytes. Signed values are stored in ``bits``-bit two's
complement. The packed size is ``ceil(numel * bits / 8)`` bytes, which is what
``slimtorch.core.size`` counts (plus scales and zero points).

:func:`pack_int4_cpu` / :func:`unpack_int4_cpu` hold the other 4-bit layout in use: torch's
packed int4 weight for ``aten._weight_int4pack_mm_for_cpu`` (the LLM int4 Linear of
``slimtorch.llm.kernels``), which interleaves rows and so cannot be cut or concatenated.

Example:
    >>> import torch
    >>> p = pack(torch.tensor([1, -2, 7], dtype=torch.int8), bits=4, signed=True)
    >>> p.data.tolist(), unpack(p).tolist()
    ([225, 7], [1, -2, 7])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from slimtorch.errors import ConfigError

MAX_PACK_BITS = 16
BYTE_BITS = 8
INT4_INNER_K_TILES = 1  # layout argument of aten._convert_weight_to_int4pack_for_cpu
INT4_N_MULTIPLE = 16  # aten._convert_weight_to_int4pack_for_cpu needs N % 16 == 0
INT4_CODE_OFFSET = 8  # the int4 kernel computes (q - 8) * scale + zero


@dataclass(frozen=True)
class PackedTensor:
    """Packed integers: ``data`` is a 1-D uint8 tensor of ``packed_nbytes(numel, bits)`` bytes."""

    data: Tensor
    shape: tuple[int, ...]
    bits: int
    signed: bool

    @property
    def numel(self) -> int:
        """Number of packed values."""
        n = 1
        for d in self.shape:
            n *= d
        return n


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes that ``numel`` values of ``bits`` bits take: ``ceil(numel * bits / 8)``.

    Example:
        >>> packed_nbytes(5, 3)
        2
    """
    return -(-numel * bits // BYTE_BITS)


def _check(bits: int) -> None:
    if not isinstance(bits, int) or not 1 <= bits <= MAX_PACK_BITS:
        raise ConfigError(f"bits: expected 1..{MAX_PACK_BITS} for packing, got {bits!r}")


def _unsigned_field(q: Tensor, bits: int, signed: bool) -> Tensor:
    """Values as ``bits``-bit unsigned fields (int32), range-checked."""
    v = q.reshape(-1).to(torch.int32)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if v.numel() and (int(v.min()) < low or int(v.max()) > high):
        kind = "signed" if signed else "unsigned"
        raise ConfigError(
            f"values out of range for {kind} {bits}-bit packing: "
            f"[{int(v.min())}, {int(v.max())}] not in [{low}, {high}]"
        )
    return v & (2**bits - 1)


def pack(q: Tensor, bits: int, signed: bool) -> PackedTensor:
    """Pack integer ``q`` (any shape) into a bit stream.

    Args:
        q: integer tensor whose values fit ``bits`` (two's complement when ``signed``).
        bits: 1..16.
        signed: whether values are signed.

    Returns:
        A ``PackedTensor`` remembering shape, bits and signedness.

    Example:
        >>> pack(torch.tensor([1, 0, 1, 1], dtype=torch.uint8), 1, False).data.tolist()
        [13]
    """
    _check(bits)
    v = _unsigned_field(q, bits, signed)
    if BYTE_BITS % bits == 0:
        per = BYTE_BITS // bits
        v = torch.nn.functional.pad(v, (0, -v.numel() % per)).reshape(-1, per)
        shifts = torch.arange(per, dtype=torch.int32) * bits
        data = (v << shifts).sum(dim=1).to(torch.uint8)
    else:
        bit_idx = torch.arange(bits, dtype=torch.int32)
        stream = ((v[:, None] >> bit_idx) & 1).reshape(-1)
        stream = torch.nn.functional.pad(stream, (0, -stream.numel() % BYTE_BITS))
        weights = 1 << torch.arange(BYTE_BITS, dtype=torch.int32)
        data = (stream.reshape(-1, BYTE_BITS) * weights).sum(dim=1).to(torch.uint8)
    return PackedTensor(data.contiguous(), tuple(q.shape), bits, signed)


def unpack(packed: PackedTensor) -> Tensor:
    """Inverse of :func:`pack`: int8/uint8 for bits <= 8, int16/int32 for more.

    Example:
        >>> unpack(pack(torch.tensor([[3, -4]]), 3, True)).tolist()
        [[3, -4]]
    """
    bits, n = packed.bits, packed.numel
    _check(bits)
    if packed.data.numel() != packed_nbytes(n, bits):
        raise ConfigError(
            f"packed data has {packed.data.numel()} bytes; "
            f"{n} values of {bits} bits need {packed_nbytes(n, bits)}"
        )
    data = packed.data.to(torch.int32)
    if BYTE_BITS % bits == 0:
        shifts = torch.arange(BYTE_BITS // bits, dtype=torch.int32) * bits
        v = ((data[:, None] >> shifts) & (2**bits - 1)).reshape(-1)[:n]
    else:
        stream = ((data[:, None] >> torch.arange(BYTE_BITS, dtype=torch.int32)) & 1).reshape(-1)
        weights = 1 << torch.arange(bits, dtype=torch.int32)
        v = (stream[: n * bits].reshape(n, bits) * weights).sum(dim=1)
    if packed.signed:
        v = torch.where(v >= 2 ** (bits - 1), v - 2**bits, v)
    return v.to(_unpacked_dtype(bits, packed.signed)).reshape(packed.shape)


def _unpacked_dtype(bits: int, signed: bool) -> torch.dtype:
    if bits <= BYTE_BITS:
        return torch.int8 if signed else torch.uint8
    return torch.int16 if signed else torch.int32


def pack_int4_cpu(codes: Tensor) -> Tensor:
    """Unsigned 4-bit codes ``[N, K]`` (0..15) in torch's packed int4 CPU weight layout.

    Args:
        codes: integer codes, ``N`` a multiple of ``INT4_N_MULTIPLE``.

    Returns:
        The packed tensor for ``aten._weight_int4pack_mm_for_cpu``.

    Example:
        >>> codes = torch.randint(0, 16, (16, 64), generator=torch.Generator().manual_seed(0))
        >>> torch.equal(unpack_int4_cpu(pack_int4_cpu(codes), 16, 64, 32), codes.int())
        True
    """
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(
        codes.to(torch.int32), INT4_INNER_K_TILES
    )


def unpack_int4_cpu(packed: Tensor, out_features: int, in_features: int, group_size: int) -> Tensor:
    """Inverse of :func:`pack_int4_cpu`: the codes (int32 ``[N, K]``), recovered by running the
    kernel on the identity with unit scales and zero offsets (exact in bf16).

    Args:
        packed: a packed int4 weight.
        out_features, in_features: ``N`` and ``K``.
        group_size: a group size the kernel accepts for ``K``.
    """
    eye = torch.eye(in_features, dtype=torch.bfloat16)
    n_groups = in_features // group_size
    ones = torch.stack(
        [torch.ones(n_groups, out_features), torch.zeros(n_groups, out_features)], -1
    ).to(torch.bfloat16)
    cols = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, packed, group_size, ones)
    return (cols.T.float() + INT4_CODE_OFFSET).round().to(torch.int32)  # [N, K]
