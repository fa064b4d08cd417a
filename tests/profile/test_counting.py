"""trace_model counts match closed forms: convs, linears, matmuls, attention, rules table."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.utils import parametrizations, prune

from slimtorch.core import counting as rules
from slimtorch.core import recorder
from slimtorch.core.aten_rules import count_op
from slimtorch.core.trace import conv_output_size, trace_model
from slimtorch.errors import ModelError

F32 = 4  # bytes per float32


@pytest.fixture(autouse=True)
def _one_thread():
    # The suite shares CPUs with other jobs; one intra-op thread keeps tiny models fast.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Fn(nn.Module):
    """Wraps a function of the input so functional code runs inside a module."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def test_conv_output_size_formula() -> None:
    assert conv_output_size(8, 3) == 6
    assert conv_output_size(8, 3, stride=2, padding=1) == 4
    assert conv_output_size(7, 3, stride=2) == 3  # floor((7 - 3) / 2) + 1
    assert conv_output_size(9, 3, dilation=2) == 5  # effective kernel 5
    assert conv_output_size(10, 4, stride=3, padding=2, dilation=2) == 3


@st.composite
def conv_geometry(draw):
    groups = draw(st.integers(1, 4))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dilation = draw(st.integers(1, 2))
    padding = draw(st.integers(0, 2))
    stride = draw(st.integers(1, 3))
    h = draw(st.integers(dilation * (max(kh, kw) - 1) + 1, 11))
    w = draw(st.integers(dilation * (max(kh, kw) - 1) + 1, 11))
    bias = draw(st.booleans())
    return groups, cin, cout, (kh, kw), stride, padding, dilation, h, w, bias


@settings(max_examples=40, deadline=None)
@given(conv_geometry())
def test_conv2d_geometry_matches_closed_form(geometry) -> None:
    groups, cin, cout, (kh, kw), stride, padding, dilation, h, w, bias = geometry
    conv = nn.Conv2d(cin, cout, (kh, kw), stride, padding, dilation, groups, bias=bias)
    t = trace_model(conv, torch.zeros(2, cin, h, w))
    ho = conv_output_size(h, kh, stride, padding, dilation)
    wo = conv_output_size(w, kw, stride, padding, dilation)
    macs = 2 * cout * ho * wo * (cin // groups) * kh * kw
    assert t.output_shape == (2, cout, ho, wo)
    assert t.total_macs == t.total_effective_macs == macs
    assert t.total_flops == 2 * macs + (2 * cout * ho * wo if bias else 0)
    assert t.total_params == cout * (cin // groups) * kh * kw + (cout if bias else 0)
    assert t.layers[0].params == t.total_params


def test_depthwise_and_pointwise_conv() -> None:
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    t = trace_model(dw, torch.zeros(1, 8, 6, 6))
    assert t.total_macs == 8 * 6 * 6 * 9  # one 3x3 filter per channel
    pw = nn.Conv2d(8, 16, 1, bias=False)
    assert trace_model(pw, torch.zeros(1, 8, 6, 6)).total_macs == 16 * 6 * 6 * 8


def test_conv_transpose2d_counts_input_positions() -> None:
    # Each input element multiplies Cout/groups * kh * kw weights (what a scatter
    # implementation executes; fvcore and torch.utils.flop_counter count the same).
    convt = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    t = trace_model(convt, torch.zeros(2, 4, 5, 5))
    assert t.output_shape == (2, 6, (5 - 1) * 2 - 2 * 1 + (3 - 1) + 1 + 1, 10)
    macs = 2 * 4 * 5 * 5 * (6 // 2) * 3 * 3
    assert t.total_macs == macs
    assert t.total_flops == 2 * macs + 2 * 6 * 10 * 10  # + bias per output element
    assert t.total_params == 4 * (6 // 2) * 9 + 6


def test_conv1d() -> None:
    conv = nn.Conv1d(3, 5, 4, stride=2, padding=1)
    t = trace_model(conv, torch.zeros(2, 3, 17))
    lo = conv_output_size(17, 4, 2, 1)
    assert t.output_shape == (2, 5, lo)
    assert t.total_macs == 2 * 5 * lo * 3 * 4


@pytest.mark.parametrize("bias", [True, False])
def test_linear_with_and_without_bias(bias: bool) -> None:
    lin = nn.Linear(8, 5, bias=bias)
    t = trace_model(lin, torch.zeros(2, 7, 8))  # 3-d input: 14 rows
    assert t.total_macs == 14 * 8 * 5
    assert t.total_flops == 2 * 14 * 8 * 5 + (14 * 5 if bias else 0)
    assert t.total_params == 8 * 5 + (5 if bias else 0)
    mm = next(o for o in t.ops if o.macs)
    assert mm.op == ("addmm" if bias else "mm")
    assert mm.weight_bytes == F32 * t.total_params
    assert mm.input_bytes == F32 * 14 * 8 and mm.output_bytes == F32 * 14 * 5


def attention_macs(b: int, h: int, lq: int, lk: int, e: int, ev: int) -> int:
    return b * h * lq * lk * e + b * h * lq * lk * ev  # QK^T and AV


def test_functional_attention_matmuls() -> None:
    def attend(q, k, v):
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        return torch.softmax(scores, dim=-1) @ v

    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 7)
    t = trace_model(Fn(attend), (q, k, v))
    scores = 2 * 3 * 5 * 6
    assert t.output_shape == (2, 3, 5, 7)
    assert t.total_macs == attention_macs(2, 3, 5, 6, 4, 7)
    softmax = (rules.SOFTMAX_FLOPS, rules.SOFTMAX_COMPARISONS)
    assert t.total_flops == 2 * t.total_macs + scores * (1 + softmax[0])  # + 1 div per score
    assert t.total_ops == t.total_flops + scores * softmax[1]


@pytest.mark.parametrize(
    ("q_shape", "kv_heads"),
    [((2, 3, 5, 4), 3), ((2, 4, 5, 4), 2)],  # plain, and grouped-query (2 kv heads)
)
def test_sdpa_fused_matches_closed_form_and_math_path(q_shape, kv_heads) -> None:
    b, h, lq, e = q_shape
    q, k, v = torch.randn(q_shape), torch.randn(b, kv_heads, 6, e), torch.randn(b, kv_heads, 6, e)
    model = Fn(lambda *qkv: F.scaled_dot_product_attention(*qkv, enable_gqa=h != kv_heads))
    fused = trace_model(model, (q, k, v))
    assert [o.op for o in fused.ops if o.macs] == ["_scaled_dot_product_flash_attention_for_cpu"]
    scores = b * h * lq * 6
    assert fused.total_macs == attention_macs(b, h, lq, 6, e, e)
    scale = q.numel() + b * h * 6 * e  # sqrt(scale) multiplies q and k (k per query head)
    assert fused.total_flops == 2 * fused.total_macs + scale + rules.SOFTMAX_FLOPS * scores
    assert fused.total_ops == fused.total_flops + rules.SOFTMAX_COMPARISONS * scores
    with sdpa_kernel(SDPBackend.MATH):  # decomposed: mul, mul, bmm, softmax, bmm
        math_path = trace_model(model, (q, k, v))
    assert "bmm" in [o.op for o in math_path.ops]
    totals = ("total_macs", "total_flops", "total_ops")
    assert [getattr(math_path, f) for f in totals] == [getattr(fused, f) for f in totals]


def test_einsum_and_bmm() -> None:
    a, b = torch.randn(3, 4, 5), torch.randn(3, 5, 6)
    assert trace_model(Fn(lambda x, y: torch.einsum("bij,bjk->bik", x, y)), (a, b)).total_macs == (
        3 * 4 * 5 * 6
    )
    assert trace_model(Fn(torch.bmm), (a, b)).total_macs == 3 * 4 * 5 * 6
    x = torch.randn(2, 3, 4, 5)  # bhqd,bhkd->bhqk: batch 6, 4x5 @ 5x4
    t = trace_model(Fn(lambda q: torch.einsum("bhqd,bhkd->bhqk", q, q)), x)
    assert t.total_macs == 2 * 3 * 4 * 4 * 5 and t.output_shape == (2, 3, 4, 4)


def test_multihead_attention_module() -> None:
    e, heads, b, length = 8, 2, 2, 5
    mha = nn.MultiheadAttention(e, heads, batch_first=True)
    x = torch.randn(b, length, e)
    t = trace_model(Fn(lambda y: mha(y, y, y, need_weights=False)[0]), x)
    projections = 4 * b * length * e * e  # q, k, v and out
    assert t.total_macs == projections + attention_macs(b, heads, length, length, e // 2, e // 2)


def zero_first(weight: torch.Tensor, count: int) -> None:
    with torch.no_grad():
        weight.view(-1)[:count] = 0.0


def test_effective_macs_skip_zero_weights_exactly() -> None:
    lin = nn.Linear(10, 6)
    zero_first(lin.weight, 17)
    t = trace_model(lin, torch.randn(4, 10))
    assert t.total_macs == 4 * 60
    assert t.total_effective_macs == 4 * (60 - 17)  # each weight is used once per row
    conv = nn.Conv2d(3, 4, 3, padding=1)
    zero_first(conv.weight, 50)
    t = trace_model(conv, torch.randn(2, 3, 5, 5))
    assert t.total_effective_macs == 2 * 5 * 5 * (4 * 3 * 9 - 50)  # batch * positions * nnz


def test_effective_macs_see_through_computed_weights() -> None:
    # A weight computed from parameters (here an explicit mask product) is still a weight.
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(5, 8))
            self.register_buffer("mask", (torch.arange(40) % 4 != 0).float().view(5, 8))

        def forward(self, x):
            return x @ (self.weight * self.mask).t()

    t = trace_model(Masked(), torch.randn(3, 8))
    assert t.total_macs == 3 * 40 and t.total_effective_macs == 3 * 30
    # Activation x activation products are never discounted.
    x = torch.zeros(2, 4, 4)
    assert trace_model(Fn(torch.bmm), (x, x)).total_effective_macs == 2 * 64


def test_torch_prune_hooks_count_as_the_layer_and_its_sparsity() -> None:
    lin = nn.Linear(10, 4)
    prune.l1_unstructured(lin, "weight", amount=0.5)  # weight = weight_orig * weight_mask
    t = trace_model(nn.Sequential(lin), torch.randn(3, 10))
    assert [(o.op, o.module) for o in t.ops] == [("mul", "0"), ("t", "0"), ("addmm", "0")]
    assert (t.total_macs, t.total_effective_macs) == (3 * 40, 3 * 20)
    assert t.layers[0].params == 40 + 4  # weight_orig and bias; the mask is a buffer


def test_elementwise_activation_and_norm_rules() -> None:
    x = torch.randn(2, 4, 6, 6)
    n = x.numel()
    cases = [
        (nn.ReLU(), 0, rules.RELU_COMPARISONS * n),
        (nn.ReLU6(), 0, rules.HARDTANH_COMPARISONS * n),
        (nn.Sigmoid(), rules.SIGMOID_FLOPS * n, 0),
        (nn.SiLU(), rules.SILU_FLOPS * n, 0),
        (nn.GELU(), rules.GELU_FLOPS * n, 0),
        (nn.Hardswish(), rules.HARDSWISH_FLOPS * n, rules.HARDSWISH_COMPARISONS * n),
        (nn.Softmax(dim=1), rules.SOFTMAX_FLOPS * n, rules.SOFTMAX_COMPARISONS * n),
        (nn.BatchNorm2d(4), rules.BATCHNORM_INFERENCE_FLOPS * n, 0),
        (nn.LayerNorm(6), (rules.NORM_STATS_FLOPS + rules.NORM_AFFINE_FLOPS) * n, 0),
        (nn.GroupNorm(2, 4), (rules.NORM_STATS_FLOPS + rules.NORM_AFFINE_FLOPS) * n, 0),
        (nn.InstanceNorm2d(4), rules.NORM_STATS_FLOPS * n, 0),
        (Fn(lambda y: y + y), n, 0),
        (Fn(lambda y: y * 2.0), n, 0),
        (Fn(lambda y: y.flatten(1).view(2, -1, 3)), 0, 0),
        (Fn(lambda y: torch.cat([y, y], 1)), 0, 0),
    ]
    for module, flops, comparisons in cases:
        t = trace_model(module, x)
        assert (t.total_macs, t.total_flops, t.total_ops) == (0, flops, flops + comparisons), module
        assert t.uncounted_ops == (), module


def test_pooling_rules() -> None:
    x = torch.randn(1, 3, 8, 8)
    t = trace_model(nn.MaxPool2d(2), x)
    assert (t.total_flops, t.total_ops) == (0, 3 * 4 * 4 * (4 - 1))  # k-1 comparisons/output
    t = trace_model(nn.AvgPool2d(3, stride=1), x)
    assert t.total_flops == 3 * 6 * 6 * 9  # k adds-and-divide per output
    # adaptive 8 -> 3: windows [0,3) [2,6) [5,8) hold 3 + 4 + 3 = 10 rows (and columns)
    assert trace_model(nn.AdaptiveAvgPool2d(3), x).total_flops == 3 * 10 * 10
    t = trace_model(nn.AdaptiveMaxPool2d(3), x)
    assert t.total_ops == 3 * (10 * 10 - 9)
    assert trace_model(nn.AdaptiveAvgPool2d(1), x).total_flops == x.numel()  # mean


def test_layers_attribution_order_shapes_and_shared_modules() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.act = nn.ReLU()
            self.drop = nn.Dropout(0.5)
            self.head = nn.Sequential(nn.Linear(32, 4))

        def forward(self, x):
            y = self.act(self.conv(x))
            y = self.drop(y).flatten(1)  # flatten runs in the root module
            return self.act(self.head(y))  # act is called twice

    t = trace_model(Net(), torch.zeros(1, 1, 4, 4))
    names = [layer.name for layer in t.layers]
    assert names == ["conv", "act", "drop", "", "head.0"]
    layers = {layer.name: layer for layer in t.layers}
    assert layers["act"].ops == 2 * 4 * 4 + 4  # both calls; shapes from the first
    assert layers["act"].input_shape == layers["act"].output_shape == (1, 2, 4, 4)
    assert (layers["head.0"].kind, layers["head.0"].params) == ("Linear", 32 * 4 + 4)
    assert layers[""].kind == "Net" and layers[""].params == 0
    assert sum(layer.params for layer in t.layers) == t.total_params
    assert sum(layer.macs for layer in t.layers) == t.total_macs == 2 * 16 * 9 + 32 * 4
    assert [o.index for o in t.ops] == list(range(len(t.ops)))


def test_weight_norm_params_counted_once_and_attributed_to_owner() -> None:
    conv = parametrizations.weight_norm(nn.Conv2d(2, 3, 3))
    t = trace_model(nn.Sequential(conv), torch.randn(1, 2, 5, 5))
    assert [layer.name for layer in t.layers] == ["0"]
    # original0 (g: 3x1x1x1) + original1 (v: 3x2x3x3) + bias
    assert t.layers[0].params == t.total_params == 3 + 54 + 3
    assert t.total_macs == 3 * 3 * 3 * 2 * 9
    assert t.layers[0].flops == 2 * t.total_macs + 27 + rules.WEIGHT_NORM_FLOPS * 54


def test_model_is_not_mutated() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout())
    model.train()
    model[2].eval()  # mixed flags must come back as they were
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 4)
    rng = torch.get_rng_state()
    trace_model(model, x)
    assert [m.training for m in model.modules()] == [True, True, True, False]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch.equal(rng, torch.get_rng_state())


def test_model_error_names_input_module_and_cause() -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.Sequential(nn.ReLU(), nn.Linear(5, 2)))
    with pytest.raises(ModelError) as info:
        trace_model(model, torch.zeros(3, 8))
    message = str(info.value)
    assert "\n" not in message
    assert "[3, 8]" in message and "'1.1'" in message and "mat1 and mat2" in message
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_tuple_and_dict_inputs_and_uncounted_ops() -> None:
    class TwoIn(nn.Module):
        def forward(self, a, b):
            return a @ b

    a, b = torch.zeros(2, 3), torch.zeros(3, 4)
    assert trace_model(TwoIn(), (a, b)).total_macs == 24
    assert trace_model(TwoIn(), {"a": a, "b": b}).total_macs == 24
    up = trace_model(nn.Upsample(scale_factor=2, mode="bilinear"), torch.zeros(1, 1, 2, 2))
    assert up.uncounted_ops == ("upsample_bilinear2d",)


@pytest.mark.parametrize(
    ("op", "mask_at"),
    [
        ("_scaled_dot_product_flash_attention", None),  # CUDA kernels: args laid out
        ("_scaled_dot_product_efficient_attention", 3),  # as in their aten schemas
        ("_scaled_dot_product_cudnn_attention", 3),
    ],
)
def test_gpu_attention_overloads_follow_the_sdpa_rule(op: str, mask_at: int | None) -> None:
    q, k, v = torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 6, 4), torch.zeros(1, 2, 6, 4)
    func = getattr(torch.ops.aten, op).default
    args: tuple = (q, k, v, None, False) if mask_at else (q, k, v, 0.0, False)
    plain = count_op(func, args, {}, (torch.zeros(1, 2, 5, 4),), lambda t: False)
    scores = 2 * 5 * 6
    assert plain.macs == plain.effective_macs == attention_macs(1, 2, 5, 6, 4, 4)
    assert plain.flops == 2 * plain.macs + q.numel() + k.numel() + rules.SOFTMAX_FLOPS * scores
    if mask_at is not None:
        masked = (q, k, v, torch.zeros(5, 6), False)
        with_mask = count_op(func, masked, {}, (torch.zeros(1, 2, 5, 4),), lambda t: False)
        assert with_mask.flops == plain.flops + rules.SDPA_MASK_FLOPS * scores


def test_int8_weight_matmul_counts_macs_and_nonzero_weights() -> None:
    weight = torch.randint(1, 5, (4, 8), dtype=torch.int8)
    weight[0] = 0

    class Int8Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("weight", weight)
            self.register_buffer("scales", torch.ones(4))

        def forward(self, x):
            return torch.ops.aten._weight_int8pack_mm(x, self.weight, self.scales)

    t = trace_model(Int8Linear(), torch.randn(3, 8))
    assert (t.total_macs, t.total_effective_macs) == (3 * 8 * 4, 3 * 8 * 3)


def test_meta_device_models_trace_without_data() -> None:
    model = nn.Sequential(nn.Linear(64, 32, device="meta"), nn.ReLU())
    t = trace_model(model, torch.empty(2, 64, device="meta"))
    assert t.total_macs == t.total_effective_macs == 2 * 64 * 32
    assert t.output_shape == (2, 32)


def test_a_counting_bug_is_not_reported_as_a_model_error(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise ValueError("rule exploded")

    monkeypatch.setattr(recorder, "count_op", broken)
    with pytest.raises(recorder.RecorderError, match="rule exploded"):
        trace_model(nn.Linear(2, 2), torch.zeros(1, 2))
