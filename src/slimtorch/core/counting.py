"""Counting rules: MACs, FLOPs and OPs of one aten op.

These are slimtorch's documented counting rules. ``trace.trace_model`` records every aten op a
model executes and asks ``aten_rules.count_op`` for its cost. Every number below is a named
constant.

Definitions
-----------
- **MAC**: one multiply-accumulate of a dot product (conv, linear, matmul). 1 MAC = 2 FLOPs.
- **FLOP**: one arithmetic operation (add, sub, mul, div, exp, log, sqrt, erf, ... each = 1).
- **comparison**: one compare / select / logic op (max, relu, where, ==). Not a FLOP.
- **OPs** = FLOPs + comparisons: every arithmetic and logic operation.
- **effective MACs**: MACs that multiply a nonzero weight. When a MAC op's weight operand is
  static (a parameter or buffer, or a tensor computed only from them, such as ``W.t()`` or a
  pruning mask product), effective = MACs * nnz(weight) / numel(weight). This is exact for
  conv, linear and matmul: every weight element takes part in the same number of MACs (conv:
  batch * output positions, per weight; mm: M per weight), so the integer division is exact.
  Products of two activations (attention), and weights on the meta device, have
  effective = MACs.

Rules (per op; "element" = element of the op's output unless stated)
------------------------------------------------------------------------
==========================================  ========================  ===========
op                                          FLOPs                     comparisons
==========================================  ========================  ===========
conv, any dims/stride/pad/dilation/groups   2 * out_elems * Cin/g *   0
                                            prod(k) (+1/out if bias)
transposed conv                             2 * in_elems * Cout/g *   0
                                            prod(k) (+1/out if bias)
mm / bmm / _int_mm / _weight_int8pack_mm    2 * batch * M*K*N         0
  ((..., M, K) @ (..., K, N))
addmm / baddbmm / addmv (linear with bias)  matmul + 1 per output     0
mv / dot                                    2 * M*K / 2 * K           0
einsum, matmul, linear                      decompose into the above  -
scaled_dot_product_attention (fused)        2*(S*E + S*Ev) + Q + K    S = B*H*Lq*Lk
  (S scores; Q, K = q/k numel for scale,    + 4*S softmax (+S mask)   (softmax max)
  K broadcast to the query heads)
add/sub/mul/div/neg/exp/log/sqrt/pow/erf    1                         0
addcmul / addcdiv / lerp                    2 / 2 / 3                 0
relu / threshold                            0                         1
relu6 = hardtanh / clamp(min, max)          0                         2 (1 per bound)
leaky_relu                                  1 (slope multiply)        1
elu                                         3 (exp, sub, mul)         1
sigmoid                                     4 (neg, exp, add, div)    0
silu                                        5 (sigmoid + mul)         0
tanh                                        5 (mul, exp, add, div,    0
                                            sub: 1 - 2/(e^2x + 1))
gelu (erf) / gelu (tanh approximation)      5 / 14                    0
hardswish / hardsigmoid                     3 / 2 (add, [mul,] div)   2
softplus / mish                             3 / 9                     1 / 1
softmax / log_softmax (per element)         4 (sub, exp, sum, div)    1 (max)
batch norm, inference (running stats)       2 (folded scale + shift)  0
batch/layer/group/instance norm, computing  6 (mean 1, var 3,         0
statistics                                  normalize 2) + 2 affine
RMS norm (fused)                            3 (square, sum, scale)    0
                                            + 1 affine
weight norm (per weight element)            3 (square, sum, scale)    0
max pool (per output)                       0                         kernel - 1
avg pool (per output)                       kernel (k-1 adds + div)   0
adaptive pools                              exact window sizes from input/output sizes
sum / prod (per input element)              1 (minus 1 per output)    0
cumsum                                      1                         0
logsumexp (per input element)               3 (sub, exp, add)         1 (max)
mean (per input element)                    1                         0
var / std (per input element)               4                         0
vector norm (per input element)             2                         0
max / min / amax / argmax (reductions)      0                         in - out
eq/ne/lt/gt/where/masked_fill/maximum/...   0                         1
views, reshapes, copies, cat, pad, index,   0                         0
embedding, upsample_nearest, creation ops
==========================================  ========================  ===========

Transposed convs count input positions (what a scatter implementation multiplies, as fvcore
and ``torch.utils.flop_counter`` do), not output positions, which would include the zeros a
strided transposed conv inserts between inputs.

Ops with no rule (e.g. upsample_bilinear2d, topk) count 0 and are reported by the trace in
``Trace.uncounted_ops``. Causal masking in fused attention is not discounted (full scores).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

FLOPS_PER_MAC = 2
BIAS_FLOPS_PER_ELEMENT = 1
ARITH_FLOPS = 1
RELU_COMPARISONS = 1
HARDTANH_COMPARISONS = 2
LEAKY_RELU_FLOPS, LEAKY_RELU_COMPARISONS = 1, 1
ELU_FLOPS, ELU_COMPARISONS = 3, 1
SIGMOID_FLOPS = 4
SILU_FLOPS = SIGMOID_FLOPS + 1
TANH_FLOPS = 5
GELU_FLOPS = 5
GELU_TANH_FLOPS = 14
HARDSWISH_FLOPS, HARDSWISH_COMPARISONS = 3, 2
HARDSIGMOID_FLOPS, HARDSIGMOID_COMPARISONS = 2, 2
SOFTPLUS_FLOPS, SOFTPLUS_COMPARISONS = 3, 1
MISH_FLOPS, MISH_COMPARISONS = SOFTPLUS_FLOPS + TANH_FLOPS + 1, 1
SOFTMAX_FLOPS, SOFTMAX_COMPARISONS = 4, 1
SDPA_MASK_FLOPS = 1
BATCHNORM_INFERENCE_FLOPS = 2
NORM_STATS_FLOPS = 6
NORM_AFFINE_FLOPS = 2
RMS_NORM_FLOPS = 3
RMS_NORM_AFFINE_FLOPS = 1
WEIGHT_NORM_FLOPS = 3
VAR_FLOPS = 4
VECTOR_NORM_FLOPS = 2
LOGSUMEXP_FLOPS, LOGSUMEXP_COMPARISONS = 3, 1

IsWeight = Callable[[Tensor], bool]


@dataclass(frozen=True)
class OpCount:
    """Cost of one op under the rules above; ``ops`` = FLOPs + comparisons."""

    macs: int = 0
    flops: int = 0
    comparisons: int = 0
    effective_macs: int = 0

    @property
    def ops(self) -> int:
        return self.flops + self.comparisons


def conv_output_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution or pooling window along one dimension.

    Args:
        size: input length.
        kernel: kernel length.
        stride: step between windows.
        padding: zeros added on each side.
        dilation: spacing between kernel taps.

    Returns:
        ``floor((size + 2*padding - dilation*(kernel-1) - 1) / stride) + 1``; with
        ``dilation=1`` this is ``floor((size - kernel + 2*padding) / stride) + 1``.

    Example:
        >>> conv_output_size(8, 3, stride=2, padding=1)
        4
    """
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def adaptive_window_total(in_sizes: tuple[int, ...], out_sizes: tuple[int, ...]) -> int:
    """Sum of adaptive-pool window sizes over all outputs of one channel.

    Window ``j`` along a dim of length ``i`` pooled to ``o`` spans
    ``[floor(j*i/o), ceil((j+1)*i/o))``, as in PyTorch's adaptive pooling kernels.
    """
    total = 1
    for i, o in zip(in_sizes, out_sizes, strict=True):
        total *= sum(-(-(j + 1) * i // o) - (j * i) // o for j in range(o))
    return total
