"""Run an integer program on torch's quantized engines (x86 / fbgemm int8 kernels).

The integers are the ones ``integer.to_integer`` computed: int8 per-channel weights, int32
biases, uint8 activations with the same scales and zero points. Each conv/linear becomes a
``torch.ao.nn.quantized`` module whose output scale is the next layer's input scale (so the
engine requantizes inside its int8 GEMM, with a float multiplier); a ReLU right after a layer is
fused into it. The last layer runs on ``intkernels`` so the logits come from exact int32
accumulators, as in the reference backend. Engine choice is scoped: the global
``torch.backends.quantized.engine`` is set while building and running, then restored.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from slimtorch.quantize.integer import to_integer
    >>> from slimtorch.quantize.ptq import PTQConfig, quantize_ptq
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    >>> x = torch.randn(64, 4)
    >>> qmodel, _ = quantize_ptq(model, [x], PTQConfig(calib_batches=1))
    >>> ref, fast = to_integer(qmodel, x), to_integer(qmodel, x, backend="x86")
    >>> bool((ref(x) - fast(x)).abs().max() < 0.1)
    True
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from slimtorch.errors import ModelError


@contextlib.contextmanager
def quantized_engine(name: str) -> Iterator[None]:
    """Use torch's quantized engine ``name`` inside the block, then restore the previous one."""
    if name not in torch.backends.quantized.supported_engines:
        raise ModelError(
            f"quantized engine {name!r} is not available in this torch build "
            f"({', '.join(torch.backends.quantized.supported_engines)})"
        )
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _qweight(step) -> Tensor:
    w, s = step.tensors["weight"], step.tensors["weight_scale"].double()
    return torch._make_per_channel_quantized_tensor(w, s, torch.zeros_like(s, dtype=torch.long), 0)


def _float_bias(step) -> Tensor:
    return step.tensors["bias"].float() * step.attrs["in_scale"] * step.tensors["weight_scale"]


def _layer(step, relu: bool, out_scale: float, out_zero: int) -> nn.Module:
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    w, a = step.tensors["weight"], step.attrs
    if step.op == "conv2d":
        cls = nniq.ConvReLU2d if relu else nnq.Conv2d
        o, c, kh, kw = w.shape
        m = cls(
            c * a["groups"],
            o,
            (kh, kw),
            stride=tuple(a["stride"]),
            padding=tuple(a["padding"]),
            groups=a["groups"],
        )
    else:
        cls = nniq.LinearReLU if relu else nnq.Linear
        m = cls(w.shape[1], w.shape[0])
    m.set_weight_bias(_qweight(step), _float_bias(step))
    m.scale, m.zero_point = float(out_scale), int(out_zero)
    return m


def _next_input(steps, i: int) -> tuple[float, int]:
    """Scale and zero point of the next layer's input after step ``i``."""
    for st in steps[i + 1 :]:
        if st.op in ("conv2d", "linear"):
            return st.attrs["in_scale"], st.attrs["in_zero_point"]
    raise ModelError("integer program: no layer after a requantize step")


class EngineModel(nn.Module):
    """The engine part (quantized modules) followed by the exact integer tail."""

    def __init__(self, steps, backend: str) -> None:
        super().__init__()
        from slimtorch.quantize.integer import run_reference

        self._run_tail = run_reference
        self.backend = backend
        last = max(i for i, st in enumerate(steps) if st.op in ("conv2d", "linear"))
        start = next(i for i, st in enumerate(steps) if st.op == "quantize")
        self.in_scale = steps[start].attrs["scale"]
        self.in_zero = steps[start].attrs["zero_point"]
        self.pre_flatten = any(st.op == "flatten" for st in steps[:start])
        self.tail = steps[last:]
        with quantized_engine(backend), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.body = nn.Sequential(*self._modules_for(steps, start + 1, last))

    def _modules_for(self, steps, start: int, stop: int) -> list[nn.Module]:
        mods: list[nn.Module] = []
        skip = False
        for i in range(start, stop):
            st = steps[i]
            if skip or st.op == "requantize":
                skip = False
                continue
            if st.op in ("conv2d", "linear"):
                relu = i + 1 < stop and steps[i + 1].op == "relu"
                mods.append(_layer(st, relu, *_next_input(steps, i)))
                skip = relu
            elif st.op == "relu":
                mods.append(nn.ReLU())
            elif st.op == "maxpool":
                a = st.attrs
                mods.append(nn.MaxPool2d(a["kernel"], a["stride"], a["padding"]))
            elif st.op == "sumpool":
                mods.append(nn.AvgPool2d(st.attrs["kernel"], st.attrs["stride"]))
            elif st.op == "flatten":
                mods.append(nn.Flatten())
            else:
                raise ModelError(f"integer program: step {st.op!r} not supported by the engine")
        return mods

    def forward(self, x: Tensor) -> Tensor:
        """Quantize, run the engine modules, finish the last layer in exact int32."""
        x = x.flatten(1) if self.pre_flatten else x
        with quantized_engine(self.backend):
            q = torch.quantize_per_tensor(
                x.float().contiguous(), self.in_scale, self.in_zero, torch.quint8
            )
            q = self.body(q)
            zero = int(q.q_zero_point())
            return self._run_tail(self.tail, q.int_repr().to(torch.int32), zero=zero)


def build_engine_model(steps, backend: str) -> nn.Module:
    """An ``EngineModel`` for ``steps`` on ``backend`` (``"x86"`` or ``"fbgemm"``)."""
    if not any(st.op == "quantize" for st in steps):
        raise ModelError("engine backends need the program to quantize its input")
    return EngineModel(steps, backend)
