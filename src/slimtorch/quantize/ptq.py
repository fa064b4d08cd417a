"""Post-training quantization: fold BatchNorm, wrap layers, calibrate, freeze.

Calibrate, then solve, then apply: ``prepare`` folds BatchNorm and wraps every conv/linear
(matched by qualified name; ``exclude`` regexes keep layers in float) in a ``QuantWrapper``
whose input observer records activations; ``calibrate`` runs N batches; ``freeze`` turns the
observations into scales and zero points. Weights use ``PTQConfig.weight_spec`` (signed,
symmetric by default: zero points of 0 keep integer kernels simple); activations are unsigned
asymmetric per-tensor (``activation_spec``), as torch's x86/fbgemm engines expect. With
``reduce_range`` 8-bit activations use 7 bits (0..127), as PyTorch's x86 qconfig does: without
VNNI those engines add u8*s8 products in pairs into int16, which full-range activations overflow
(``quantize.engine``); ``"auto"`` (the default) reduces only where this CPU's engine saturates,
and the report records what it chose.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> batches = [(torch.randn(16, 4), torch.zeros(16)) for _ in range(2)]
    >>> qmodel, report = quantize_ptq(model, batches, PTQConfig(calib_batches=2))
    >>> [row.name for row in report.layers], qmodel(torch.randn(3, 4)).shape
    (['0.weight', '2.weight'], torch.Size([3, 2]))
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from slimtorch.core.granularity import QUANT_KINDS, parse_granularity
from slimtorch.core.size import WeightFormat
from slimtorch.errors import ConfigError, DataError
from slimtorch.quantize.engine import engine_saturates, pairs_fit_int16
from slimtorch.quantize.fakequant import ActFakeQuant, QuantWrapper
from slimtorch.quantize.fold import FOLDABLE, fold_batchnorm
from slimtorch.quantize.observers import DEFAULT_PERCENTILE, OBSERVERS
from slimtorch.quantize.primitives import (
    SCALE_DTYPES,
    Granularity,
    PerChannel,
    PerGroup,
    PerTensor,
    QuantSpec,
    dequantize,
    quantize,
)
from slimtorch.quantize.report import QuantReport, layer_report

PTQ_VERSION = 1
ZERO_POINT_BITS = 32  # zero points are stored as int32
REDUCE_RANGE = ("auto", True, False)
FULL_ACTIVATION_BITS = 8  # the width reduce_range narrows by one bit


@dataclass(frozen=True)
class PTQConfig:
    """Linear post-training quantization of weights and activations.

    Args:
        weight_bits: weight bit width (1..8 or 16).
        weight_granularity: ``PerTensor()``, ``PerChannel(0)`` or ``PerGroup(size)`` (groups run
            along the flattened input dimension), spelled ``tensor``, ``channel`` or
            ``group:SIZE`` on the command line.
        weight_symmetric: symmetric weights (zero point 0).
        activation_bits: activation bit width; None for weight-only quantization.
        observer: activation observer: minmax, moving_average, percentile, mse or kl.
        percentile: percentile for the percentile observer.
        calib_batches: calibration batches to run.
        fold_bn: fold BatchNorm into the preceding conv/linear first.
        exclude: regexes (``re.fullmatch`` on qualified module names) of layers kept in float.
        scale_dtype: dtype scales are stored in.
        reduce_range: 8-bit activations use 7 bits (0..127) so torch's int8 engines cannot
            saturate on CPUs without VNNI; ``"auto"``: only where this CPU's engine saturates
            (measured once), True / False: always / never.
        version: config version.

    Example:
        >>> PTQConfig(weight_bits=4, weight_granularity=PerGroup(8)).weight_spec.bits
        4
    """

    weight_bits: int = 8
    weight_granularity: Granularity = field(
        default_factory=lambda: PerChannel(0), metadata={"kinds": QUANT_KINDS}
    )
    weight_symmetric: bool = True
    activation_bits: int | None = 8
    observer: str = field(default="minmax", metadata={"choices": OBSERVERS})
    percentile: float = DEFAULT_PERCENTILE
    calib_batches: int = 32
    fold_bn: bool = True
    exclude: tuple[str, ...] = ()
    scale_dtype: str = "float32"
    reduce_range: str | bool = "auto"
    version: int = PTQ_VERSION

    def __post_init__(self) -> None:
        g = parse_granularity(self.weight_granularity, QUANT_KINDS, "weight_granularity")
        object.__setattr__(self, "weight_granularity", g)
        self.weight_spec  # noqa: B018 -- validates bits and granularity
        if self.activation_bits is not None:
            self._activation_spec(self.activation_bits)
        if self.reduce_range not in REDUCE_RANGE or not isinstance(self.reduce_range, str | bool):
            raise ConfigError(
                f"reduce_range: expected 'auto', True or False, got {self.reduce_range!r}"
            )
        if self.observer not in OBSERVERS:
            raise ConfigError(
                f"observer: expected one of {', '.join(OBSERVERS)}, got {self.observer!r}"
            )
        if not isinstance(self.calib_batches, int) or self.calib_batches < 1:
            raise ConfigError(
                f"calib_batches: expected a positive integer, got {self.calib_batches!r}"
            )
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ConfigError(f"exclude: {pattern!r} is not a valid regex ({err})") from None

    @property
    def weight_spec(self) -> QuantSpec:
        """Signed weights at ``weight_bits`` and ``weight_granularity``."""
        return QuantSpec(
            self.weight_bits, self.weight_symmetric, True, self.weight_granularity, self.scale_dtype
        )

    @property
    def activation_spec(self) -> QuantSpec:
        """Unsigned asymmetric per-tensor activations at ``activation_bits`` (7 when reduced)."""
        bits = self.activation_bits or FULL_ACTIVATION_BITS
        return self._activation_spec(bits - 1 if self.activation_range_reduced else bits)

    def _activation_spec(self, bits: int) -> QuantSpec:
        return QuantSpec(bits, False, False, PerTensor(), self.scale_dtype)

    @property
    def activation_range_reduced(self) -> bool:
        """``reduce_range`` resolved: 8-bit activations calibrated to 7 bits on this machine."""
        if self.activation_bits != FULL_ACTIVATION_BITS or self.reduce_range is False:
            return False
        if self.reduce_range is True:
            return True
        weight_max = 2 ** (self.weight_bits - 1)
        return not pairs_fit_int16(2**FULL_ACTIVATION_BITS - 1, weight_max) and engine_saturates()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["weight_granularity"] = self.weight_spec.to_dict()["granularity"]
        d["exclude"] = list(self.exclude)
        return d


def _excluded(name: str, patterns: tuple[str, ...]) -> bool:
    return any(re.fullmatch(p, name) for p in patterns)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def prepare(model: nn.Module, config: PTQConfig, lsq: bool = False) -> nn.Module:
    """Copy ``model``, fold BatchNorm (if configured) and wrap every conv/linear.

    Args:
        model: the float model (unchanged).
        config: what to quantize and how.
        lsq: learn weight and activation scales (QAT).

    Returns:
        The prepared copy; its activation quantizers are observing.
    """
    model = copy.deepcopy(model).eval()
    if config.fold_bn:
        model, _ = fold_batchnorm(model, inplace=True)
    targets = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, FOLDABLE) and not _excluded(n, config.exclude)
    ]
    for name, layer in targets:
        act = None
        if config.activation_bits is not None:
            act = ActFakeQuant(config.activation_spec, config.observer, config.percentile, lsq)
        _set_module(model, name, QuantWrapper(layer, config.weight_spec, act, lsq))
    return model


def quant_layers(model: nn.Module) -> dict[str, QuantWrapper]:
    """The wrapped layers of a prepared model by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantWrapper)}


def _batch_input(batch: Any) -> Tensor:
    x = batch[0] if isinstance(batch, list | tuple) else batch
    if not isinstance(x, Tensor):
        raise DataError(
            f"calibration data: expected tensors or (x, y) pairs, got {type(x).__name__}"
        )
    return x


def calibrate(model: nn.Module, batches: Iterable[Any], num_batches: int) -> int:
    """Run up to ``num_batches`` batches through ``model`` (no gradients) for the observers.

    Args:
        model: a prepared model.
        batches: ``x`` tensors or ``(x, y)`` pairs.
        num_batches: how many to use.

    Returns:
        The number of batches used.
    """
    model.eval()
    used, first_shape = 0, None
    with torch.no_grad():
        for batch in batches:
            if used >= num_batches:
                break
            x = _batch_input(batch)
            first_shape = first_shape or tuple(x.shape[1:])
            if tuple(x.shape[1:]) != first_shape:
                raise DataError(
                    f"calibration data: batch {used} has sample shape "
                    f"{list(x.shape[1:])}, earlier batches {list(first_shape)}"
                )
            try:
                model(x)
            except RuntimeError as err:
                first = str(err).strip().splitlines()[0]
                raise DataError(
                    f"calibration data: batch of shape {list(x.shape)} does not fit "
                    f"the model ({first})"
                ) from None
            used += 1
    if used == 0:
        raise DataError("calibration data: no batches")
    return used


def freeze(model: nn.Module) -> None:
    """Turn every activation observer's statistics into fixed qparams."""
    for wrapper in quant_layers(model).values():
        if wrapper.act is not None and wrapper.act.observing:
            wrapper.act.freeze()


def weight_format(spec: QuantSpec) -> WeightFormat:
    """The ``profile.size`` format that counts ``spec``'s values, scales and zero points."""
    g = spec.granularity
    kind = (
        "group" if isinstance(g, PerGroup) else "channel" if isinstance(g, PerChannel) else "tensor"
    )
    scale_bits = torch.finfo(SCALE_DTYPES[spec.scale_dtype]).bits
    return WeightFormat(
        bits=spec.bits,
        granularity=kind,
        group_size=g.size if isinstance(g, PerGroup) else None,
        scale_bits=scale_bits,
        zero_point_bits=0 if spec.symmetric else ZERO_POINT_BITS,
        sparse="dense",
    )


def integer_weight(wrapper: QuantWrapper) -> tuple[Tensor, Any]:
    """``(q, qparams)`` of a wrapper's weight in its ``[out, -1]`` view."""
    qp = wrapper.weight_qparams()
    w = wrapper.layer.weight.detach().reshape(wrapper.layer.weight.shape[0], -1)
    return quantize(w, qp, wrapper.weight_spec), qp


def weight_report(model: nn.Module, method: str = "linear") -> QuantReport:
    """Per-layer size and error of every wrapped weight against its float master copy."""
    report = QuantReport(method)
    for name, wrapper in quant_layers(model).items():
        q, qp = integer_weight(wrapper)
        w = wrapper.layer.weight.detach()
        w_hat = dequantize(q, qp, wrapper.weight_spec).reshape(w.shape)
        report.layers.append(
            layer_report(f"{name}.weight", w, w_hat, weight_format(wrapper.weight_spec), method)
        )
    return report


def quantize_ptq(
    model: nn.Module, batches: Iterable[Any], config: PTQConfig = PTQConfig()
) -> tuple[nn.Module, QuantReport]:
    """Post-training quantization: prepare, calibrate on ``config.calib_batches``, freeze.

    Args:
        model: the float model (unchanged).
        batches: calibration data (``x`` or ``(x, y)`` batches).
        config: the quantization settings.

    Returns:
        ``(fake-quantized model, per-layer report)``.
    """
    qmodel = prepare(model, config)
    if config.activation_bits is not None:
        used = calibrate(qmodel, batches, config.calib_batches)
        freeze(qmodel)
    else:
        used = 0
    report = weight_report(qmodel)
    report.extra.update(config=config.to_dict(), calib_batches_used=used)
    report.extra["activation_range_reduced"] = config.activation_range_reduced
    return qmodel, report
