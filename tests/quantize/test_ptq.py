"""Post-training quantization: weights on the quantization grid, sizes in closed form, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimtorch.errors import ConfigError, DataError
from slimtorch.quantize.fakequant import QuantWrapper, fake_quantize_ste
from slimtorch.quantize.primitives import (
    PerChannel,
    PerGroup,
    QParams,
    QuantSpec,
    choose_qparams,
    fake_quantize,
)
from slimtorch.quantize.ptq import PTQConfig, calibrate, prepare, quant_layers, quantize_ptq


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


def _batches(n=4):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(32, 8, generator=g), torch.zeros(32)) for _ in range(n)]


@pytest.mark.parametrize(("reduce_range", "act_bits"), [(False, 8), (True, 7)])
def test_ptq_model_equals_manual_fake_quant_pipeline(reduce_range, act_bits):
    model = _mlp()
    batches = _batches()
    qmodel, _ = quantize_ptq(model, batches, PTQConfig(calib_batches=4, reduce_range=reduce_range))
    act = QuantSpec(act_bits, symmetric=False, signed=False)
    wspec = QuantSpec(8, granularity=PerChannel(0))
    x0 = torch.cat([b[0] for b in batches])
    # calibration sees float activations computed with the (already fake-quantized) weights
    h0 = torch.relu(nn.functional.linear(x0, fake_quantize(model[0].weight, wspec), model[0].bias))
    x = torch.randn(5, 8)

    def bias_on_grid(layer, in_scale):  # int32 bias with scale S_in * S_w per channel
        step = in_scale * choose_qparams(layer.weight, wspec).scale.reshape(-1)
        return torch.round(layer.bias / step) * step

    with torch.no_grad():
        s0, s1 = choose_qparams(x0, act), choose_qparams(h0, act)
        xq = fake_quantize(x, act, s0)
        w0, w2 = fake_quantize(model[0].weight, wspec), fake_quantize(model[2].weight, wspec)
        h = torch.relu(nn.functional.linear(xq, w0, bias_on_grid(model[0], s0.scale)))
        hq = fake_quantize(h, act, s1)
        expected = nn.functional.linear(hq, w2, bias_on_grid(model[2], s1.scale))
        assert torch.allclose(qmodel(x), expected, atol=1e-6)


def test_report_sizes_follow_the_closed_form():
    _, report = quantize_ptq(_mlp(), _batches(), PTQConfig(weight_bits=4, calib_batches=2))
    rows = {r.name: r for r in report.layers}
    # 4-bit values plus one fp32 scale per output channel (symmetric: no zero points)
    assert rows["0.weight"].size_bits == 16 * 8 * 4 + 16 * 32
    assert rows["2.weight"].size_bits == 4 * 16 * 4 + 4 * 32
    assert all(r.sqnr_db > 10 for r in report.layers)


def test_group_granularity_runs_along_flattened_conv_input():
    conv = nn.Conv2d(2, 4, 3)
    w = QuantWrapper(conv, QuantSpec(4, granularity=PerGroup(9)))
    expected = fake_quantize(
        conv.weight.detach().reshape(4, 18), QuantSpec(4, granularity=PerGroup(9))
    )
    assert torch.allclose(w.quantized_weight().detach().reshape(4, 18), expected)


def test_straight_through_gradient_is_identity_inside_and_zero_outside():
    x = torch.tensor([-3.0, -0.2, 0.4, 9.0], requires_grad=True)
    qp = QParams(torch.tensor(0.1), torch.tensor(0, dtype=torch.int32))
    fake_quantize_ste(x, qp, QuantSpec(bits=6)).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0]  # 6-bit signed range is [-3.2, 3.1]


def test_exclude_keeps_layers_float():
    qmodel = prepare(_mlp(), PTQConfig(exclude=(r"2",)))
    assert list(quant_layers(qmodel)) == ["0"]
    assert isinstance(qmodel[2], nn.Linear)


def test_calibration_data_of_the_wrong_shape_is_a_clear_error():
    qmodel = prepare(_mlp(), PTQConfig())
    with pytest.raises(DataError, match=r"calibration data: batch of shape \[4, 5\] does not fit"):
        calibrate(qmodel, [torch.randn(4, 5)], 1)
    with pytest.raises(DataError, match="sample shape"):
        calibrate(qmodel, [torch.randn(4, 8), torch.randn(4, 8, 1)], 2)
    with pytest.raises(DataError, match="no batches"):
        calibrate(qmodel, [], 1)


def test_bad_configs_are_clear_errors():
    with pytest.raises(ConfigError, match="bits"):
        PTQConfig(weight_bits=0)
    with pytest.raises(ConfigError, match="bits"):
        PTQConfig(activation_bits=17)
    with pytest.raises(ConfigError, match="observer"):
        PTQConfig(observer="entropy")
    with pytest.raises(ConfigError, match="calib_batches"):
        PTQConfig(calib_batches=0)
    with pytest.raises(ConfigError, match="group size 5 does not divide"):
        prepare(_mlp(), PTQConfig(weight_granularity=PerGroup(5)))(torch.randn(2, 8))
