"""int16 saturation of torch's u8 x s8 kernels on CPUs without VNNI: measured, then avoided.

The probe is checked against two closed forms (exact int32 arithmetic and vpmaddubsw's int16
pair sums); the saturating case is forced by replacing the probe, so both branches run on every
CPU.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from slimtorch.checkpoint import save_checkpoint
from slimtorch.cli.main import main
from slimtorch.errors import ConfigError
from slimtorch.models import create_model
from slimtorch.models.registry import make_spec
from slimtorch.quantize import engine
from slimtorch.quantize.integer import to_integer
from slimtorch.quantize.intformat import integer_model_info
from slimtorch.quantize.ptq import PTQConfig, quantize_ptq

FEATURES = 64  # linear probe: 32 pairs of 255 * 127 products


def _saturating(monkeypatch, value: bool) -> None:
    monkeypatch.setattr(engine, "kernel_saturates", lambda *args, **kwargs: value)


@pytest.mark.parametrize("backend", ["x86", "fbgemm"])
def test_probe_sees_either_exact_sums_or_int16_pair_sums(backend):
    import torch.ao.nn.quantized as nnq

    exact = FEATURES * 255 * 127
    pairs = FEATURES // 2 * (2**15 - 1)  # every pair 64770, saturated to 32767
    scale = exact / 200
    with engine.quantized_engine(backend), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: quantized tensors are deprecated
        layer = nnq.Linear(FEATURES, 1)
        w = torch.full((1, FEATURES), 127.0)
        layer.set_weight_bias(torch.quantize_per_tensor(w, 1.0, 0, torch.qint8), None)
        layer.scale, layer.zero_point = scale, 0
        x = torch.quantize_per_tensor(torch.full((1, FEATURES), 255.0), 1.0, 0, torch.quint8)
        got = int(layer(x).int_repr())
    assert got in (round(exact / scale), round(pairs / scale))  # 200 or 101
    saturated = got == round(pairs / scale)
    assert engine.kernel_saturates(backend, "linear", FEATURES, 16) is saturated
    assert engine.engine_saturates(backend) is saturated


def test_reduce_range_auto_follows_the_measured_engine(monkeypatch):
    _saturating(monkeypatch, True)  # a CPU without VNNI
    assert PTQConfig().activation_spec.q_max == 127
    assert PTQConfig(reduce_range=False).activation_spec.q_max == 255
    assert PTQConfig(weight_bits=7).activation_spec.q_max == 255  # 2 * 255 * 64 fits int16
    assert PTQConfig(activation_bits=6).activation_spec.q_max == 63
    _saturating(monkeypatch, False)  # VNNI: the default stays full range
    assert PTQConfig().activation_spec.q_max == 255
    assert PTQConfig(reduce_range=True).activation_spec.q_max == 127
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match="reduce_range"):
            PTQConfig(reduce_range=bad)


def _vgg(reduce_range):
    torch.manual_seed(0)
    model = create_model("vgg").eval()
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 16
    config = PTQConfig(calib_batches=2, reduce_range=reduce_range)
    qmodel, report = quantize_ptq(model, [x[:32], x[32:]], config)
    return to_integer(qmodel, x[:8]), report, x


@pytest.mark.parametrize("backend", ["x86", "fbgemm"])
def test_a_saturating_engine_runs_full_range_programs_on_the_reference(monkeypatch, backend):
    _saturating(monkeypatch, True)
    ref, report, x = _vgg("auto")
    assert report.extra["activation_range_reduced"] is True and ref.reduce_range
    assert ref.with_backend(backend).runs_on == backend  # 7-bit: every pair sum fits int16
    ref, report, x = _vgg(False)
    assert report.extra["activation_range_reduced"] is False and not ref.reduce_range
    fast = ref.with_backend(backend)
    note = r"saturates on this CPU .* layer\(s\) features"
    with pytest.warns(RuntimeWarning, match=note), torch.no_grad():
        assert torch.equal(fast(x), ref(x))
    assert fast.runs_on == "reference"
    _saturating(monkeypatch, False)
    assert ref.with_backend(backend).runs_on == backend  # VNNI: unchanged


def test_cli_reports_the_kernels_that_ran(monkeypatch, tmp_path, capsys):
    _saturating(monkeypatch, True)
    folder = tmp_path / "ckpt"
    model = create_model("lenet5")
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.normal_(m.weight, std=0.3)
    save_checkpoint(folder, model, make_spec("lenet5"), {"data": "digits", "seed": 0})
    out = tmp_path / "q"
    common = ["quantize", str(folder), "--calib-batches", "2", "--integer", "--out", str(out)]
    assert main([*common, "--reduce-range", "off"]) == 0
    printed = capsys.readouterr()
    assert "int8 integer-only model (x86 -> reference)" in printed.out
    assert "warning: int8 engine 'x86' saturates on this CPU" in printed.err  # one line
    extra = json.loads((out / "report.json").read_text())["extra"]
    assert extra["integer_runs_on"] == "reference" and extra["integer_reduce_range"] is False
    assert integer_model_info(out / "int8.safetensors")["reduce_range"] is False
    assert main(common) == 0  # default auto: 7-bit activations, the engine runs it
    assert "int8 integer-only model (x86):" in capsys.readouterr().out
    extra = json.loads((out / "report.json").read_text())["extra"]
    assert extra["integer_runs_on"] == "x86" and extra["activation_range_reduced"] is True
    assert integer_model_info(out / "int8.safetensors")["reduce_range"] is True
