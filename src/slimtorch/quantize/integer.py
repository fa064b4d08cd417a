"""Integer-only int8 models: built from a calibrated fake-quant model, run, saved, reloaded.

A model is a chain of steps (found in the fx graph of the fake-quant model; branches such as
residual adds are not supported and raise ``ModelError``):

- ``quantize``: the float input becomes uint8 with the first layer's input scale/zero point
  (the only float operation besides the final ``dequantize``).
- ``conv2d`` / ``linear``: int8 weights (per-channel symmetric), zero-point-subtracted uint8
  activations, int32 accumulation and int32 bias (scale ``S_in * S_w``).
- ``relu``, ``maxpool``, ``flatten`` act on the int32 accumulators exactly; ``sumpool`` adds
  windows (an average pool whose division is folded into the next multiplier).
- ``requantize``: int32 accumulators to the next layer's uint8 input with a per-element
  fixed-point multiplier ``M = S_acc / (count * S_next)`` and shift (``intkernels``).
- ``dequantize``: the last accumulators as float logits.

So the integer model computes exactly what the fake-quant model computes, except that
requantization rounds ties up and uses a 31-bit multiplier: outputs agree within one step.

Backends: ``"reference"`` runs the steps above with integer torch ops (exact, slow);
``"x86"`` / ``"fbgemm"`` run the same integers on torch's quantized engines (int8 GEMM with
int32 accumulation; their requantization multiplies by a float scale, so each layer's input is
within one step of the reference's). On a CPU whose engine saturates u8*s8 pair sums in int16
(no VNNI) a program with 8-bit activations would be silently wrong there: it runs on the
reference kernels instead, with a warning (``runs_on`` says which); 7-bit activations
(``PTQConfig.reduce_range``, automatic on such CPUs) keep the engines exact (``engine``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from slimtorch.quantize.ptq import PTQConfig, quantize_ptq
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    >>> x = torch.randn(64, 4)
    >>> qmodel, _ = quantize_ptq(model, [x], PTQConfig(calib_batches=1))
    >>> imodel = to_integer(qmodel, x)
    >>> [s.op for s in imodel.steps]
    ['quantize', 'linear', 'relu', 'requantize', 'linear', 'dequantize']
    >>> bool((imodel(x) - qmodel(x)).abs().max() < 0.1)
    True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from slimtorch.errors import ModelError
from slimtorch.quantize.engine import build_engine_model
from slimtorch.quantize.fakequant import QuantWrapper
from slimtorch.quantize.intkernels import quantize_multiplier
from slimtorch.quantize.intprogram import Step, run_reference
from slimtorch.quantize.primitives import PerGroup
from slimtorch.quantize.ptq import integer_weight

__all__ = ["BACKENDS", "IntegerModel", "Step", "run_reference", "to_integer"]

BACKENDS = ("reference", "x86", "fbgemm")
REDUCED_Q_MAX = 127  # 7-bit activations: u8*s8 pair sums stay inside int16
PASS_THROUGH = (nn.Identity, nn.Dropout)


class _Leaves(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QuantWrapper) or super().is_leaf_module(m, qualname)


def _chain(qmodel: nn.Module) -> list[tuple[str, Any]]:
    """The model's operations in order, checked to form a single chain."""
    try:
        graph = _Leaves().trace(qmodel)
    except Exception as err:
        raise ModelError(f"integer export: cannot trace the model ({err})") from None
    modules = dict(qmodel.named_modules())
    nodes, prev = [], None
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            prev = node if node.op == "placeholder" else prev
            continue
        inputs = [a for a in node.all_input_nodes]
        if inputs != [prev] or len(node.users) > 1:
            raise ModelError(f"integer export: supports chains of layers; {node.target} branches")
        target = modules[node.target] if node.op == "call_module" else node.target
        nodes.append((str(node.target), target))
        prev = node
    return nodes


def _is_relu(target: Any) -> bool:
    return isinstance(target, nn.ReLU) or target in (F.relu, torch.relu)


def _is_flatten(target: Any) -> bool:
    return isinstance(target, nn.Flatten) or target is torch.flatten


def _is_global_pool(target: Any) -> bool:
    return isinstance(target, nn.AdaptiveAvgPool2d) and target.output_size in (1, (1, 1))


def _check_exportable(name: str, w: QuantWrapper) -> None:
    """Refuse a layer the integer program cannot express (named in one line)."""
    if w.act is None:
        raise ModelError(f"integer export: layer {name} has no activation quantizer")
    if isinstance(w.weight_spec.granularity, PerGroup) or not w.weight_spec.symmetric:
        raise ModelError(
            f"integer export: layer {name} needs symmetric per-tensor or per-channel weights"
        )
    layer = w.layer
    if isinstance(layer, nn.Conv2d):
        if (
            layer.dilation != (1, 1)
            or layer.padding_mode != "zeros"
            or isinstance(layer.padding, str)
        ):
            raise ModelError(
                f"integer export: conv {name} needs dilation 1 and numeric zero padding"
            )
    elif not isinstance(layer, nn.Linear):
        raise ModelError(f"integer export: layer {name} is not Conv2d or Linear")


class _Builder:
    """Walks the chain with a real example batch to know every shape and scale."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.acc_scale: Tensor | None = None  # per-element scale of the int32 accumulators
        self.count = 1  # values summed by sum-pools since the last layer

    def compute(self, name: str, w: QuantWrapper, x: Tensor) -> None:
        _check_exportable(name, w)
        aq = w.act.qparams()
        s_in, z_in = float(aq.scale), int(aq.zero_point)
        self.steps.append(self._input_step(s_in, z_in, w.act.spec))
        q, wq = integer_weight(w)
        layer = w.layer
        s_w = wq.scale.float().reshape(-1).expand(layer.weight.shape[0]).contiguous()
        bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(s_w)
        bias_q = torch.round(bias / (s_in * s_w)).to(torch.int32)
        tensors = {
            "weight": q.reshape(layer.weight.shape).to(torch.int8).contiguous(),
            "bias": bias_q,
            "weight_scale": s_w,
        }
        attrs: dict[str, Any] = {"name": name, "in_scale": s_in, "in_zero_point": z_in}
        if isinstance(layer, nn.Conv2d):
            attrs.update(
                stride=list(layer.stride), padding=list(layer.padding), groups=layer.groups
            )
            self.steps.append(Step("conv2d", tensors, attrs))
            self.acc_scale = (s_in * s_w).reshape(-1, 1, 1)
        else:
            self.steps.append(Step("linear", tensors, attrs))
            self.acc_scale = s_in * s_w
        self.count = 1

    def _input_step(self, s_in: float, z_in: int, spec: Any) -> Step:
        """Quantize the float input (first layer) or requantize the accumulators to it."""
        limits = {"zero_point": z_in, "q_min": spec.q_min, "q_max": spec.q_max}
        if self.acc_scale is None:
            return Step("quantize", attrs={"scale": s_in, **limits})
        m0, rshift = quantize_multiplier(self.acc_scale.double() / (self.count * s_in))
        return Step("requantize", {"m0": m0, "rshift": rshift}, limits)

    def passthrough(self, name: str, target: Any, x: Tensor) -> None:
        if self.acc_scale is None:  # still float input: only reshaping commutes with quantize
            if _is_flatten(target):
                self.steps.append(Step("flatten"))
            elif not isinstance(target, PASS_THROUGH):
                raise ModelError(f"integer export: {name} comes before the first quantized layer")
            return
        if _is_relu(target):
            self.steps.append(Step("relu"))
        elif isinstance(target, nn.MaxPool2d):
            k, s, p = (int(_one(v)) for v in (target.kernel_size, target.stride, target.padding))
            self.steps.append(Step("maxpool", attrs={"kernel": k, "stride": s, "padding": p}))
        elif _is_global_pool(target) or isinstance(target, nn.AvgPool2d):
            k = x.shape[-1] if _is_global_pool(target) else int(_one(target.kernel_size))
            s = k if _is_global_pool(target) else int(_one(target.stride))
            if _is_global_pool(target) and x.shape[-1] != x.shape[-2]:
                raise ModelError(f"integer export: {name} needs a square feature map")
            if not _is_global_pool(target) and int(_one(target.padding)):
                raise ModelError(f"integer export: {name}: padded average pools are not supported")
            self.steps.append(Step("sumpool", attrs={"kernel": k, "stride": s}))
            self.count *= k * k
        elif _is_flatten(target):
            self.acc_scale = self.acc_scale.expand(x.shape[1:]).reshape(-1)
            self.steps.append(Step("flatten"))
        elif not isinstance(target, PASS_THROUGH):
            raise ModelError(f"integer export: unsupported operation {name} ({target})")


def _one(v: Any) -> int:
    return v[0] if isinstance(v, tuple | list) else v


def to_integer(qmodel: nn.Module, example: Tensor, backend: str = "reference") -> IntegerModel:
    """Build the integer-only model from a calibrated fake-quant model.

    Args:
        qmodel: output of ``quantize_ptq`` / QAT (activation quantizers frozen).
        example: a batch of inputs with the shape the model will see (fixes pooling sizes).
        backend: ``"reference"``, ``"x86"`` or ``"fbgemm"``.

    Returns:
        An ``IntegerModel``.
    """
    builder, x = _Builder(), example
    qmodel = qmodel.eval()
    with torch.no_grad():
        for name, target in _chain(qmodel):
            if isinstance(target, QuantWrapper):
                builder.compute(name, target, x)
            else:
                builder.passthrough(name, target, x)
            x = target(x)
    if builder.acc_scale is None:
        raise ModelError("integer export: the model has no quantized conv/linear layer")
    builder.steps.append(Step("dequantize", {"scale": (builder.acc_scale / builder.count).float()}))
    return IntegerModel(builder.steps, tuple(example.shape[1:]), backend)


class IntegerModel(nn.Module):
    """An int8 model: integer steps plus the backend that executes them.

    Args:
        steps: the integer program (see the module docstring).
        input_shape: one sample's shape (pool sizes depend on it).
        backend: ``"reference"`` (integer torch ops) or ``"x86"`` / ``"fbgemm"`` (torch's
            quantized engines).
    """

    def __init__(self, steps: list[Step], input_shape: tuple[int, ...], backend: str = "reference"):
        super().__init__()
        if backend not in BACKENDS:
            raise ModelError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
        self.steps, self.input_shape, self.backend = steps, tuple(input_shape), backend
        self._engine_model: nn.Module | None = None

    def forward(self, x: Tensor) -> Tensor:
        """Float input in, float logits out; integers in between."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ModelError(
                f"integer model expects samples of shape {list(self.input_shape)}, "
                f"got {list(x.shape[1:])}"
            )
        if self.backend == "reference":
            return run_reference(self.steps, x)
        return self._engine()(x)

    def _engine(self) -> nn.Module:
        if self._engine_model is None:
            self._engine_model = build_engine_model(self.steps, self.backend)
        return self._engine_model

    @property
    def runs_on(self) -> str:
        """The kernels that run it: the backend, or ``"reference"`` where the engine would
        saturate on this CPU (8-bit activations without VNNI)."""
        return self.backend if self.backend == "reference" else self._engine().runs_on

    @property
    def reduce_range(self) -> bool:
        """Whether every activation fits 7 bits (``q_max <= 127``): exact on every engine."""
        ranges = [s.attrs["q_max"] for s in self.steps if s.op in ("quantize", "requantize")]
        return max(ranges, default=0) <= REDUCED_Q_MAX

    def integer_trace(self, x: Tensor) -> list[Tensor]:
        """Every layer's integer input (uint8 values as int32) on this model's backend.

        Args:
            x: float input batch.

        Returns:
            One tensor per conv/linear layer, in program order.
        """
        trace: list[Tensor] = []
        with torch.no_grad():
            if self.backend == "reference":
                run_reference(self.steps, x, trace=trace)
            else:
                self._engine()(x, trace=trace)
        return trace

    def with_backend(self, backend: str) -> IntegerModel:
        """The same integers on another backend."""
        return IntegerModel(self.steps, self.input_shape, backend)
