"""Integer-only execution: kernels vs exact arithmetic, the model vs fake quantization."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.errors import ModelError
from slimtorch.models import create_model
from slimtorch.quantize.engine import build_engine_model, engine_saturates
from slimtorch.quantize.integer import run_reference, to_integer
from slimtorch.quantize.intformat import (
    integer_model_info,
    load_integer_model,
    save_integer_model,
)
from slimtorch.quantize.intkernels import conv2d_int, quantize_multiplier, requantize
from slimtorch.quantize.ptq import PTQConfig, quant_layers, quantize_ptq


def test_fixed_point_requantize_equals_exact_rational_rounding():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(50, generator=g, dtype=torch.float64) * 0.01 + 1e-5
    acc = torch.randint(-(2**20), 2**20, (50,), generator=g, dtype=torch.int32)
    m0, rshift = quantize_multiplier(m)
    assert bool(((m0 >= 2**30) & (m0 < 2**31)).all())
    rel = (m0.double() / 2.0 ** rshift.double() - m).abs() / m
    assert float(rel.max()) < 2**-30
    out = requantize(acc, m0, rshift, zero_point=3, q_min=-(2**31), q_max=2**31 - 1)
    for a, c, s, o in zip(acc.tolist(), m0.tolist(), rshift.tolist(), out.tolist(), strict=True):
        exact = Fraction(a * c, 2**s)
        assert o == int((exact + Fraction(1, 2)).__floor__()) + 3  # round half up


@pytest.mark.parametrize(("stride", "padding", "groups"), [(1, 1, 1), (2, 0, 1), (1, 1, 2)])
def test_conv2d_int_matches_float64_convolution(stride, padding, groups):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-255, 256, (2, 4, 7, 7), generator=g, dtype=torch.int32)
    w = torch.randint(-127, 128, (6, 4 // groups, 3, 3), generator=g, dtype=torch.int8)
    b = torch.randint(-1000, 1000, (6,), generator=g, dtype=torch.int32)
    ours = conv2d_int(x, w, b, (stride, stride), (padding, padding), groups)
    ref = F.conv2d(x.double(), w.double(), b.double(), stride, padding, groups=groups)
    assert ours.dtype == torch.int32
    assert torch.equal(ours.double(), ref)


def _calibrated(name: str, seed: int = 0, **config):
    torch.manual_seed(seed)
    model = create_model(name).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    g = torch.Generator().manual_seed(seed)
    batches = [torch.rand(32, 1, 8, 8, generator=g) * 16 for _ in range(4)]
    qmodel, _ = quantize_ptq(model, batches, PTQConfig(calib_batches=4, **config))
    return model, qmodel, torch.cat(batches)


def _fake_quant_layer_inputs(qmodel, x):
    seen = []

    def hook(mod, inp, out):
        qp = mod.qparams()
        q = torch.round(inp[0] / qp.scale) + qp.zero_point
        seen.append(q.clamp(mod.spec.q_min, mod.spec.q_max).to(torch.int32))

    handles = [w.act.register_forward_hook(hook) for w in quant_layers(qmodel).values()]
    with torch.no_grad():
        out = qmodel(x)
    for h in handles:
        h.remove()
    return out, seen


@pytest.mark.parametrize("name", ["vgg", "lenet5", "lenet300"])
def test_integer_model_matches_fake_quant_within_one_step(name):
    _, qmodel, x = _calibrated(name)
    imodel = to_integer(qmodel, x[:8])
    fake_out, fake_q = _fake_quant_layer_inputs(qmodel, x)
    int_q = []
    int_out = run_reference(imodel.steps, x, trace=int_q)
    assert len(int_q) == len(fake_q) == len(quant_layers(qmodel))
    for a, b in zip(int_q, fake_q, strict=True):
        assert int((a - b).abs().max()) <= 1  # every quantized activation within one step
    # logits: the last layer's accumulators, off only through those one-step input flips
    last = next(s for s in reversed(imodel.steps) if s.op in ("conv2d", "linear"))
    bound = (
        last.tensors["weight"].float().abs().sum(1)
        * last.tensors["weight_scale"]
        * last.attrs["in_scale"]
    )
    assert bool(((int_out - fake_out).abs() <= bound + 1e-4).all())
    assert float((int_out.argmax(1) == fake_out.argmax(1)).float().mean()) >= 0.99


def _assert_engine_runs_the_reference_integers(ref, backend: str, x) -> None:
    """Oracle, layer by layer: each engine segment (one layer up to the next layer's input), fed
    the reference's integers, gives the reference's next integers within one step (float vs
    fixed-point requantization; the pooled segment averages rounded values). Saturated int16
    pair sums were off by up to 74 steps. Then the logits: the exact int32 tail of the engine's
    last-layer input, so each is within sum_i |w_ji| |dx_i| S_w S_in of the reference's, and a
    sample whose reference top-2 margin exceeds twice that bound keeps its prediction."""
    engine, fast = build_engine_model(ref.steps, backend), ref.with_backend(backend)
    assert engine.runs_on == fast.runs_on == backend
    ref_q, fast_q = ref.integer_trace(x), fast.integer_trace(x)
    assert len(engine.segments) == len(ref_q) - 1 == len(fast_q) - 1
    assert int((fast_q[0] - ref_q[0]).abs().max()) <= 1  # input quantization: ties may differ
    for k in range(len(engine.segments)):
        assert int((engine.run_segment(k, ref_q[k]) - ref_q[k + 1]).abs().max()) <= 1, k
        assert torch.equal(engine.run_segment(k, fast_q[k]), fast_q[k + 1])  # the run chains them
    last = next(s for s in reversed(ref.steps) if s.op in ("conv2d", "linear"))
    scale = last.tensors["weight_scale"] * last.attrs["in_scale"]
    bound = (fast_q[-1] - ref_q[-1]).abs().float() @ last.tensors["weight"].abs().float().T * scale
    with torch.no_grad():
        a, b = ref(x), fast(x)
    assert bool(((a - b).abs() <= bound + 1e-5).all())
    top2 = a.topk(2, dim=1).values
    sure = top2[:, 0] - top2[:, 1] > 2 * bound.max(1).values
    assert float(sure.float().mean()) >= 0.5  # the check covers most samples
    assert torch.equal(a.argmax(1)[sure], b.argmax(1)[sure])


@pytest.mark.parametrize("backend", ["x86", "fbgemm"])
def test_engine_backends_run_the_same_integers(backend):
    _, qmodel, x = _calibrated("vgg")  # reduce_range="auto": 7-bit where the engine saturates
    ref = to_integer(qmodel, x[:8])
    assert ref.reduce_range == engine_saturates()  # measured on this CPU
    _assert_engine_runs_the_reference_integers(ref, backend, x)


@pytest.mark.parametrize("backend", ["x86", "fbgemm"])
def test_full_range_programs_give_the_reference_integers_on_every_cpu(backend):
    _, qmodel, x = _calibrated("vgg", reduce_range=False)
    ref = to_integer(qmodel, x[:8])
    assert not ref.reduce_range
    if not engine_saturates(backend):  # VNNI: int32 dot products, the engine runs it
        _assert_engine_runs_the_reference_integers(ref, backend, x)
        return
    fast = ref.with_backend(backend)  # no VNNI: int16 pair sums would saturate
    with pytest.warns(RuntimeWarning, match="saturates on this CPU"):
        assert fast.runs_on == "reference"
    with torch.no_grad():
        assert torch.equal(fast(x), ref(x))


def _global_pool_program():
    """conv -> relu -> global average pool -> linear, calibrated on sparse inputs (7-bit
    activations: the engine runs it on every CPU), and inputs with 3x3 blobs whose pool inputs
    exceed the linear's uint8 grid while their averages fit."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()  # fmt: skip
    g = torch.Generator().manual_seed(0)
    calib = torch.rand(64, 1, 8, 8, generator=g) * 0.1
    calib[:, 0, 4, 4] = 1.0
    qmodel, _ = quantize_ptq(model, [calib], PTQConfig(calib_batches=1, reduce_range=True))
    x = torch.rand(32, 1, 8, 8, generator=g) * 0.1
    x[::2, 0, 2:5, 2:5] = 1.0
    return to_integer(qmodel, calib[:8]), x


@pytest.mark.parametrize("backend", ["x86", "fbgemm"])
def test_pooled_segments_give_the_exact_integers_where_uint8_would_clip(backend):
    ref, x = _global_pool_program()
    conv, _, _, _, req, linear = ref.steps[1:7]
    assert (conv.op, req.op, linear.op) == ("conv2d", "requantize", "linear")
    ref_q = ref.integer_trace(x)
    # oracle: the exact pool inputs on the linear's grid (float64 of the int32 accumulators)
    acc = conv2d_int(ref_q[0], conv.tensors["weight"], conv.tensors["bias"], (1, 1), (1, 1))
    scale = (
        conv.attrs["in_scale"] * conv.tensors["weight_scale"].double() / linear.attrs["in_scale"]
    )
    pool_in = (acc.clamp(min=0).double() * scale.reshape(1, -1, 1, 1)).flatten(1).amax(1)
    clipped = pool_in > 255.5  # beyond the uint8 grid an int8 layer's output ends at
    assert bool(clipped.any())
    engine = build_engine_model(ref.steps, backend)
    assert torch.equal(engine.run_segment(0, ref_q[0]), ref_q[1])  # the exact integers
    _assert_engine_runs_the_reference_integers(ref, backend, x)


def test_save_and_reload_round_trips_and_detects_corruption(tmp_path):
    _, qmodel, x = _calibrated("vgg")
    imodel = to_integer(qmodel, x[:8])
    path = save_integer_model(imodel, tmp_path / "int8.safetensors")
    again = load_integer_model(path)
    assert torch.equal(again(x), imodel(x))
    assert integer_model_info(path)["reduce_range"] is imodel.reduce_range is again.reduce_range
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"checksum|corrupted"):
        load_integer_model(tmp_path / "bad.safetensors")
    (tmp_path / "short.safetensors").write_bytes(bytes(data[:5]))
    with pytest.raises(ModelError, match="truncated"):
        load_integer_model(tmp_path / "short.safetensors")


def test_branching_models_and_wrong_inputs_are_clear_errors():
    _, qmodel, x = _calibrated("resnet")
    with pytest.raises(ModelError, match="chains"):
        to_integer(qmodel, x[:2])
    _, qmodel, x = _calibrated("vgg")
    with pytest.raises(ModelError, match="expects samples of shape"):
        to_integer(qmodel, x[:2])(torch.zeros(1, 1, 16, 16))
