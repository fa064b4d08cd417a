"""Fake-quantization modules: shells around the primitives for PTQ and QAT.

- ``fake_quantize_ste``: ``S (clamp(round(x / S) + Z) - Z)`` with the straight-through
  estimator (Bengio et al. 2013): rounding passes gradients unchanged, clamping zeroes them
  outside the range. With ``grad_scale`` the scale is learned as in LSQ (Esser et al. 2020,
  "Learned Step Size Quantization": gradient scaled by ``1 / sqrt(numel * q_max)``).
- ``ActFakeQuant``: observes activations during calibration, then fake-quantizes them with the
  frozen (or, with LSQ, learned) per-tensor scale and zero point.
- ``QuantWrapper``: a conv/linear whose weight is fake-quantized on every forward (from the float
  master weight) and whose input passes through an ``ActFakeQuant``; once the input scale is
  known the bias is rounded to the int32 grid ``S_in * S_w`` that integer kernels use.
  Weights are viewed as ``[out, in * kh * kw]`` so ``PerGroup`` groups run along the
  flattened input, as in ``slimtorch.core.size``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from slimtorch.quantize.primitives import PerChannel, QuantSpec
    >>> layer = QuantWrapper(nn.Linear(4, 3), QuantSpec(8, granularity=PerChannel(0)))
    >>> layer(torch.randn(2, 4)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from slimtorch.quantize.observers import DEFAULT_PERCENTILE, make_observer
from slimtorch.quantize.primitives import (
    QParams,
    QuantSpec,
    choose_qparams,
    expand_blocks,
    qparams_from_range,
    to_blocks,
)

LSQ_MIN_SCALE = 1e-8


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` forward, identity gradient backward."""
    return x + (torch.round(x) - x).detach()


def scale_gradient(x: Tensor, factor: float) -> Tensor:
    """``x`` forward, gradient multiplied by ``factor`` backward (LSQ's ``grad_scale``)."""
    return (x - x * factor).detach() + x * factor


def fake_quantize_ste(
    x: Tensor, qparams: QParams, spec: QuantSpec, grad_scale: float | None = None
) -> Tensor:
    """Differentiable fake quantization of ``x`` (any granularity of ``spec``).

    Args:
        x: float tensor.
        qparams: scale and zero point shaped ``x.shape // block``; with ``grad_scale`` the
            scale may be a learnable parameter.
        spec: bits, signedness, granularity.
        grad_scale: LSQ gradient scale for the step size; None for a fixed scale.

    Returns:
        The fake-quantized tensor, same shape as ``x``.

    Example:
        >>> x = torch.tensor([0.3, 2.0], requires_grad=True)
        >>> qp = QParams(torch.tensor(0.5), torch.tensor(0, dtype=torch.int32))
        >>> y = fake_quantize_ste(x, qp, QuantSpec(bits=3))
        >>> y.sum().backward(); y.tolist(), x.grad.tolist()
        ([0.5, 1.5], [1.0, 0.0])
    """
    blocks, _ = to_blocks(x, spec)
    scale = qparams.scale.float()
    if grad_scale is not None:
        scale = scale_gradient(scale.abs().clamp(min=LSQ_MIN_SCALE), grad_scale)
    s, z = expand_blocks(scale), expand_blocks(qparams.zero_point).float()
    q = torch.clamp(round_ste(blocks / s) + z, spec.q_min, spec.q_max)
    return ((q - z) * s).reshape(x.shape)


def lsq_grad_scale(numel: int, spec: QuantSpec) -> float:
    """LSQ's step-size gradient scale ``1 / sqrt(numel * q_max)``."""
    return 1.0 / math.sqrt(max(numel, 1) * max(spec.q_max, 1))


class ActFakeQuant(nn.Module):
    """Per-tensor activation fake quantization with an observer for calibration.

    Args:
        spec: activation quantization (per tensor).
        observer: observer name (``minmax``, ``moving_average``, ``percentile``, ``mse``, ``kl``).
        percentile: for the percentile observer.
        lsq: after ``freeze``, learn the scale (LSQ).
    """

    def __init__(
        self,
        spec: QuantSpec,
        observer: str = "minmax",
        percentile: float = DEFAULT_PERCENTILE,
        lsq: bool = False,
    ) -> None:
        super().__init__()
        self.spec, self.lsq = spec, lsq
        self.observer = make_observer(observer, percentile)
        self.observing = True
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.learned_scale: nn.Parameter | None = None

    def freeze(self) -> None:
        """Turn the observed range into a scale and zero point; stop observing."""
        lo, hi = self.observer.range(self.spec)
        qp = qparams_from_range(torch.tensor(lo), torch.tensor(hi), self.spec)
        self.scale.copy_(qp.scale.float())
        self.zero_point.copy_(qp.zero_point)
        self.observing = False
        if self.lsq:
            self.learned_scale = nn.Parameter(self.scale.clone())

    def qparams(self) -> QParams:
        """Current scale (learned one with LSQ) and zero point."""
        scale = self.learned_scale if self.learned_scale is not None else self.scale
        return QParams(scale.detach().abs().clamp(min=LSQ_MIN_SCALE), self.zero_point)

    def forward(self, x: Tensor) -> Tensor:
        """Observe (calibration) or fake-quantize."""
        if self.observing:
            self.observer.update(x)
            return x
        if self.learned_scale is not None:
            qp = QParams(self.learned_scale, self.zero_point)
            return fake_quantize_ste(x, qp, self.spec, lsq_grad_scale(x[0].numel(), self.spec))
        return fake_quantize_ste(x, QParams(self.scale, self.zero_point), self.spec)


class QuantWrapper(nn.Module):
    """A conv or linear layer with fake-quantized weight and (optionally) input.

    Args:
        layer: the float layer (its weight stays the float master copy).
        weight_spec: weight quantization; granularity applies to the ``[out, -1]`` view.
        act: input activation fake quantizer, or None (weight-only).
        lsq: learn per-block weight scales (LSQ) instead of recomputing them from min/max.
    """

    def __init__(
        self,
        layer: nn.Module,
        weight_spec: QuantSpec,
        act: ActFakeQuant | None = None,
        lsq: bool = False,
    ) -> None:
        super().__init__()
        self.layer, self.weight_spec, self.act = layer, weight_spec, act
        self.weight_scale: nn.Parameter | None = None
        if lsq:
            self.weight_scale = nn.Parameter(self._minmax_qparams().scale.float().clone())

    def _matrix(self) -> Tensor:
        w = self.layer.weight
        return w.reshape(w.shape[0], -1)

    def _minmax_qparams(self) -> QParams:
        return choose_qparams(self._matrix().detach(), self.weight_spec)

    def weight_qparams(self) -> QParams:
        """Scale and zero point of the ``[out, -1]`` weight view."""
        qp = self._minmax_qparams()
        if self.weight_scale is None:
            return qp
        scale = self.weight_scale.detach().abs().clamp(min=LSQ_MIN_SCALE)
        return QParams(scale.to(qp.scale.dtype), qp.zero_point)

    def quantized_weight(self) -> Tensor:
        """The fake-quantized weight in the layer's shape (differentiable)."""
        w = self._matrix()
        if self.weight_scale is None:
            out = fake_quantize_ste(w, self._minmax_qparams(), self.weight_spec)
        else:
            qp = QParams(self.weight_scale, self._minmax_qparams().zero_point)
            out = fake_quantize_ste(
                w, qp, self.weight_spec, lsq_grad_scale(w.numel(), self.weight_spec)
            )
        return out.reshape(self.layer.weight.shape)

    def forward(self, x: Tensor) -> Tensor:
        """``layer(act(x))`` with the fake-quantized weight."""
        if self.act is not None:
            x = self.act(x)
        params = {"weight": self.quantized_weight()}
        if getattr(self.layer, "bias", None) is not None:
            params["bias"] = self.quantized_bias()
        return functional_call(self.layer, params, (x,))

    def quantized_bias(self) -> Tensor:
        """The bias on the int32 grid of ``S_in * S_w`` (as integer kernels store it), or the
        float bias when the input is not quantized."""
        bias = self.layer.bias
        if self.act is None or self.act.observing:
            return bias
        step = self.act.qparams().scale.float() * self.weight_qparams().scale.float().reshape(-1)
        return round_ste(bias / step) * step
