"""torch's quantized modules for the integer program's layers, and the engine they run on.

:func:`engine_layer` turns one conv2d/linear step of an integer program into a
``torch.ao.nn.quantized`` module with the step's int8 per-channel weights; the engine
(:mod:`slimtorch.quantize.engine`) chains them, and its saturation probe runs them on
worst-case integers. :func:`quantized_engine` scopes ``torch.backends.quantized.engine``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
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


def engine_layer(step, relu: bool, out_scale: float, out_zero: int) -> nn.Module:
    """The ``torch.ao`` quantized module of one conv2d/linear step (ReLU fused when ``relu``),
    its output requantized to ``out_scale`` / ``out_zero``."""
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
