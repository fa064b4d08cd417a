"""Run an integer program on torch's quantized engines (x86 / fbgemm int8 kernels).

The integers are the ones ``integer.to_integer`` computed: int8 per-channel weights, int32
biases, uint8 activations with the same scales, zero points and ranges. Each conv/linear becomes
a ``torch.ao.nn.quantized`` module whose output scale is the next layer's input scale (so the
engine requantizes inside its int8 GEMM, with a float multiplier); a ReLU right after a layer is
fused into it; where a layer's input range is narrower than uint8 (7-bit ``reduce_range``
activations) a clamp stands at the requantize step. The program runs as segments, one per
layer, each ending at the next layer's input, and the last layer runs on ``intkernels`` so the
logits come from exact int32 accumulators, as in the reference backend. Every segment gives the
reference's integers within one step (float vs fixed-point rounding; an average pool averages
rounded values). Engine choice is scoped: ``torch.backends.quantized.engine`` is set while
building and running, then restored.

Pooled segments. torch's int8 layers output uint8 only, so before an average pool the engine
would requantize the layer's output to the next layer's grid, where the reference sums exact
int32 and clips only the average: a pool input beyond 0..255 would be clipped early and the
average off by many steps (32 on VGG's global pool with 8-bit activations). A segment with an
average pool therefore runs on the exact integer kernels, which sum the integer products with
torch's float kernels where that is exact (:mod:`~slimtorch.quantize.intkernels`), so it gives
the reference integers at about the cost of a float layer.

Saturation. Without VNNI (AVX2, AVX-512 without VNNI) these kernels multiply uint8 by int8 with
``vpmaddubsw``, which adds products in pairs into int16 with saturation: full-range activations
(0..255) times int8 weights reach ``2 * 255 * 127 > 32767`` and the sums are silently wrong.
``kernel_saturates`` measures this per kernel shape (worst-case integers, against exact
arithmetic; cached); a program whose layers could leave int16 on a saturating engine runs on
the exact reference kernels instead, with a one-line warning. Calibrating with 7-bit activations
(``PTQConfig(reduce_range=...)``, the default ``"auto"`` does so where the engine saturates)
keeps every pair sum inside int16, so the fast path is exact on every CPU.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from slimtorch.quantize.integer import to_integer
    >>> from slimtorch.quantize.ptq import PTQConfig, quantize_ptq
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    >>> x = torch.randn(64, 4)
    >>> qmodel, _ = quantize_ptq(model, [x], PTQConfig(calib_batches=1))
    >>> ref, fast = to_integer(qmodel, x), to_integer(qmodel, x, backend="x86")
    >>> ref_q, fast_q = ref.integer_trace(x), fast.integer_trace(x)
    >>> [int((a - b).abs().max()) <= 1 for a, b in zip(ref_q, fast_q)]
    [True, True]
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor, nn

from slimtorch.errors import ModelError
from slimtorch.quantize.engine_layers import engine_layer, quantized_engine
from slimtorch.quantize.intkernels import conv2d_int, linear_int
from slimtorch.quantize.intprogram import Step, run_reference

ENGINES = ("x86", "fbgemm")
UINT8_RANGE = (0, 255)  # what a quint8 tensor holds
INT16_MAX = 2**15 - 1  # vpmaddubsw saturates each sum of two u8*s8 products here
PROBE_ACT, PROBE_WEIGHT = 255, 127  # worst-case uint8 activation and int8 weight magnitude
PROBE_LEVEL = 200  # the exact probe maximum is requantized to this uint8 level
PROBE_TOLERANCE = 1  # float requantization may differ from exact by one step
STANDARD_CONV = ("conv2d", 16, 16, (3, 3), (1, 1), (1, 1), 1)  # the machine-level probe
STANDARD_LINEAR = ("linear", 64, 16)


def pairs_fit_int16(act_max: int, weight_max: int) -> bool:
    """Whether every sum of two ``u8 * s8`` products fits int16 (then no kernel saturates).

    Example:
        >>> pairs_fit_int16(255, 127), pairs_fit_int16(127, 128)
        (False, True)
    """
    return 2 * act_max * weight_max <= INT16_MAX


def _probe_step(op: str, in_ch: int, out_ch: int, kernel, stride, padding, groups: int):
    shape = (out_ch, in_ch // groups, *kernel) if op == "conv2d" else (out_ch, in_ch)
    tensors = {
        "weight": torch.full(shape, PROBE_WEIGHT, dtype=torch.int8),
        "bias": torch.zeros(out_ch, dtype=torch.int32),
        "weight_scale": torch.ones(out_ch),
    }
    attrs = {"in_scale": 1.0, "stride": list(stride), "padding": list(padding), "groups": groups}
    return Step(op, tensors, attrs)


@functools.cache
def kernel_saturates(
    backend: str,
    op: str,
    in_ch: int,
    out_ch: int,
    kernel: tuple[int, int] = (1, 1),
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    groups: int = 1,
) -> bool:
    """Measure whether ``backend``'s int8 kernel for this layer shape saturates on this CPU.

    Runs the layer with every activation 255 and every weight 127 (each pair of products is
    64770, twice int16) and compares with exact integer arithmetic. Cached per shape.

    Args:
        backend: ``"x86"`` or ``"fbgemm"``.
        op: ``"conv2d"`` or ``"linear"``.
        in_ch: input channels / features.
        out_ch: output channels / features.
        kernel: conv kernel size.
        stride: conv stride.
        padding: conv padding.
        groups: conv groups.

    Returns:
        True when the engine's result is not the exact one.
    """
    step = _probe_step(op, in_ch, out_ch, kernel, stride, padding, groups)
    w, bias = step.tensors["weight"], step.tensors["bias"]
    if op == "conv2d":
        side = 2 * max(kernel) + max(stride)
        x = torch.full((1, in_ch, side, side), PROBE_ACT, dtype=torch.int32)
        exact = conv2d_int(x, w, bias, stride, padding, groups)
    else:
        x = torch.full((2, in_ch), PROBE_ACT, dtype=torch.int32)
        exact = linear_int(x, w, bias)
    out_scale = float(exact.max()) / PROBE_LEVEL
    with quantized_engine(backend), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch._make_per_tensor_quantized_tensor(x.to(torch.uint8).contiguous(), 1.0, 0)
        got = engine_layer(step, False, out_scale, 0)(q).int_repr().to(torch.int64)
    want = torch.round(exact.double() / out_scale).clamp(*UINT8_RANGE)
    return bool((got - want).abs().max() > PROBE_TOLERANCE)


def engine_saturates(backend: str | None = None) -> bool:
    """Whether torch's int8 engine saturates u8*s8 pair sums on this CPU (measured, cached).

    Args:
        backend: ``"x86"`` or ``"fbgemm"``; None: either of them that this torch build has.

    Returns:
        True when a 3x3 conv or a linear at worst-case integers comes out wrong.
    """
    names = [backend] if backend else ENGINES
    names = [b for b in names if b in torch.backends.quantized.supported_engines]
    return any(kernel_saturates(b, *STANDARD_CONV) or kernel_saturates(b, *STANDARD_LINEAR)
               for b in names)  # fmt: skip


def _layer_saturates(step, backend: str, act_max: int) -> bool:
    if pairs_fit_int16(act_max, int(step.tensors["weight"].abs().max())):
        return False
    w, a = step.tensors["weight"], step.attrs
    if step.op == "linear":
        return kernel_saturates(backend, "linear", w.shape[1], w.shape[0])
    shape = (tuple(w.shape[2:]), tuple(a["stride"]), tuple(a["padding"]), a["groups"])
    return kernel_saturates(backend, "conv2d", w.shape[1] * a["groups"], w.shape[0], *shape)


def saturating_layers(steps, backend: str) -> list[str]:
    """Layers of ``steps`` that ``backend`` would run with saturated sums on this CPU.

    The last conv/linear runs on exact int32 kernels, so it never counts.

    Args:
        steps: the integer program.
        backend: ``"x86"`` or ``"fbgemm"``.

    Returns:
        Layer names, in program order.
    """
    layers = [i for i, st in enumerate(steps) if st.op in ("conv2d", "linear")]
    names, act_max = [], UINT8_RANGE[1]
    for i, st in enumerate(steps[: layers[-1]] if layers else []):
        if st.op in ("quantize", "requantize"):
            act_max = st.attrs["q_max"]
        elif st.op in ("conv2d", "linear") and _layer_saturates(st, backend, act_max):
            names.append(st.attrs.get("name", f"step {i}"))
    return names


class _Clamp(nn.Module):
    """Clamp a quint8 tensor to the integers ``[q_min, q_max]`` (exact: bounds on its grid)."""

    def __init__(self, q_min: int, q_max: int) -> None:
        super().__init__()
        self.q_min, self.q_max = q_min, q_max

    def forward(self, q: Tensor) -> Tensor:
        s, z = q.q_scale(), q.q_zero_point()
        return torch.clamp(q, (self.q_min - z) * s, (self.q_max - z) * s)


def _clamp(attrs) -> nn.Module:
    narrow = (attrs["q_min"], attrs["q_max"]) != UINT8_RANGE
    return _Clamp(attrs["q_min"], attrs["q_max"]) if narrow else nn.Identity()


def _next_input(steps, i: int) -> tuple[float, int]:
    """Scale and zero point of the next layer's input after step ``i``."""
    for st in steps[i + 1 :]:
        if st.op in ("conv2d", "linear"):
            return st.attrs["in_scale"], st.attrs["in_zero_point"]
    raise ModelError("integer program: no layer after a requantize step")


class _ExactSegment(nn.Module):
    """A segment with an average pool, run on the exact integer kernels (see "Pooled segments"
    in the module docstring); ``steps`` runs from its layer to its requantize, whose output is
    on the next layer's grid (``scale``, ``zero``)."""

    def __init__(self, steps, scale: float, zero: int) -> None:
        super().__init__()
        self.steps, self.scale, self.zero = steps, scale, zero

    def forward(self, q: Tensor) -> Tensor:
        x = q.int_repr().to(torch.int32)
        exact = run_reference(self.steps, x, zero=int(q.q_zero_point())).to(torch.uint8)
        return torch._make_per_tensor_quantized_tensor(exact, self.scale, self.zero)


def _segment(steps, mods: list[nn.Module], pool_at: int | None, next_grid) -> nn.Module:
    """One segment's module; ``steps`` runs from its layer to its requantize, whose output is
    on ``next_grid`` (scale, zero point)."""
    if pool_at is None:
        return nn.Sequential(*mods)
    return _ExactSegment(steps, *next_grid)


def _segments(steps, start: int, stop: int) -> list[nn.Module]:
    """Engine modules for ``steps[start:stop]``, cut after every requantize (layer inputs)."""
    segments: list[nn.Module] = []
    mods: list[nn.Module] = []
    skip, first, pool_at = False, start, None
    for i in range(start, stop):
        st = steps[i]
        if skip:
            skip = False
        elif st.op == "requantize":
            grid = _next_input(steps, i)
            segments.append(
                _segment(steps[first : i + 1], [*mods, _clamp(st.attrs)], pool_at, grid)
            )
            mods, first, pool_at = [], i + 1, None
        elif st.op in ("conv2d", "linear"):
            relu = i + 1 < stop and steps[i + 1].op == "relu"
            mods.append(engine_layer(st, relu, *_next_input(steps, i)))
            skip = relu
        elif st.op == "relu":
            mods.append(nn.ReLU())
        elif st.op == "maxpool":
            a = st.attrs
            mods.append(nn.MaxPool2d(a["kernel"], a["stride"], a["padding"]))
        elif st.op == "sumpool":
            pool_at = len(mods) if pool_at is None else pool_at
            mods.append(nn.AvgPool2d(st.attrs["kernel"], st.attrs["stride"]))
        elif st.op == "flatten":
            mods.append(nn.Flatten())
        else:
            raise ModelError(f"integer program: step {st.op!r} not supported by the engine")
    if mods:
        raise ModelError("integer program: the last layer's input is not requantized")
    return segments


class EngineModel(nn.Module):
    """The engine part (quantized modules, one segment per layer) then the exact integer tail.

    ``runs_on`` is the backend, or ``"reference"`` when the engine would saturate on this CPU
    (see the module docstring); the program is then run by the reference kernels.
    """

    def __init__(self, steps, backend: str) -> None:
        super().__init__()
        self.steps, self.backend, self.runs_on = steps, backend, backend
        with quantized_engine(backend):
            self.saturating = saturating_layers(steps, backend)
        if self.saturating:
            self.runs_on = "reference"
            warnings.warn(
                f"int8 engine {backend!r} saturates on this CPU (u8*s8 pair sums beyond int16, "
                f"no VNNI) for layer(s) {', '.join(self.saturating)} with 8-bit activations: "
                "running the exact reference kernels instead (slow); calibrate with "
                "reduce_range (7-bit activations) for the fast path",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        last = max(i for i, st in enumerate(steps) if st.op in ("conv2d", "linear"))
        start = next(i for i, st in enumerate(steps) if st.op == "quantize")
        a = steps[start].attrs
        self.in_scale, self.in_zero = a["scale"], a["zero_point"]
        self.input_clamp = _clamp(a)
        self.pre_flatten = any(st.op == "flatten" for st in steps[:start])
        self.tail = steps[last:]
        layer_inputs = [i for i, st in enumerate(steps[:last]) if st.op in ("conv2d", "linear")]
        self.segment_inputs = [
            (steps[i].attrs["in_scale"], steps[i].attrs["in_zero_point"]) for i in layer_inputs
        ]
        with quantized_engine(backend), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.segments = nn.ModuleList(_segments(steps, start + 1, last))

    def run_segment(self, k: int, x: Tensor) -> Tensor:
        """Segment ``k`` on integers: layer ``k``'s uint8 input in, layer ``k + 1``'s out."""
        s, z = self.segment_inputs[k]
        with quantized_engine(self.backend):
            q = torch._make_per_tensor_quantized_tensor(x.to(torch.uint8).contiguous(), s, z)
            return self.segments[k](q).int_repr().to(torch.int32)

    def forward(self, x: Tensor, trace: list[Tensor] | None = None) -> Tensor:
        """Quantize, run the engine segments, finish the last layer in exact int32.

        Args:
            x: float input batch.
            trace: if given, every layer's integer input is appended (as ``run_reference``).
        """
        if self.runs_on == "reference":
            return run_reference(self.steps, x, trace=trace)
        x = x.flatten(1) if self.pre_flatten else x
        with quantized_engine(self.backend):
            q = torch.quantize_per_tensor(
                x.float().contiguous(), self.in_scale, self.in_zero, torch.quint8
            )
            q = self.input_clamp(q)
            for segment in self.segments:
                if trace is not None:
                    trace.append(q.int_repr().to(torch.int32))
                q = segment(q)
            ints = q.int_repr().to(torch.int32)
            if trace is not None:
                trace.append(ints)
            return run_reference(self.tail, ints, zero=int(q.q_zero_point()))


def build_engine_model(steps, backend: str) -> EngineModel:
    """An ``EngineModel`` for ``steps`` on ``backend`` (``"x86"`` or ``"fbgemm"``)."""
    if not any(st.op == "quantize" for st in steps):
        raise ModelError("engine backends need the program to quantize its input")
    return EngineModel(steps, backend)
