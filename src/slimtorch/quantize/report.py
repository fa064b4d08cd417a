"""What a quantization did, per layer: bit width, size in bits, error (MSE, SQNR), accuracy.

Sizes come from ``slimtorch.core.size`` so a report and the profiler agree on what "bits"
means (values, scales, zero points, codebooks). Every quantizer (linear, k-means) returns a
``QuantReport``; the CLI writes it as JSON and a table, plus a PNG histogram of one layer.

Example:
    >>> import torch
    >>> from slimtorch.core.size import WeightFormat
    >>> w = torch.linspace(-1, 1, 64).reshape(8, 8)
    >>> row = layer_report("fc", w, w.round(), WeightFormat(bits=2, sparse="dense"), "linear")
    >>> row.size_bits, row.fp32_bits
    (128, 2048)
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from slimtorch.core.size import WeightFormat, tensor_size_bits
from slimtorch.io import atomic_write_bytes
from slimtorch.quantize.primitives import quantization_error

FP32_BITS = 32


@dataclass
class LayerQuantReport:
    """One quantized tensor: its format, size and error against the float original."""

    name: str
    method: str
    bits: int
    numel: int
    size_bits: int
    fp32_bits: int
    mse: float
    sqnr_db: float
    granularity: str = "tensor"


@dataclass
class QuantReport:
    """All quantized tensors plus model-level accuracy before and after, and a warning for
    each model whose accuracy the quantization destroyed (``slimtorch.accuracy_check``)."""

    method: str
    layers: list[LayerQuantReport] = field(default_factory=list)
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[dict[str, Any]] = field(default_factory=list)  # AccuracyWarning.to_dict()

    @property
    def size_bits(self) -> int:
        """Bits of the quantized tensors (scales, zero points and codebooks included)."""
        return sum(r.size_bits for r in self.layers)

    @property
    def fp32_bits(self) -> int:
        """Bits the same tensors take in fp32."""
        return sum(r.fp32_bits for r in self.layers)

    @property
    def compression(self) -> float:
        """``fp32_bits / size_bits`` over the quantized tensors."""
        return self.fp32_bits / self.size_bits if self.size_bits else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (infinite SQNR becomes None)."""
        d = asdict(self)
        for row in d["layers"]:
            row["sqnr_db"] = None if math.isinf(row["sqnr_db"]) else row["sqnr_db"]
        d.update(size_bits=self.size_bits, fp32_bits=self.fp32_bits, compression=self.compression)
        return d

    def table(self) -> str:
        """A plain-text table, one row per layer, then the totals."""
        lines = [f"{'layer':<28} {'bits':>4} {'size (B)':>10} {'MSE':>10} {'SQNR dB':>8}"]
        for r in self.layers:
            lines.append(
                f"{r.name:<28} {r.bits:>4} {r.size_bits / 8:>10.0f} "
                f"{r.mse:>10.3g} {r.sqnr_db:>8.2f}"
            )
        lines.append(
            f"total {self.size_bits / 8:.0f} B vs fp32 {self.fp32_bits / 8:.0f} B "
            f"({self.compression:.2f}x)"
        )
        for key, label in (("accuracy_before", "before"), ("accuracy_after", "after")):
            value = getattr(self, key)
            if value is not None:
                lines.append(f"accuracy {label}: {value:.4f}")
        lines += [f"warning: {w['message']}" for w in self.warnings]
        return "\n".join(lines)


def layer_report(
    name: str, w: Tensor, w_hat: Tensor, fmt: WeightFormat, method: str
) -> LayerQuantReport:
    """Compare a float tensor with its quantized version and size it in ``fmt``.

    Args:
        name: qualified tensor name.
        w: the float original.
        w_hat: the dequantized (or codebook-reconstructed) tensor.
        fmt: the storage format (bits, granularity, scale and zero-point bits).
        method: ``"linear"``, ``"kmeans"``, ...

    Returns:
        A ``LayerQuantReport``.
    """
    mse, sqnr = quantization_error(w, w_hat)
    size = tensor_size_bits(w_hat, fmt)
    return LayerQuantReport(
        name,
        method,
        fmt.bits,
        w.numel(),
        size.total_bits,
        w.numel() * FP32_BITS,
        mse,
        sqnr,
        fmt.granularity,
    )


def save_histogram_png(
    path: str | os.PathLike[str], before: Tensor, after: Tensor, title: str, bins: int = 128
) -> Path:
    """Histogram of one layer's weights before and after quantization, written atomically.

    Args:
        path: the PNG file.
        before: float weights.
        after: quantized weights (dequantized values).
        title: the chart title (layer name and method).
        bins: histogram bins for the float weights.

    Returns:
        The written path.
    """
    fig = Figure(figsize=(7, 5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.hist(before.detach().flatten().numpy(), bins=bins, color="tab:blue")
    top.set_title(f"{title}: before")
    values, counts = torch.unique(after.detach().flatten(), return_counts=True)
    if values.numel() <= bins:
        width = float(values.diff().min()) * 0.8 if values.numel() > 1 else 0.01
        bottom.bar(values.numpy(), counts.numpy(), width=width, color="tab:orange")
    else:
        bottom.hist(after.detach().flatten().numpy(), bins=bins, color="tab:orange")
    bottom.set_title(f"{title}: after ({values.numel()} distinct values)")
    bottom.set_xlabel("weight")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write_bytes(path, buf.getvalue())
