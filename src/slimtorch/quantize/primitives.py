"""Linear (affine) quantization: ``r = S (q - Z)``, one code path for every granularity.

The mapping is the one of Jacob et al. (2018) and the course notes:

- ``S = (r_max - r_min) / (q_max - q_min)``, ``Z = round(q_min - r_min / S)`` (asymmetric; the
  range is first widened to include 0 so that real zero is exactly ``q = Z``);
- symmetric: ``S = max|r| / (2**(bits-1) - 1)`` and ``Z = 0`` (signed) or ``2**(bits-1)``
  (unsigned), the restricted range used by TensorRT and gpt-fast;
- ``q = clamp(round(r / S) + Z, q_min, q_max)``; ``r_hat = S (q - Z)``.

Granularity is data: ``PerTensor()``, ``PerChannel(axis)``, ``PerGroup(size, axis=-1)``. Each
becomes a *block size* (as in torchao's ``quant_primitives``): the extent of one block along
every dimension. A tensor is viewed as ``(n0, b0, n1, b1, ...)``; statistics reduce over the
``b`` dims, and scales have shape ``(n0, n1, ...)`` (``shape // block``), so one function
serves all three.

Example:
    >>> import torch
    >>> spec = QuantSpec(bits=8, symmetric=False, signed=False)
    >>> x = torch.tensor([-1.0, 0.0, 0.5, 3.0])
    >>> qp = choose_qparams(x, spec)
    >>> quantize(x, qp, spec).tolist(), int(qp.zero_point)
    ([0, 64, 96, 255], 64)
    >>> dequantize(quantize(x, qp, spec), qp, spec)[1].item()
    0.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from slimtorch.errors import ConfigError

ALLOWED_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 16)
SCALE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ZERO_POINT_DTYPE = torch.int32
MIN_SCALE = torch.finfo(torch.float32).eps  # a constant block (all zeros) still gets S > 0
SPEC_VERSION = 1


@dataclass(frozen=True)
class PerTensor:
    """One scale (and zero point) for the whole tensor."""


@dataclass(frozen=True)
class PerChannel:
    """One scale per index along ``axis`` (output channels: ``axis=0``)."""

    axis: int = 0


@dataclass(frozen=True)
class PerGroup:
    """One scale per ``size`` consecutive values along ``axis`` (the input dim: ``-1``)."""

    size: int
    axis: int = -1

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"PerGroup.size: expected a positive integer, got {self.size!r}")


Granularity = PerTensor | PerChannel | PerGroup


def granularity_from_name(name: str, group_size: int | None = None, axis: int = 0) -> Granularity:
    """``"tensor"``, ``"channel"`` or ``"group"`` (with ``group_size``) as a granularity.

    Example:
        >>> granularity_from_name("group", 32)
        PerGroup(size=32, axis=-1)
    """
    if name == "tensor":
        return PerTensor()
    if name == "channel":
        return PerChannel(axis)
    if name == "group":
        if group_size is None:
            raise ConfigError("granularity 'group' needs a group size (--group-size)")
        return PerGroup(group_size)
    raise ConfigError(f"granularity: expected tensor, channel or group, got {name!r}")


def granularity_to_dict(g: Granularity) -> dict[str, Any]:
    """A JSON-able description: ``{"kind": "channel", "axis": 0}``."""
    if isinstance(g, PerChannel):
        return {"kind": "channel", "axis": g.axis}
    if isinstance(g, PerGroup):
        return {"kind": "group", "size": g.size, "axis": g.axis}
    return {"kind": "tensor"}


def granularity_from_dict(d: dict[str, Any]) -> Granularity:
    """Inverse of :func:`granularity_to_dict`."""
    kind = d.get("kind")
    if kind == "channel":
        return PerChannel(int(d["axis"]))
    if kind == "group":
        return PerGroup(int(d["size"]), int(d.get("axis", -1)))
    if kind == "tensor":
        return PerTensor()
    raise ConfigError(f"granularity: unknown kind {kind!r}")


@dataclass(frozen=True)
class QuantSpec:
    """How values are mapped to integers.

    Args:
        bits: 1..8 or 16.
        symmetric: ``Z`` fixed at the middle of the range (0 when signed); needs bits >= 2.
        signed: integers in ``[-2**(bits-1), 2**(bits-1) - 1]``, else ``[0, 2**bits - 1]``.
        granularity: ``PerTensor()``, ``PerChannel(axis)`` or ``PerGroup(size, axis)``.
        scale_dtype: dtype scales are kept in: ``"float32"``, ``"float16"`` or ``"bfloat16"``
            (zero points are int32).
        version: serialization version.

    Example:
        >>> QuantSpec(bits=4).q_min, QuantSpec(bits=4).q_max
        (-8, 7)
    """

    bits: int = 8
    symmetric: bool = True
    signed: bool = True
    granularity: Granularity = field(default_factory=PerTensor)
    scale_dtype: str = "float32"
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or self.bits not in ALLOWED_BITS:
            raise ConfigError(f"bits: expected 1..8 or 16, got {self.bits!r}")
        if self.symmetric and self.bits < 2:
            raise ConfigError("bits: symmetric quantization needs at least 2 bits, got 1")
        if not isinstance(self.granularity, PerTensor | PerChannel | PerGroup):
            raise ConfigError(
                f"granularity: expected PerTensor/PerChannel/PerGroup, got {self.granularity!r}"
            )
        if self.scale_dtype not in SCALE_DTYPES:
            raise ConfigError(
                f"scale_dtype: expected one of {', '.join(SCALE_DTYPES)}, got {self.scale_dtype!r}"
            )

    @property
    def q_min(self) -> int:
        """Smallest integer."""
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def q_max(self) -> int:
        """Largest integer."""
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def storage_dtype(self) -> torch.dtype:
        """Integer dtype that holds one unpacked value."""
        if self.bits <= 8:
            return torch.int8 if self.signed else torch.uint8
        return torch.int16 if self.signed else torch.int32

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (inverse: :meth:`from_dict`)."""
        return {
            "bits": self.bits,
            "symmetric": self.symmetric,
            "signed": self.signed,
            "granularity": granularity_to_dict(self.granularity),
            "scale_dtype": self.scale_dtype,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantSpec:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            int(d["bits"]),
            bool(d["symmetric"]),
            bool(d["signed"]),
            granularity_from_dict(d["granularity"]),
            str(d["scale_dtype"]),
            int(d.get("version", SPEC_VERSION)),
        )


@dataclass(frozen=True)
class QParams:
    """Scales (``spec.scale_dtype``) and zero points (int32), shaped ``shape // block``."""

    scale: Tensor
    zero_point: Tensor


def block_size(shape: tuple[int, ...] | torch.Size, granularity: Granularity) -> tuple[int, ...]:
    """The extent of one quantization block along every dimension.

    Args:
        shape: tensor shape.
        granularity: which values share a scale.

    Returns:
        A tuple as long as ``shape``; ``shape[d] % block[d] == 0`` for every ``d``.

    Example:
        >>> block_size((4, 6), PerChannel(0)), block_size((4, 6), PerGroup(3))
        ((1, 6), (1, 3))
    """
    shape = tuple(shape)
    if isinstance(granularity, PerTensor):
        return shape
    axis = _axis(granularity.axis, len(shape))
    if isinstance(granularity, PerChannel):
        return tuple(1 if d == axis else n for d, n in enumerate(shape))
    if shape[axis] % granularity.size:
        raise ConfigError(
            f"group size {granularity.size} does not divide dim {axis} "
            f"of size {shape[axis]} (shape {list(shape)})"
        )
    return tuple(granularity.size if d == axis else 1 for d in range(len(shape)))


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ConfigError(f"granularity axis {axis} out of range for a {ndim}-d tensor")
    return axis % ndim


def _blocked_shape(shape: tuple[int, ...], block: tuple[int, ...]) -> tuple[int, ...]:
    """``(n0, b0, n1, b1, ...)`` for viewing a tensor block by block."""
    return tuple(v for n, b in zip(shape, block, strict=True) for v in (n // b, b))


def to_blocks(x: Tensor, spec: QuantSpec) -> tuple[Tensor, tuple[int, ...]]:
    """``x`` viewed as ``(n0, b0, n1, b1, ...)`` plus the scale shape ``(n0, n1, ...)``."""
    if x.dim() == 0:
        x = x.reshape(1)
    block = block_size(x.shape, spec.granularity)
    return x.reshape(_blocked_shape(tuple(x.shape), block)), tuple(
        n // b for n, b in zip(x.shape, block, strict=True)
    )


def expand_blocks(p: Tensor) -> Tensor:
    """A ``(n0, n1, ...)`` parameter as ``(n0, 1, n1, 1, ...)`` to broadcast over blocks."""
    return p.reshape(tuple(v for n in p.shape for v in (n, 1)))


def _round_scale_up(scale: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast to the storage dtype, rounding up so the range still covers the data."""
    stored = scale.to(dtype)
    low = stored.float() < scale
    if bool(low.any()):
        bumped = torch.nextafter(stored, torch.full_like(stored, math.inf))
        stored = torch.where(low, bumped, stored)
    return stored


def qparams_from_range(r_min: Tensor, r_max: Tensor, spec: QuantSpec) -> QParams:
    """Scale and zero point that map ``[r_min, r_max]`` onto ``[q_min, q_max]``.

    Args:
        r_min: per-block minima (any shape; the result has the same shape).
        r_max: per-block maxima.
        spec: bits, symmetry, signedness and scale dtype.

    Returns:
        ``QParams``; real 0 is exactly representable.

    Example:
        >>> qp = qparams_from_range(torch.tensor(-1.0), torch.tensor(1.0), QuantSpec(bits=8))
        >>> round(qp.scale.item() * 127, 6), qp.zero_point.item()
        (1.0, 0)
    """
    r_min = torch.clamp(r_min.float(), max=0.0)
    r_max = torch.clamp(r_max.float(), min=0.0)
    if spec.symmetric:
        half = 2 ** (spec.bits - 1) - 1
        scale = torch.maximum(-r_min, r_max) / half
    else:
        scale = (r_max - r_min) / (spec.q_max - spec.q_min)
    scale = _round_scale_up(torch.clamp(scale, min=MIN_SCALE), SCALE_DTYPES[spec.scale_dtype])
    if spec.symmetric:
        zp = torch.full_like(r_min, 0 if spec.signed else 2 ** (spec.bits - 1))
    else:
        zp = torch.round(spec.q_min - r_min / scale.float()).clamp(spec.q_min, spec.q_max)
    return QParams(scale, zp.to(ZERO_POINT_DTYPE))


def choose_qparams(x: Tensor, spec: QuantSpec) -> QParams:
    """Scale and zero point for ``x`` from its min and max in every block.

    Args:
        x: a float tensor.
        spec: bits, symmetry, signedness and granularity.

    Returns:
        ``QParams`` shaped ``x.shape // block_size(x.shape, spec.granularity)``.

    Example:
        >>> w = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
        >>> (choose_qparams(w, QuantSpec(granularity=PerChannel(0))).scale * 127).flatten()
        tensor([2.0000, 0.5000])
    """
    blocks, scale_shape = to_blocks(x.detach().float(), spec)
    dims = tuple(range(1, blocks.dim(), 2))
    return qparams_from_range(
        blocks.amin(dim=dims).reshape(scale_shape), blocks.amax(dim=dims).reshape(scale_shape), spec
    )


def quantize(x: Tensor, qparams: QParams, spec: QuantSpec) -> Tensor:
    """``q = clamp(round(x / S) + Z, q_min, q_max)`` in ``spec.storage_dtype``.

    Example:
        >>> spec = QuantSpec(bits=4)
        >>> quantize(torch.tensor([0.7, -9.0]), choose_qparams(torch.tensor([7.0]), spec), spec)
        tensor([ 1, -8], dtype=torch.int8)
    """
    blocks, _ = to_blocks(x.float(), spec)
    s, z = expand_blocks(qparams.scale.float()), expand_blocks(qparams.zero_point)
    q = torch.round(blocks / s) + z
    return q.clamp_(spec.q_min, spec.q_max).to(spec.storage_dtype).reshape(x.shape)


def dequantize(q: Tensor, qparams: QParams, spec: QuantSpec) -> Tensor:
    """``r = S (q - Z)`` as float32.

    Example:
        >>> spec = QuantSpec(bits=8)
        >>> qp = QParams(torch.tensor(0.5), torch.tensor(0, dtype=torch.int32))
        >>> dequantize(torch.tensor([-2, 3], dtype=torch.int8), qp, spec)
        tensor([-1.0000,  1.5000])
    """
    blocks, _ = to_blocks(q, spec)
    s, z = expand_blocks(qparams.scale.float()), expand_blocks(qparams.zero_point)
    return ((blocks.to(torch.int32) - z).float() * s).reshape(q.shape)


def fake_quantize(x: Tensor, spec: QuantSpec, qparams: QParams | None = None) -> Tensor:
    """Quantize then dequantize (float in, float out); qparams from ``x`` when not given.

    Example:
        >>> fake_quantize(torch.tensor([0.1, 1.0]), QuantSpec(bits=2))
        tensor([0., 1.])
    """
    qparams = qparams if qparams is not None else choose_qparams(x, spec)
    return dequantize(quantize(x, qparams, spec), qparams, spec).to(x.dtype)


def quantization_error(x: Tensor, x_hat: Tensor) -> tuple[float, float]:
    """Mean squared error and signal-to-quantization-noise ratio (dB) of ``x_hat``.

    Example:
        >>> quantization_error(torch.tensor([1.0, -1.0]), torch.tensor([1.0, -0.9]))[1] > 20
        True
    """
    noise = float(torch.mean((x.float() - x_hat.float()) ** 2))
    signal = float(torch.mean(x.float() ** 2))
    sqnr = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
    return noise, sqnr
