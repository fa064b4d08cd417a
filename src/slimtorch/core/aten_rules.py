"""Apply slimtorch's counting rules (see ``counting``) to executed aten ops.

``count_op`` maps one aten op, with its real arguments and outputs, to an ``OpCount``. Rules are
keyed by the aten op name (in-place ``add_`` shares ``add``'s rule); ops with no rule that are
not views or known data movement return ``None`` so the trace can report them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_leaves

from slimtorch.core.counting import (
    ARITH_FLOPS,
    BATCHNORM_INFERENCE_FLOPS,
    BIAS_FLOPS_PER_ELEMENT,
    ELU_COMPARISONS,
    ELU_FLOPS,
    FLOPS_PER_MAC,
    GELU_FLOPS,
    GELU_TANH_FLOPS,
    HARDSIGMOID_COMPARISONS,
    HARDSIGMOID_FLOPS,
    HARDSWISH_COMPARISONS,
    HARDSWISH_FLOPS,
    HARDTANH_COMPARISONS,
    LEAKY_RELU_COMPARISONS,
    LEAKY_RELU_FLOPS,
    LOGSUMEXP_COMPARISONS,
    LOGSUMEXP_FLOPS,
    MISH_COMPARISONS,
    MISH_FLOPS,
    NORM_AFFINE_FLOPS,
    NORM_STATS_FLOPS,
    RELU_COMPARISONS,
    RMS_NORM_AFFINE_FLOPS,
    RMS_NORM_FLOPS,
    SDPA_MASK_FLOPS,
    SIGMOID_FLOPS,
    SILU_FLOPS,
    SOFTMAX_COMPARISONS,
    SOFTMAX_FLOPS,
    SOFTPLUS_COMPARISONS,
    SOFTPLUS_FLOPS,
    TANH_FLOPS,
    VAR_FLOPS,
    VECTOR_NORM_FLOPS,
    WEIGHT_NORM_FLOPS,
    IsWeight,
    OpCount,
    adaptive_window_total,
)

ZERO = OpCount()
Rule = Callable[[tuple[Any, ...], dict[str, Any], Any, IsWeight], OpCount]


def _out(out: Any) -> Tensor:
    """The first tensor an op returned."""
    return next(t for t in tree_leaves(out) if isinstance(t, Tensor))


def _effective(macs: int, operands: tuple[Tensor, ...], is_weight: IsWeight) -> int:
    """MACs on nonzero weights, using the first static operand as the weight."""
    for w in operands:
        if isinstance(w, Tensor) and is_weight(w) and w.numel() > 0:
            if w.is_meta:  # no values to inspect
                return macs
            return macs * int(torch.count_nonzero(w)) // w.numel()
    return macs


def _mac_count(macs: int, extra_flops: int, operands: tuple[Tensor, ...], is_weight: IsWeight):
    eff = _effective(macs, operands, is_weight)
    return OpCount(macs, FLOPS_PER_MAC * macs + extra_flops, 0, eff)


def _conv(args, kwargs, out, is_weight) -> OpCount:
    x, w, bias, transposed = args[0], args[1], args[2], bool(args[6])
    y = _out(out)
    positions = x.numel() if transposed else y.numel()
    macs = positions * math.prod(w.shape[1:])
    bias_flops = BIAS_FLOPS_PER_ELEMENT * y.numel() if bias is not None else 0
    return _mac_count(macs, bias_flops, (w,), is_weight)


def _matmul(args, kwargs, out, is_weight, *, first: int, bias: bool) -> OpCount:
    """mm/bmm/mv/dot and their add- forms; ``first`` = index of the left operand."""
    a, b = args[first], args[first + 1]
    macs = math.prod(a.shape) * (b.shape[-1] if b.dim() > 1 else 1)
    extra = BIAS_FLOPS_PER_ELEMENT * _out(out).numel() if bias else 0
    return _mac_count(macs, extra, (b, a), is_weight)


def _weight_int8pack_mm(args, kwargs, out, is_weight) -> OpCount:
    x, w = args[0], args[1]  # x [M, K] @ w [N, K].T
    return _mac_count(math.prod(x.shape) * w.shape[0], 0, (w,), is_weight)


def _sdpa(args, kwargs, out, is_weight) -> OpCount:
    q, k, v = args[0], args[1], args[2]
    scores = math.prod(q.shape[:-1]) * k.shape[-2]
    macs = scores * q.shape[-1] + scores * v.shape[-1]
    has_mask = any(isinstance(t, Tensor) for t in (*args[3:], *kwargs.values()))
    k_per_query_head = math.prod(q.shape[:-2]) * k.shape[-2] * k.shape[-1]  # GQA broadcast
    extra = q.numel() + k_per_query_head + scores * (SOFTMAX_FLOPS + SDPA_MASK_FLOPS * has_mask)
    return OpCount(macs, FLOPS_PER_MAC * macs + extra, scores * SOFTMAX_COMPARISONS, macs)


def _elementwise(args, kwargs, out, is_weight, *, flops: int, comparisons: int = 0) -> OpCount:
    n = _out(out).numel()
    return OpCount(0, flops * n, comparisons * n, 0)


def _gelu(args, kwargs, out, is_weight) -> OpCount:
    per = GELU_TANH_FLOPS if kwargs.get("approximate", "none") == "tanh" else GELU_FLOPS
    return _elementwise(args, kwargs, out, is_weight, flops=per)


def _clamp(args, kwargs, out, is_weight) -> OpCount:
    bounds = [*args[1:3], kwargs.get("min"), kwargs.get("max")]
    n_bounds = sum(b is not None for b in bounds)
    return _elementwise(args, kwargs, out, is_weight, flops=0, comparisons=n_bounds)


def _reduce(args, kwargs, out, is_weight, *, flops: int, comparisons: int, minus_out: bool):
    """Reductions cost per input element, optionally minus one per output (k-1 per window)."""
    n_in, n_out = args[0].numel(), _out(out).numel()
    per = n_in - (n_out if minus_out else 0)
    return OpCount(0, flops * per, comparisons * per, 0)


def _max_min(args, kwargs, out, is_weight) -> OpCount:
    if len(args) > 1 and isinstance(args[1], Tensor):
        return _elementwise(args, kwargs, out, is_weight, flops=0, comparisons=1)
    return _reduce(args, kwargs, out, is_weight, flops=0, comparisons=1, minus_out=True)


def _is_training_norm(args) -> bool:
    """batch-norm variants carry ``training`` as their first bool argument."""
    return next((a for a in args if isinstance(a, bool)), True)


def _batch_norm(args, kwargs, out, is_weight, *, weight_at: int = 1) -> OpCount:
    n = args[0].numel()
    if not _is_training_norm(args):
        return OpCount(0, BATCHNORM_INFERENCE_FLOPS * n, 0, 0)
    affine = NORM_AFFINE_FLOPS if args[weight_at] is not None else 0
    return OpCount(0, (NORM_STATS_FLOPS + affine) * n, 0, 0)


def _stats_norm(args, kwargs, out, is_weight, *, weight_at: int) -> OpCount:
    affine = NORM_AFFINE_FLOPS if args[weight_at] is not None else 0
    return OpCount(0, (NORM_STATS_FLOPS + affine) * args[0].numel(), 0, 0)


def _rms_norm(args, kwargs, out, is_weight) -> OpCount:
    affine = RMS_NORM_AFFINE_FLOPS if len(args) > 2 and args[2] is not None else 0
    return OpCount(0, (RMS_NORM_FLOPS + affine) * args[0].numel(), 0, 0)


def _window(kernel: list[int], ndim: int) -> int:
    """Elements in a pooling window; aten expands a one-element kernel to every dim."""
    return kernel[0] ** ndim if len(kernel) == 1 else math.prod(kernel)


def _pool(args, kwargs, out, is_weight, *, ndim: int, is_max: bool) -> OpCount:
    n_out, k = _out(out).numel(), _window(list(args[1]), ndim)
    if is_max:
        return OpCount(0, 0, n_out * (k - 1), 0)
    return OpCount(0, n_out * k, 0, 0)


def _adaptive_pool(args, kwargs, out, is_weight, *, ndim: int, is_max: bool) -> OpCount:
    x, y = args[0], _out(out)
    channels = x.numel() // math.prod(x.shape[-ndim:])
    window = channels * adaptive_window_total(tuple(x.shape[-ndim:]), tuple(y.shape[-ndim:]))
    if is_max:
        return OpCount(0, 0, window - y.numel(), 0)
    return OpCount(0, window, 0, 0)


def _weight_norm(args, kwargs, out, is_weight) -> OpCount:
    return OpCount(0, WEIGHT_NORM_FLOPS * args[0].numel(), 0, 0)


def _table() -> dict[str, Rule]:
    """Rules keyed by aten op name without the in-place ``_`` suffix."""
    ew = _elementwise
    rules: dict[str, Rule] = {
        "convolution": _conv,
        "_convolution": _conv,
        "mm": partial(_matmul, first=0, bias=False),
        "_int_mm": partial(_matmul, first=0, bias=False),
        "_weight_int8pack_mm": _weight_int8pack_mm,
        "bmm": partial(_matmul, first=0, bias=False),
        "mv": partial(_matmul, first=0, bias=False),
        "dot": partial(_matmul, first=0, bias=False),
        "vdot": partial(_matmul, first=0, bias=False),
        "addmm": partial(_matmul, first=1, bias=True),
        "baddbmm": partial(_matmul, first=1, bias=True),
        "addmv": partial(_matmul, first=1, bias=True),
        "gelu": _gelu,
        "clamp": _clamp,
        "max": _max_min,
        "min": _max_min,
        "native_batch_norm": _batch_norm,
        "_native_batch_norm_legit": _batch_norm,
        "_native_batch_norm_legit_no_training": _batch_norm,
        "_native_batch_norm_legit_functional": _batch_norm,
        "native_layer_norm": partial(_stats_norm, weight_at=2),
        "native_group_norm": partial(_stats_norm, weight_at=1),
        "_fused_rms_norm": _rms_norm,
        "_weight_norm_interface": _weight_norm,
    }
    for kind in (
        "flash_attention_for_cpu",
        "flash_attention",
        "efficient_attention",
        "cudnn_attention",
    ):
        rules[f"_scaled_dot_product_{kind}"] = _sdpa
    arith = (
        "add sub rsub mul div true_divide neg reciprocal sqrt rsqrt exp exp2 expm1 log log2 "
        "log10 log1p pow square erf erfc sin cos abs remainder fmod floor_divide"
    )
    rules.update({n: partial(ew, flops=ARITH_FLOPS) for n in arith.split()})
    logic = (
        "relu threshold eq ne lt le gt ge where masked_fill maximum minimum fmax fmin "
        "clamp_min clamp_max logical_and logical_or logical_not logical_xor sign"
    )
    rules.update({n: partial(ew, flops=0, comparisons=RELU_COMPARISONS) for n in logic.split()})
    per_element = {
        "hardtanh": (0, HARDTANH_COMPARISONS),
        "leaky_relu": (LEAKY_RELU_FLOPS, LEAKY_RELU_COMPARISONS),
        "elu": (ELU_FLOPS, ELU_COMPARISONS),
        "sigmoid": (SIGMOID_FLOPS, 0),
        "silu": (SILU_FLOPS, 0),
        "tanh": (TANH_FLOPS, 0),
        "hardswish": (HARDSWISH_FLOPS, HARDSWISH_COMPARISONS),
        "hardsigmoid": (HARDSIGMOID_FLOPS, HARDSIGMOID_COMPARISONS),
        "softplus": (SOFTPLUS_FLOPS, SOFTPLUS_COMPARISONS),
        "mish": (MISH_FLOPS, MISH_COMPARISONS),
        "_softmax": (SOFTMAX_FLOPS, SOFTMAX_COMPARISONS),
        "_safe_softmax": (SOFTMAX_FLOPS, SOFTMAX_COMPARISONS),
        "_log_softmax": (SOFTMAX_FLOPS, SOFTMAX_COMPARISONS),
        "addcmul": (2, 0),
        "addcdiv": (2, 0),
        "lerp": (3, 0),
        "cumsum": (ARITH_FLOPS, 0),
    }
    rules.update({n: partial(ew, flops=f, comparisons=c) for n, (f, c) in per_element.items()})
    reductions = {
        "sum": (ARITH_FLOPS, 0, True),
        "prod": (ARITH_FLOPS, 0, True),
        "mean": (ARITH_FLOPS, 0, False),
        "var": (VAR_FLOPS, 0, False),
        "std": (VAR_FLOPS, 0, False),
        "var_mean": (VAR_FLOPS, 0, False),
        "std_mean": (VAR_FLOPS, 0, False),
        "linalg_vector_norm": (VECTOR_NORM_FLOPS, 0, False),
        "norm": (VECTOR_NORM_FLOPS, 0, False),
        "logsumexp": (LOGSUMEXP_FLOPS, LOGSUMEXP_COMPARISONS, False),
        "amax": (0, 1, True),
        "amin": (0, 1, True),
        "argmax": (0, 1, True),
        "argmin": (0, 1, True),
    }
    for n, (f, c, minus) in reductions.items():
        rules[n] = partial(_reduce, flops=f, comparisons=c, minus_out=minus)
    for d in (1, 2, 3):
        rules[f"max_pool{d}d"] = partial(_pool, ndim=d, is_max=True)
        rules[f"max_pool{d}d_with_indices"] = partial(_pool, ndim=d, is_max=True)
        rules[f"avg_pool{d}d"] = partial(_pool, ndim=d, is_max=False)
        rules[f"_adaptive_avg_pool{d}d"] = partial(_adaptive_pool, ndim=d, is_max=False)
        rules[f"adaptive_avg_pool{d}d"] = partial(_adaptive_pool, ndim=d, is_max=False)
        rules[f"adaptive_max_pool{d}d"] = partial(_adaptive_pool, ndim=d, is_max=True)
    return rules


RULES: dict[str, Rule] = _table()

_ZERO_COST_NAMES = """
    clone copy _to_copy contiguous cat stack _unsafe_view empty empty_like empty_strided
    zeros zeros_like ones ones_like full full_like fill zero new_empty new_empty_strided new_zeros
    new_ones new_full arange scalar_tensor lift_fresh lift_fresh_copy detach embedding
    index_select gather scatter index index_put slice_scatter select_scatter constant_pad_nd
    reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d replication_pad2d
    replication_pad3d repeat roll flip tril triu _local_scalar_dense item randn rand randint
    normal uniform bernoulli resize set upsample_nearest1d upsample_nearest2d
    upsample_nearest3d pixel_shuffle pixel_unshuffle im2col col2im
    _assert_async sym_size sym_numel sym_stride is_same_size alias"""
ZERO_COST_OPS = frozenset(_ZERO_COST_NAMES.split())


def op_key(func: torch._ops.OpOverload) -> str:
    """Rule key of an aten op: its name without the in-place ``_`` suffix (``add_`` -> ``add``)."""
    name = func.overloadpacket.__name__
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name


def count_op(
    func: torch._ops.OpOverload,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
    is_weight: IsWeight,
) -> OpCount | None:
    """Cost of one executed aten op under the module's counting rules.

    Args:
        func: the aten overload that ran (e.g. ``torch.ops.aten.addmm.default``).
        args: its positional arguments.
        kwargs: its keyword arguments.
        out: what it returned.
        is_weight: says whether a tensor is static (parameter-derived); used for effective MACs.

    Returns:
        The ``OpCount``; ``ZERO`` for views and known data movement; ``None`` when no rule
        covers the op (the caller reports it as uncounted).

    Example:
        >>> aten = torch.ops.aten
        >>> a, b = torch.ones(2, 3), torch.ones(3, 4)
        >>> count_op(aten.mm.default, (a, b), {}, a @ b, lambda t: False).macs
        24
    """
    rule = RULES.get(op_key(func))
    if rule is not None:
        return rule(args, kwargs, out, is_weight)
    if func.is_view or op_key(func) in ZERO_COST_OPS:
        return ZERO
    return None
