"""Mixed precision: per-layer bit widths from a sensitivity scan, chosen to meet a size budget.

Calibrate, solve, apply:

1. :func:`sensitivity_scan` quantizes one layer at a time to each candidate bit width (k-means
   codebook or linear per-channel symmetric) and measures validation accuracy and loss, all
   other layers in float.
2. :func:`choose_bits` picks one width per layer so the quantized weights fit a size budget
   with the least *predicted* accuracy loss, the prediction being the sum of the per-layer
   drops (loss increase breaks ties). The choice is a multiple-choice knapsack, solved exactly
   by dynamic programming over the Pareto front of (size, predicted loss).
3. :func:`quantize_mixed` applies the chosen widths.

Example:
    >>> r = SensitivityResult("kmeans", 1.0, 0.1, ("a", "b"), (2, 8),
    ...     accuracy={"a": {2: 0.5, 8: 1.0}, "b": {2: 0.99, 8: 1.0}},
    ...     loss={"a": {2: 2.0, 8: 0.1}, "b": {2: 0.2, 8: 0.1}},
    ...     size_bits={"a": {2: 100, 8: 400}, "b": {2: 100, 8: 400}},
    ...     fp32_bits={"a": 1600, "b": 1600})
    >>> choose_bits(r, 500)
    {'a': 8, 'b': 2}
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from matplotlib.figure import Figure
from rich.progress import Progress
from torch import Tensor, nn
from torch.nn.utils import parametrize, prune

from slimtorch.core.size import WeightFormat, tensor_size_bits
from slimtorch.errors import ConfigError
from slimtorch.io import atomic_write_bytes
from slimtorch.quantize.granularity import Granularity, PerGroup, granularity_to_dict
from slimtorch.quantize.kmeans import (
    MAX_INDEX_BITS,
    KMeansConfig,
    codebook_format,
    copy_model,
    kmeans_codebook,
    kmeans_quantize_model,
    quantizable_layers,
)
from slimtorch.quantize.kmeans_module import codebook_decode
from slimtorch.quantize.primitives import PerChannel, QuantSpec, fake_quantize
from slimtorch.quantize.report import QuantReport, layer_report
from slimtorch.train import evaluate

Method = Literal["kmeans", "linear"]
METHODS: tuple[str, ...] = ("kmeans", "linear")
DEFAULT_CANDIDATE_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 8)
LINEAR_BITS_RANGE = (2, 8)  # symmetric per-channel linear quantization needs >= 2 bits
LINEAR_SCALE_BITS = 32  # one fp32 scale per output channel (per block of the granularity)
PER_CHANNEL = PerChannel(0)  # linear quantization's default granularity: one scale per row
MIXED_CONFIG_VERSION = 1
MAX_FRONT = 20_000  # Pareto states kept per layer step (thinned evenly by size beyond this)


@dataclass(frozen=True)
class MixedPrecisionConfig:
    """A size budget for the quantized weights and the widths allowed per layer.

    Args:
        size_budget_bits: Total bits the scanned layers' weights may take (codebooks or
            scales included), or None when ``ratio`` is given.
        ratio: Compression ratio over fp32 of the same weights (8.0 = 8x smaller), or None.
        candidate_bits: Widths a layer may get.
        method: ``"kmeans"`` (codebook) or ``"linear"`` (per-channel symmetric).
        version: Serialization version.

    Example:
        >>> MixedPrecisionConfig(ratio=8.0).budget_bits(fp32_bits=3200)
        400
    """

    size_budget_bits: int | None = None
    ratio: float | None = None
    candidate_bits: tuple[int, ...] = DEFAULT_CANDIDATE_BITS
    method: Method = "kmeans"
    version: int = MIXED_CONFIG_VERSION

    def __post_init__(self) -> None:
        if (self.size_budget_bits is None) == (self.ratio is None):
            raise ConfigError("MixedPrecisionConfig: give exactly one of size_budget_bits, ratio")
        if self.size_budget_bits is not None and not _positive_int(self.size_budget_bits):
            raise ConfigError(f"size_budget_bits: expected an int > 0, got {self.size_budget_bits}")
        if self.ratio is not None and not (
            isinstance(self.ratio, int | float) and math.isfinite(self.ratio) and self.ratio >= 1
        ):
            raise ConfigError(f"ratio: expected a finite number >= 1, got {self.ratio!r}")
        object.__setattr__(self, "candidate_bits", tuple(sorted(set(self.candidate_bits))))
        check_bits(self.candidate_bits, self.method)
        if self.version > MIXED_CONFIG_VERSION:
            raise ConfigError(f"version: {self.version} is newer than {MIXED_CONFIG_VERSION}")

    def budget_bits(self, fp32_bits: int) -> int:
        """The budget in bits for weights that take ``fp32_bits`` in fp32."""
        if self.size_budget_bits is not None:
            return self.size_budget_bits
        return int(fp32_bits / float(self.ratio or 1.0))


def _positive_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def check_bits(bits: tuple[int, ...], method: str) -> None:
    """Raise ConfigError unless ``method`` is known and every width in ``bits`` suits it."""
    if method not in METHODS:
        raise ConfigError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    low, high = LINEAR_BITS_RANGE if method == "linear" else (1, MAX_INDEX_BITS)
    if not bits or not all(_positive_int(b) and low <= b <= high for b in bits):
        raise ConfigError(f"candidate_bits: expected widths in {low}..{high} for {method}: {bits}")


def fake_quant_weight(
    w: Tensor, bits: int, method: Method, granularity: Granularity = PER_CHANNEL
) -> Tensor:
    """``w`` after quantization to ``bits`` and back to float (zeros stay exactly zero);
    ``granularity``: which weights share a scale (``"linear"`` only).

    Example:
        >>> w = torch.tensor([[0.0, 0.5, 1.0, -1.0]])
        >>> fake_quant_weight(w, 2, "kmeans").tolist()
        [[0.0, 0.5, 1.0, -1.0]]
    """
    if method == "linear":
        return fake_quantize(w, QuantSpec(bits=bits, granularity=granularity))
    codebook, idx, zero = kmeans_codebook(w, bits)
    return codebook_decode(idx.reshape(-1), codebook, tuple(w.shape), zero).to(w.dtype)


def weight_format(
    bits: int, method: Method, granularity: Granularity = PER_CHANNEL
) -> WeightFormat:
    """How a layer quantized by ``method`` to ``bits`` is stored (for its size in bits)."""
    if method == "linear":
        kind = granularity_to_dict(granularity)["kind"]
        group = granularity.size if isinstance(granularity, PerGroup) else None
        return WeightFormat(
            bits=bits, granularity=kind, group_size=group, scale_bits=LINEAR_SCALE_BITS
        )
    return codebook_format(bits)


@dataclass(frozen=True)
class SensitivityResult:
    """Validation accuracy and loss with one layer quantized at a time.

    ``accuracy[layer][bits]``, ``loss[layer][bits]`` and ``size_bits[layer][bits]`` (the
    weight's size in that format); ``fp32_bits[layer]``; baseline = nothing quantized.
    """

    method: str
    baseline_accuracy: float
    baseline_loss: float
    layers: tuple[str, ...]
    bits: tuple[int, ...]
    accuracy: dict[str, dict[int, float]]
    loss: dict[str, dict[int, float]]
    size_bits: dict[str, dict[int, int]]
    fp32_bits: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (bit widths become string keys)."""
        d = asdict(self)
        for key in ("accuracy", "loss", "size_bits"):
            d[key] = {n: {str(b): v for b, v in row.items()} for n, row in d[key].items()}
        return d

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Write a PNG: accuracy against bit width, one line per layer (atomic write)."""
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        for name in self.layers:
            ax.plot(self.bits, [self.accuracy[name][b] for b in self.bits], marker="o", label=name)
        ax.axhline(self.baseline_accuracy, color="black", linestyle="--", label="float")
        ax.set(xlabel="bits", ylabel="validation accuracy", title=f"{self.method} sensitivity")
        ax.legend(fontsize="small", ncol=2)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        return atomic_write_bytes(path, buf.getvalue())


def materialize_weights(model: nn.Module) -> nn.Module:
    """A deep copy whose layers hold plain weights: torch prune hooks and parametrizations
    (e.g. weight norm) are baked in, so weights can be overwritten directly."""
    model = copy_model(model)
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def sensitivity_scan(
    model: nn.Module,
    val_loader: Any,
    bits: tuple[int, ...] = DEFAULT_CANDIDATE_BITS,
    method: Method = "kmeans",
    *,
    exclude: tuple[str, ...] = (),
    progress: bool = True,
) -> SensitivityResult:
    """Accuracy per layer per bit width, quantizing one layer at a time.

    Args:
        model: The float model (not modified).
        val_loader: ``(x, y)`` validation batches.
        bits: Candidate widths.
        method: ``"kmeans"`` or ``"linear"``.
        exclude: Layers not scanned (names or regexes).
        progress: Show a progress bar.

    Returns:
        A :class:`SensitivityResult`.

    Example:
        >>> m = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
        >>> sensitivity_scan(m, data, bits=(2, 8), progress=False).layers
        ('1',)
    """
    bits = tuple(sorted(set(bits)))
    check_bits(bits, method)
    work = materialize_weights(model)
    base = evaluate(work, val_loader)
    names = tuple(quantizable_layers(work, exclude))
    acc: dict[str, dict[int, float]] = {n: {} for n in names}
    loss: dict[str, dict[int, float]] = {n: {} for n in names}
    size: dict[str, dict[int, int]] = {n: {} for n in names}
    with Progress(disable=not progress, transient=True) as bar:  # no leftover bar in a log
        task = bar.add_task(f"{method} sensitivity", total=len(names) * len(bits))
        for name in names:
            weight = work.get_submodule(name).weight
            original = weight.detach().clone()
            for b in bits:
                w_hat = fake_quant_weight(original, b, method)
                with torch.no_grad():
                    weight.copy_(w_hat)
                result = evaluate(work, val_loader)
                acc[name][b], loss[name][b] = result.accuracy, result.loss
                size[name][b] = tensor_size_bits(w_hat, weight_format(b, method)).total_bits
                bar.advance(task)
            with torch.no_grad():
                weight.copy_(original)
    fp32 = {n: work.get_submodule(n).weight.numel() * 32 for n in names}
    return SensitivityResult(method, base.accuracy, base.loss, names, bits, acc, loss, size, fp32)


_State = tuple[int, float, float, tuple[int, ...]]  # (size, acc drop, loss rise, widths)


def _pareto(states: list[_State]) -> list[_State]:
    """States not dominated in (size, (drop, rise)); sorted by size."""
    states.sort(key=lambda s: (s[0], s[1], s[2]))
    front: list[_State] = []
    for s in states:
        if not front or (s[1], s[2]) < (front[-1][1], front[-1][2]):
            front.append(s)
    if len(front) > MAX_FRONT:
        step = len(front) / MAX_FRONT
        front = [front[int(i * step)] for i in range(MAX_FRONT)]
    return front


def choose_bits(result: SensitivityResult, budget: int | MixedPrecisionConfig) -> dict[str, int]:
    """Bit width per layer meeting the size budget with the least predicted accuracy loss.

    Args:
        result: A sensitivity scan.
        budget: Bits the scanned weights may take, or a :class:`MixedPrecisionConfig`
            (its ``candidate_bits`` restrict the widths; ``ratio`` is over the scanned fp32).

    Returns:
        ``{layer: bits}`` for every scanned layer.

    Raises:
        ConfigError: no choice fits the budget (the message gives the smallest size).

    Example:
        >>> r = SensitivityResult("kmeans", 1.0, 0.1, ("a",), (2, 8), {"a": {2: 0.5, 8: 1.0}},
        ...     {"a": {2: 1.0, 8: 0.1}}, {"a": {2: 100, 8: 400}}, {"a": 1600})
        >>> choose_bits(r, MixedPrecisionConfig(ratio=4.0))
        {'a': 8}
    """
    allowed = result.bits
    if isinstance(budget, MixedPrecisionConfig):
        allowed = tuple(b for b in result.bits if b in budget.candidate_bits)
        budget = budget.budget_bits(sum(result.fp32_bits.values()))
    if not allowed:
        raise ConfigError("candidate_bits: none of them was scanned")
    smallest = sum(min(result.size_bits[n][b] for b in allowed) for n in result.layers)
    if smallest > budget:
        raise ConfigError(f"size budget {budget} bits is below the smallest choice {smallest}")
    rest = [
        sum(min(result.size_bits[n][b] for b in allowed) for n in result.layers[i + 1 :])
        for i in range(len(result.layers))
    ]
    front: list[_State] = [(0, 0.0, 0.0, ())]
    for i, name in enumerate(result.layers):
        options = [
            (
                b,
                result.size_bits[name][b],
                result.baseline_accuracy - result.accuracy[name][b],
                result.loss[name][b] - result.baseline_loss,
            )
            for b in allowed
        ]
        front = _pareto(
            [
                (s + size, d + drop, r + rise, (*widths, b))
                for s, d, r, widths in front
                for b, size, drop, rise in options
                if s + size + rest[i] <= budget
            ]
        )
    best = min(front, key=lambda s: (round(s[1], 12), s[2], s[0]))
    return dict(zip(result.layers, best[3], strict=True))


def quantize_mixed(
    model: nn.Module,
    bits_by_layer: dict[str, int],
    method: Method = "kmeans",
    *,
    granularity: Granularity = PER_CHANNEL,
) -> tuple[nn.Module, QuantReport]:
    """Quantize the named layers at their widths (others stay float); returns a new model.

    ``"kmeans"`` builds codebook layers; ``"linear"`` writes symmetric fake-quantized weights
    (dequantized values, one scale per block of ``granularity``, per channel by default) into
    a float copy.

    Example:
        >>> q, rep = quantize_mixed(nn.Sequential(nn.Linear(4, 2)), {"0": 2})
        >>> rep.layers[0].bits
        2
    """
    check_bits(tuple(bits_by_layer.values()) or (2,), method)
    if method == "kmeans":
        escaped = {re.escape(n): b for n, b in bits_by_layer.items()}
        others = tuple(re.escape(n) for n in quantizable_layers(model) if n not in bits_by_layer)
        config = KMeansConfig(
            bits=max(bits_by_layer.values(), default=8), exclude=others, layer_bits=escaped
        )
        return kmeans_quantize_model(model, config)
    work = materialize_weights(model)
    report = QuantReport(method="linear")
    for name, b in bits_by_layer.items():
        weight = work.get_submodule(name).weight
        w = weight.detach().clone()
        w_hat = fake_quant_weight(w, b, "linear", granularity)
        with torch.no_grad():
            weight.copy_(w_hat)
        fmt = weight_format(b, "linear", granularity)
        report.layers.append(layer_report(f"{name}.weight", w, w_hat, fmt, "linear"))
    return work, report
