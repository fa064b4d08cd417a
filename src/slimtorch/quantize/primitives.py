"""Linear (affine) quantization: ``r = S (q - Z)``, one code path for every granularity.

The mapping is the one of Jacob et al. (2018) and the course notes:

- ``S = (r_max - r_min) / (q_max - q_min)``, ``Z = round(q_min - r_min / S)`` (asymmetric; the
  range is first widened to include 0 so that real zero is exactly ``q = Z``);
- symmetric: ``S = max|r| / (2**(bits-1) - 1)`` and ``Z = 0`` (signed) or ``2**(bits-1)``
  (unsigned), the restricted range used by TensorRT and gpt-fast;
- ``q = clamp(round(r / S) + Z, q_min, q_max)``; ``r_hat = S (q - Z)``.

With ``zero_point_domain="float"`` (torchao's ``ZeroPointDomain.FLOAT``; llama.cpp's Q4_1, the
LLM weight grids of :mod:`slimtorch.llm.compress` and the int4 CPU kernel) the zero point is a
real offset instead: ``r_hat = S q + m``. Asymmetric: ``m = r_min`` and the range is *not*
widened to include 0, ``q = clamp(round((r - m) / S), 0, 2**bits - 1)``; symmetric: ``m = 0``.

Granularity is data (:mod:`slimtorch.quantize.granularity`): ``PerTensor()``,
``PerChannel(axis)``, ``PerGroup(size, axis=-1)``, each a *block size* as in torchao's
``quant_primitives``, so one function serves all three. Statistics are computed in float32
(float64 for a float64 input); scales are kept in ``scale_dtype``, rounded up.

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
from slimtorch.quantize.granularity import (
    Granularity,
    PerChannel,
    PerGroup,
    PerTensor,
    block_size,
    expand_blocks,
    from_blocks,
    granularity_from_dict,
    granularity_to_dict,
    to_blocks,
)

__all__ = [
    "Granularity",
    "PerChannel",
    "PerGroup",
    "PerTensor",
    "QParams",
    "QuantSpec",
    "block_size",
    "choose_qparams",
    "dequantize",
    "dequantize_affine",
    "expand_blocks",
    "fake_quantize",
    "granularity_from_dict",
    "granularity_to_dict",
    "qparams_from_range",
    "quantization_error",
    "quantize",
    "quantize_affine",
    "to_blocks",
]

ALLOWED_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 16)
SCALE_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,  # scales kept as computed (float64 for a float64 input)
}
ZERO_POINT_DTYPE = torch.int32
ZERO_POINT_DOMAINS = ("int", "float")
MIN_SCALE = torch.finfo(torch.float32).eps  # a constant block (all zeros) still gets S > 0
SPEC_VERSION = 1


@dataclass(frozen=True)
class QuantSpec:
    """How values are mapped to integers.

    Args:
        bits: 1..8 or 16.
        symmetric: ``Z`` fixed at the middle of the range (0 when signed); needs bits >= 2.
        signed: integers in ``[-2**(bits-1), 2**(bits-1) - 1]``, else ``[0, 2**bits - 1]``.
        granularity: ``PerTensor()``, ``PerChannel(axis)`` or ``PerGroup(size, axis)``.
        scale_dtype: dtype scales are kept in: ``"float32"``, ``"float16"``, ``"bfloat16"``
            or ``"float64"`` (as computed: float32 values for a float32 input).
        version: serialization version.
        zero_point_domain: ``"int"`` (int32 ``Z``, real 0 exact) or ``"float"`` (a real offset
            ``m``: ``r = S q + m``; asymmetric needs unsigned integers).
        eps: smallest scale (a constant block still gets ``S > 0``).

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
    zero_point_domain: str = "int"
    eps: float = MIN_SCALE

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
        if self.zero_point_domain not in ZERO_POINT_DOMAINS:
            raise ConfigError(
                f"zero_point_domain: expected 'int' or 'float', got {self.zero_point_domain!r}"
            )
        if self.float_zero and self.signed:
            raise ConfigError("zero_point_domain 'float': asymmetric grids need signed=False")
        if not (isinstance(self.eps, float) and math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(f"eps: expected a positive float, got {self.eps!r}")

    @property
    def q_min(self) -> int:
        """Smallest integer."""
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def q_max(self) -> int:
        """Largest integer."""
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def float_zero(self) -> bool:
        """Asymmetric with a real offset (``r = S q + r_min``)."""
        return self.zero_point_domain == "float" and not self.symmetric

    @property
    def storage_dtype(self) -> torch.dtype:
        """Integer dtype that holds one unpacked value."""
        if self.bits <= 8:
            return torch.int8 if self.signed else torch.uint8
        return torch.int16 if self.signed else torch.int32

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (inverse: :meth:`from_dict`); defaults of the later fields omitted."""
        extra: dict[str, Any] = {}
        if self.zero_point_domain != "int":
            extra["zero_point_domain"] = self.zero_point_domain
        if self.eps != MIN_SCALE:
            extra["eps"] = self.eps
        return {
            "bits": self.bits,
            "symmetric": self.symmetric,
            "signed": self.signed,
            "granularity": granularity_to_dict(self.granularity),
            "scale_dtype": self.scale_dtype,
            "version": self.version,
            **extra,
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
            str(d.get("zero_point_domain", "int")),
            float(d.get("eps", MIN_SCALE)),
        )


@dataclass(frozen=True)
class QParams:
    """Scales (``spec.scale_dtype``) and zero points, shaped ``shape // block``: int32 ``Z``,
    or a real offset ``m`` (float32, float64 for a float64 input) in the float domain."""

    scale: Tensor
    zero_point: Tensor


def compute_dtype(x: Tensor) -> torch.dtype:
    """float64 for a float64 tensor, else float32: the dtype statistics are computed in."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _round_scale_up(scale: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast to the storage dtype, rounding up so the range still covers the data."""
    stored = scale.to(dtype)
    low = stored.to(scale.dtype) < scale
    if bool(low.any()):
        bumped = torch.nextafter(stored, torch.full_like(stored, math.inf))
        stored = torch.where(low, bumped, stored)
    return stored


def qparams_from_range(r_min: Tensor, r_max: Tensor, spec: QuantSpec) -> QParams:
    """Scale and zero point that map ``[r_min, r_max]`` onto ``[q_min, q_max]``.

    Args:
        r_min: per-block minima (any shape; the result has the same shape).
        r_max: per-block maxima.
        spec: bits, symmetry, signedness, zero-point domain and scale dtype.

    Returns:
        ``QParams``; in the int domain real 0 is exactly representable.

    Example:
        >>> qp = qparams_from_range(torch.tensor(-1.0), torch.tensor(1.0), QuantSpec(bits=8))
        >>> round(qp.scale.item() * 127, 6), qp.zero_point.item()
        (1.0, 0)
        >>> spec = QuantSpec(2, False, False, zero_point_domain="float")
        >>> qp = qparams_from_range(torch.tensor(1.0), torch.tensor(4.0), spec)
        >>> qp.scale.item(), qp.zero_point.item()
        (1.0, 1.0)
    """
    dtype = compute_dtype(r_min)
    r_min, r_max = r_min.to(dtype), r_max.to(dtype)
    if not spec.float_zero:
        r_min, r_max = torch.clamp(r_min, max=0.0), torch.clamp(r_max, min=0.0)
    if spec.symmetric:
        half = 2 ** (spec.bits - 1) - 1
        scale = torch.maximum(-r_min, r_max) / half
    else:
        scale = (r_max - r_min) / (spec.q_max - spec.q_min)
    scale = _round_scale_up(torch.clamp(scale, min=spec.eps), SCALE_DTYPES[spec.scale_dtype])
    if spec.float_zero:
        return QParams(scale, r_min)
    if spec.zero_point_domain == "float":
        return QParams(scale, torch.zeros_like(r_min))
    if spec.symmetric:
        zp = torch.full_like(r_min, 0 if spec.signed else 2 ** (spec.bits - 1))
    else:
        zp = torch.round(spec.q_min - r_min / scale.to(dtype)).clamp(spec.q_min, spec.q_max)
    return QParams(scale, zp.to(ZERO_POINT_DTYPE))


def choose_qparams(x: Tensor, spec: QuantSpec) -> QParams:
    """Scale and zero point for ``x`` from its min and max in every block.

    Args:
        x: a float tensor.
        spec: bits, symmetry, signedness and granularity.

    Returns:
        ``QParams`` shaped ``x.shape // block_size(x.shape, spec.granularity)`` (rounded up
        for a ragged ``PerGroup``).

    Example:
        >>> w = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
        >>> (choose_qparams(w, QuantSpec(granularity=PerChannel(0))).scale * 127).flatten()
        tensor([2.0000, 0.5000])
    """
    blocks, scale_shape = to_blocks(x.detach().to(compute_dtype(x)), spec)
    dims = tuple(range(1, blocks.dim(), 2))
    return qparams_from_range(
        blocks.amin(dim=dims).reshape(scale_shape), blocks.amax(dim=dims).reshape(scale_shape), spec
    )


def quantize_affine(x: Tensor, scale: Tensor, zero_point: Tensor, spec: QuantSpec) -> Tensor:
    """Integer codes of ``x`` with ``scale`` / ``zero_point`` broadcast against it.

    ``clamp(round(x / S) + Z)``, or ``clamp(round((x - m) / S))`` in the float domain; in
    ``spec.storage_dtype``.

    Example:
        >>> quantize_affine(torch.tensor([0.4, 2.6]), torch.tensor(1.0), torch.tensor(0.0),
        ...                 QuantSpec(2, False, False, zero_point_domain="float"))
        tensor([0, 3], dtype=torch.uint8)
    """
    dtype = compute_dtype(x)
    x, s = x.to(dtype), scale.to(dtype)
    if spec.zero_point_domain == "float":
        q = torch.round((x - zero_point.to(dtype)) / s)
    else:
        q = torch.round(x / s) + zero_point
    return q.clamp_(spec.q_min, spec.q_max).to(spec.storage_dtype)


def dequantize_affine(q: Tensor, scale: Tensor, zero_point: Tensor, spec: QuantSpec) -> Tensor:
    """``S (q - Z)`` as float32, or ``S q + m`` in the float domain (in ``m``'s dtype).

    Example:
        >>> dequantize_affine(torch.tensor([0, 3]), torch.tensor(0.5), torch.tensor(-1.0),
        ...                   QuantSpec(2, False, False, zero_point_domain="float"))
        tensor([-1.0000,  0.5000])
    """
    if spec.zero_point_domain == "float":
        dtype = zero_point.dtype
        return q.to(dtype) * scale.to(dtype) + zero_point
    return (q.to(torch.int32) - zero_point).float() * scale.float()


def quantize(x: Tensor, qparams: QParams, spec: QuantSpec) -> Tensor:
    """``q = clamp(round(x / S) + Z, q_min, q_max)`` in ``spec.storage_dtype``.

    Example:
        >>> spec = QuantSpec(bits=4)
        >>> quantize(torch.tensor([0.7, -9.0]), choose_qparams(torch.tensor([7.0]), spec), spec)
        tensor([ 1, -8], dtype=torch.int8)
    """
    blocks, _ = to_blocks(x, spec)
    s, z = expand_blocks(qparams.scale), expand_blocks(qparams.zero_point)
    return from_blocks(quantize_affine(blocks, s, z, spec), x.shape)


def dequantize(q: Tensor, qparams: QParams, spec: QuantSpec) -> Tensor:
    """``r = S (q - Z)`` as float32 (``S q + m`` in the float domain).

    Example:
        >>> spec = QuantSpec(bits=8)
        >>> qp = QParams(torch.tensor(0.5), torch.tensor(0, dtype=torch.int32))
        >>> dequantize(torch.tensor([-2, 3], dtype=torch.int8), qp, spec)
        tensor([-1.0000,  1.5000])
    """
    blocks, _ = to_blocks(q, spec)
    s, z = expand_blocks(qparams.scale), expand_blocks(qparams.zero_point)
    return from_blocks(dequantize_affine(blocks, s, z, spec), q.shape)


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
