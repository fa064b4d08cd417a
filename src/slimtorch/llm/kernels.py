"""Weight-only quantized Linear layers that run on torch's packed CPU kernels.

- **int4** (group-wise asymmetric, 4 bits + a bf16 scale and zero per group of ``group_size``
  inputs): decode-shaped products (few rows) run on
  ``aten._weight_int4pack_mm_for_cpu`` with **bf16 activations** (its only vectorized path on
  AVX2; see ``shared/KERNELS.md``); prefill-shaped products (more than ``prefill_rows`` rows)
  use fp32 weights dequantized once at conversion, because the int4 and bf16 kernels lose to
  fp32 GEMM there. The fp32 copy costs memory (4 bytes/weight) and is optional.
- **int8** (per output channel, symmetric): ``aten._weight_int8pack_mm`` with bf16
  activations for decode, fp32 dequantized weights for prefill.
- **fp32**: the model as loaded.

Quantization is ``slimtorch.quantize``'s affine primitive: int4 is asymmetric, unsigned, per
group, with a real offset (``q = round((w - min) / scale)`` in ``0..15``,
``scale = (max - min) / 15``), stored in the kernel's convention
``dequant = (q - 8) * scale + zero`` with ``zero = min + 8 * scale``; int8 is symmetric per
output channel. Packing is ``slimtorch.quantize.packing``'s int4 CPU layout.

Example:
    >>> import torch
    >>> lin = torch.nn.Linear(64, 16, bias=False)
    >>> q = Int4Linear.from_linear(lin, group_size=32)
    >>> x = torch.randn(1, 64)
    >>> bool((q(x) - torch.nn.functional.linear(x, q.dequantized())).abs().max() < 0.1)
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimtorch.errors import ConfigError
from slimtorch.quantize.packing import (
    INT4_CODE_OFFSET,
    INT4_N_MULTIPLE,
    pack_int4_cpu,
    unpack_int4_cpu,
)
from slimtorch.quantize.primitives import (
    PerChannel,
    PerGroup,
    QuantSpec,
    choose_qparams,
    quantize,
)

CONFIG_VERSION = 1
INT4_OFFSET = INT4_CODE_OFFSET  # the kernel dequantizes (q - 8) * scale + zero
SCALE_EPS = 1e-8  # smallest step, so constant groups and rows do not divide by zero
INT8_SPEC = QuantSpec(8, symmetric=True, signed=True, granularity=PerChannel(0), eps=SCALE_EPS)
MODES = ("fp32", "int8", "int4")
DEFAULT_LINEARS = r"(layers\.\d+\.(attention\.w[qkvo]|feed_forward\.w[123])|output)"


def quantize_int4_groups(w: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric 4-bit group quantization of ``w`` [N, K] along K.

    Returns:
        ``q`` (int32 [N, K], 0..15), ``scale`` and ``zero`` (fp32 [N, K/G]).

    Example:
        >>> q, s, z = quantize_int4_groups(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), 4)
        >>> q.tolist(), round(float(s), 4)
        ([[0, 5, 10, 15]], 0.2)
    """
    k = w.shape[1]
    if k % group_size:
        raise ConfigError(f"input features {k} not divisible by group_size {group_size}")
    spec, w = int4_spec(group_size), w.float()
    qp = choose_qparams(w, spec)
    q = quantize(w, qp, spec).to(torch.int32)
    return q, qp.scale, qp.zero_point + INT4_OFFSET * qp.scale


def int4_spec(group_size: int) -> QuantSpec:
    """The int4 grid: asymmetric, unsigned, per group of inputs, real offset (``min``).

    Example:
        >>> int4_spec(32).q_max
        15
    """
    return QuantSpec(
        4,
        symmetric=False,
        signed=False,
        granularity=PerGroup(group_size),
        zero_point_domain="float",
        eps=SCALE_EPS,
    )


def dequantize_int4_groups(q: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
    """``(q - 8) * scale + zero`` per group: fp32 [N, K]."""
    n, k = q.shape
    g = k // scale.shape[1]
    qg = q.float().reshape(n, -1, g) - INT4_OFFSET
    return (qg * scale[..., None] + zero[..., None]).reshape(n, k)


def linear_int4(x: Tensor, packed: Tensor, scales_zeros: Tensor, group_size: int) -> Tensor:
    """``x @ W.T`` on the packed int4 kernel; ``x`` [..., K] is computed in bf16."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).to(torch.bfloat16)
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, packed, group_size, scales_zeros)
    return y.reshape(*shape[:-1], -1).to(x.dtype)


def linear_int8(x: Tensor, w_int8: Tensor, scales: Tensor) -> Tensor:
    """``x @ (w_int8 * scales).T`` on the int8 weight-only kernel in bf16."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).to(torch.bfloat16)
    y = torch.ops.aten._weight_int8pack_mm(x2, w_int8, scales)
    return y.reshape(*shape[:-1], -1).to(x.dtype)


class Int4Linear(nn.Module):
    """Packed int4 group-quantized Linear (no bias); see the module docstring.

    Args:
        packed: Output of ``_convert_weight_to_int4pack_for_cpu``.
        scales_zeros: bf16 [K/G, N, 2].
        group_size: Inputs per group.
        in_features / out_features: Shape.
        prefill_weight: fp32 [N, K] used when more than ``prefill_rows`` rows come in.
        prefill_rows: Rows above which the fp32 path is taken.
    """

    def __init__(
        self,
        packed: Tensor,
        scales_zeros: Tensor,
        group_size: int,
        in_features: int,
        out_features: int,
        prefill_weight: Tensor | None = None,
        prefill_rows: int = 8,
    ) -> None:
        super().__init__()
        self.group_size, self.prefill_rows = group_size, prefill_rows
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("packed", packed)
        self.register_buffer("scales_zeros", scales_zeros)
        self.register_buffer("prefill_weight", prefill_weight)

    @classmethod
    def from_linear(
        cls, lin: nn.Linear, group_size: int = 32, keep_fp32: bool = True, prefill_rows: int = 8
    ) -> Int4Linear:
        """Quantize an ``nn.Linear`` (bias-free) to packed int4."""
        if lin.bias is not None:
            raise ConfigError("Int4Linear: Linear layers with a bias are not supported")
        if lin.out_features % INT4_N_MULTIPLE:
            raise ConfigError(
                f"Int4Linear: out_features {lin.out_features} must be a multiple of "
                f"{INT4_N_MULTIPLE} (torch's int4 CPU packing)"
            )
        q, scale, zero = quantize_int4_groups(lin.weight.detach(), group_size)
        packed = pack_int4_cpu(q)
        sz = torch.stack([scale.T, zero.T], dim=-1).to(torch.bfloat16).contiguous()
        deq = dequantize_int4_groups(q, sz[..., 0].T.float(), sz[..., 1].T.float())
        n, k = lin.weight.shape
        return cls(packed, sz, group_size, k, n, deq if keep_fp32 else None, prefill_rows)

    def dequantized(self) -> Tensor:
        """The fp32 weight the kernel computes with (bf16 scales and zeros applied)."""
        scale, zero = (self.scales_zeros[..., i].T.float() for i in (0, 1))
        return dequantize_int4_groups(unpack_int4_codes(self), scale, zero)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > self.prefill_rows and self.prefill_weight is not None:
            return F.linear(x, self.prefill_weight)
        return linear_int4(x, self.packed, self.scales_zeros, self.group_size)


def unpack_int4_codes(m: Int4Linear) -> Tensor:
    """The int4 codes ``[N, K]`` of a layer (``slimtorch.quantize.packing.unpack_int4_cpu``)."""
    return unpack_int4_cpu(m.packed, m.out_features, m.in_features, m.group_size)


class Int8Linear(nn.Module):
    """Per-channel symmetric int8 weight-only Linear (no bias)."""

    def __init__(
        self, w_int8: Tensor, scales: Tensor, prefill_weight: Tensor | None, prefill_rows: int = 8
    ) -> None:
        super().__init__()
        self.prefill_rows = prefill_rows
        self.out_features, self.in_features = w_int8.shape
        self.register_buffer("w_int8", w_int8)
        self.register_buffer("scales", scales)
        self.register_buffer("prefill_weight", prefill_weight)

    @classmethod
    def from_linear(
        cls, lin: nn.Linear, keep_fp32: bool = True, prefill_rows: int = 8
    ) -> Int8Linear:
        """Quantize an ``nn.Linear`` (bias-free) to int8 per output channel."""
        if lin.bias is not None:
            raise ConfigError("Int8Linear: Linear layers with a bias are not supported")
        w = lin.weight.detach().float()
        qp = choose_qparams(w, INT8_SPEC)
        q = quantize(w, qp, INT8_SPEC)  # |w / scale| <= 127: the range stays symmetric
        s = qp.scale.reshape(-1).to(torch.bfloat16)
        deq = q.float() * s.float()[:, None]
        return cls(q, s, deq if keep_fp32 else None, prefill_rows)

    def dequantized(self) -> Tensor:
        """The fp32 weight the kernel computes with."""
        return self.w_int8.float() * self.scales.float()[:, None]

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > self.prefill_rows and self.prefill_weight is not None:
            return F.linear(x, self.prefill_weight)
        return linear_int8(x, self.w_int8, self.scales)


@dataclass(frozen=True)
class KernelConfig:
    """Which fast weight format to run.

    Args:
        mode: Weight format to run: fp32 (the model as loaded, dequantized), int8
            (per-output-channel weight-only) or int4 (group-quantized, torch's packed CPU
            kernel).
        group_size: int4 inputs per group (a power of two >= 16: 32, 64, 128, ...).
        include: Regex on qualified Linear names to convert (default: every block linear and
            the output head).
        keep_fp32_for_prefill: Keep a dequantized fp32 copy for prefill-shaped products.
        prefill_rows: Rows above which that copy is used.
        version: Config format version.
    """

    mode: str = field(default="fp32", metadata={"choices": MODES})
    group_size: int = 32
    include: str = DEFAULT_LINEARS
    keep_fp32_for_prefill: bool = True
    prefill_rows: int = 8
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode: expected one of {MODES}, got {self.mode!r}")
        if self.group_size < 16 or self.group_size & (self.group_size - 1):
            raise ConfigError(f"group_size: expected a power of two >= 16, got {self.group_size}")


def convert_linears(model: nn.Module, config: KernelConfig) -> list[str]:
    """Replace matching ``nn.Linear`` layers in place; returns the converted names.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(32, 4, bias=False))
        >>> convert_linears(net, KernelConfig(mode="int8", include="0"))
        ['0']
    """
    if config.mode == "fp32":
        return []
    pattern = re.compile(config.include)
    names = [
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(n)
    ]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        lin = getattr(parent, child)
        if config.mode == "int4":
            new: nn.Module = Int4Linear.from_linear(
                lin, config.group_size, config.keep_fp32_for_prefill, config.prefill_rows
            )
        else:
            new = Int8Linear.from_linear(lin, config.keep_fp32_for_prefill, config.prefill_rows)
        setattr(parent, child, new)
    return names


def fuse_quantized(mods: Sequence[nn.Module]) -> nn.Module | None:
    """One quantized layer computing ``cat([m(x) for m in mods], -1)``, or None.

    Fuses along the output features when all of ``mods`` are :class:`Int4Linear` with one
    group size (codes re-packed: torch's packed layout interleaves rows, so packed tensors
    cannot simply be concatenated) or all :class:`Int8Linear`. The fused layer is decode-only
    (no fp32 prefill copy). Plain ``nn.Linear`` is not fused: for fp32 a second copy of the
    weights would cost more memory than the saved calls are worth.

    Example:
        >>> a, b = (Int8Linear.from_linear(torch.nn.Linear(32, n, bias=False)) for n in (8, 4))
        >>> fuse_quantized([a, b]).w_int8.shape
        torch.Size([12, 32])
    """
    if all(isinstance(m, Int4Linear) for m in mods):
        groups = {m.group_size for m in mods}  # type: ignore[union-attr]
        if len(groups) != 1 or len({m.in_features for m in mods}) != 1:  # type: ignore[union-attr]
            return None
        codes = torch.cat([unpack_int4_codes(m) for m in mods], dim=0)  # type: ignore[arg-type]
        packed = pack_int4_cpu(codes)
        sz = torch.cat([m.scales_zeros for m in mods], dim=1)  # [K/G, N, 2]
        n, k = codes.shape
        return Int4Linear(packed, sz, groups.pop(), k, n, None)
    if all(isinstance(m, Int8Linear) for m in mods):
        w = torch.cat([m.w_int8 for m in mods], dim=0)
        s = torch.cat([m.scales for m in mods], dim=0)  # type: ignore[list-item]
        return Int8Linear(w, s, None)
    return None


def _bf16(x: Tensor) -> Tensor:
    return x if x.dtype == torch.bfloat16 else x.to(torch.bfloat16)


def int4_rows(x: Tensor, packed: Tensor, scales_zeros: Tensor, group_size: int) -> Tensor:
    """``x @ W.T`` for 2-D ``x`` on the packed int4 kernel; bf16 out (no reshapes or casts)."""
    return _INT4_MM(_bf16(x), packed, group_size, scales_zeros)


def int8_rows(x: Tensor, w_int8: Tensor, scales: Tensor) -> Tensor:
    """``x @ (w_int8 * scales).T`` for 2-D ``x`` on the int8 kernel; bf16 out."""
    return _INT8_MM(_bf16(x), w_int8, scales)


_INT4_MM = torch.ops.aten._weight_int4pack_mm_for_cpu.default
_INT8_MM = torch.ops.aten._weight_int8pack_mm.default


def decode_kernel(m: nn.Module) -> Callable[[Tensor], Tensor]:
    """The bare function a layer runs for a 2-D decode-shaped (few rows) input.

    Skips ``nn.Module.__call__``, reshapes and the row-count dispatch: ``F.linear`` for
    ``nn.Linear``, the packed kernels for :class:`Int4Linear` / :class:`Int8Linear` (they take
    fp32 or bf16 rows and return **bf16**, exactly what the layer computes before its final
    cast to fp32), the module itself for anything else (e.g. a compressed layer from another
    package).

    Example:
        >>> lin = torch.nn.Linear(4, 2, bias=False)
        >>> x = torch.ones(1, 4)
        >>> torch.equal(decode_kernel(lin)(x), lin(x))
        True
        >>> q = Int4Linear.from_linear(torch.nn.Linear(32, 16, bias=False))
        >>> torch.equal(decode_kernel(q)(x.repeat(1, 8)).float(), q(x.repeat(1, 8)))
        True
    """
    if type(m) is nn.Linear:
        return partial(F.linear, weight=m.weight, bias=m.bias)
    if isinstance(m, Int4Linear):
        return partial(
            int4_rows, packed=m.packed, scales_zeros=m.scales_zeros, group_size=m.group_size
        )
    if isinstance(m, Int8Linear):
        return partial(int8_rows, w_int8=m.w_int8, scales=m.scales)
    return m


def weight_bytes_per_token(model: nn.Module) -> int:
    """Bytes of weights a one-token decode reads (packed formats at their packed size).

    Embedding rows are gathered (one row per token), so only the converted/used matrices
    count: every Linear and quantized layer, not the embedding table unless it is the head.
    """
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
        elif isinstance(m, Int4Linear):
            total += m.packed.numel() * m.packed.element_size()
            total += m.scales_zeros.numel() * m.scales_zeros.element_size()
        elif isinstance(m, Int8Linear):
            total += m.w_int8.numel() + m.scales.numel() * m.scales.element_size()
    return total
