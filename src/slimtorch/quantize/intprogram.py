"""The integer program: a list of steps, and the reference executor that runs it exactly.

A step is one integer operation (``quantize``, ``conv2d``, ``linear``, ``relu``, ``maxpool``,
``sumpool``, ``flatten``, ``requantize``, ``dequantize``; see ``slimtorch.quantize.integer``,
which builds programs, and ``slimtorch.quantize.engine``, which runs them on torch's quantized
engines and falls back to :func:`run_reference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from slimtorch.quantize.intkernels import (
    conv2d_int,
    linear_int,
    max_pool_int,
    requantize,
    sum_pool_int,
)


@dataclass
class Step:
    """One integer operation: ``op`` plus its integer tensors and attributes."""

    op: str
    tensors: dict[str, Tensor] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


def run_reference(
    steps: list[Step], x: Tensor, trace: list[Tensor] | None = None, zero: int = 0
) -> Tensor:
    """Run integer steps with integer torch ops (no float between quantize and dequantize).

    Args:
        steps: the integer program.
        x: float input batch.
        trace: if given, every layer's quantized input (after quantize/requantize) is appended.
        zero: zero point of ``x`` when it is already an integer tensor.

    Returns:
        Float logits.
    """
    for st in steps:
        a, t = st.attrs, st.tensors
        if st.op == "quantize":
            q = torch.round(x / a["scale"]) + a["zero_point"]
            x = q.clamp(a["q_min"], a["q_max"]).to(torch.int32)
            zero = a["zero_point"]
        elif st.op == "requantize":
            x = requantize(x, t["m0"], t["rshift"], a["zero_point"], a["q_min"], a["q_max"])
            zero = a["zero_point"]
        if trace is not None and st.op in ("quantize", "requantize"):
            trace.append(x)
        if st.op in ("quantize", "requantize"):
            continue
        if st.op == "conv2d":
            x = conv2d_int(x - zero, t["weight"], t["bias"], a["stride"], a["padding"], a["groups"])
        elif st.op == "linear":
            x = linear_int(x - zero, t["weight"], t["bias"])
        elif st.op == "relu":
            x = x.clamp(min=0)
        elif st.op == "maxpool":
            x = max_pool_int(x, a["kernel"], a["stride"], a["padding"])
        elif st.op == "sumpool":
            x = sum_pool_int(x, a["kernel"], a["stride"])
        elif st.op == "flatten":
            x = x.flatten(1)
        elif st.op == "dequantize":
            x = x.float() * t["scale"]
    return x
