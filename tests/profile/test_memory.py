"""Activation and training memory against hand-computed liveness and closed forms."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from torch import nn

from slimtorch.core.trace import trace_model
from slimtorch.errors import ConfigError
from slimtorch.profile.memory import OPTIMIZER_STATES, activation_memory, training_memory

F32 = 4  # bytes per float32


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Residual(nn.Module):
    """x -> conv_a (4->8) -> relu -> conv_b (8->4) -> + x -> relu."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(4, 8, 3, padding=1)
        self.act_a = nn.ReLU(inplace=inplace)
        self.conv_b = nn.Conv2d(8, 4, 3, padding=1)
        self.act_out = nn.ReLU(inplace=inplace)

    def forward(self, x):
        return self.act_out(self.conv_b(self.act_a(self.conv_a(x))) + x)


# x [1, 4, 8, 8] float32: 4 channels = 1024 bytes, 8 channels = 2048 bytes.
X, WIDE = 4 * 64 * F32, 8 * 64 * F32


def test_residual_peak_keeps_the_skip_tensor_alive() -> None:
    trace = trace_model(Residual(inplace=False), torch.randn(1, 4, 8, 8))
    assert [o.op for o in trace.ops] == ["convolution", "relu", "convolution", "add", "relu"]
    # Storages: x (input, last read by add), A = conv_a out, R = relu out, B = conv_b out,
    # S = sum, O = output (live to the end). Live while each op runs:
    expected = (
        X + WIDE,  # conv_a: x, A
        X + WIDE + WIDE,  # relu: x, A (last use), R   <- peak
        X + WIDE + X,  # conv_b: x, R (last use), B
        X + X + X,  # add: x (last use), B (last use), S
        X + X,  # relu: S (last use), O
    )
    mem = activation_memory(trace)
    assert mem.timeline == expected
    assert (mem.peak_bytes, mem.peak_op_index, mem.peak_module) == (X + 2 * WIDE, 1, "act_a")
    assert (mem.input_bytes, mem.output_bytes) == (X, X)


def test_residual_with_inplace_relu_allocates_nothing_for_relu() -> None:
    trace = trace_model(Residual(inplace=True), torch.randn(1, 4, 8, 8))
    assert [o.op for o in trace.ops] == ["convolution", "relu", "convolution", "add", "relu"]
    expected = (
        X + WIDE,  # conv_a: x, A
        X + WIDE,  # relu_: rewrites A in place
        X + WIDE + X,  # conv_b: x, A (last use), B   <- peak
        X + X + X,  # add: x, B, S
        X,  # relu_: S in place; S is the output
    )
    mem = activation_memory(trace)
    assert mem.timeline == expected
    assert (mem.peak_bytes, mem.peak_op_index, mem.peak_module) == (2 * X + WIDE, 2, "conv_b")


def test_plain_chain_peak_is_largest_adjacent_pair() -> None:
    widths = [16, 64, 32, 8]
    chain = nn.Sequential(*[nn.Linear(a, b) for a, b in pairwise(widths)])
    mem = activation_memory(trace_model(chain, torch.randn(2, 16)))
    sizes = [2 * w * F32 for w in widths]
    assert mem.peak_bytes == max(a + b for a, b in pairwise(sizes))
    assert mem.peak_bytes == 2 * (64 + 32) * F32


def test_views_share_storage_and_outputs_live_to_the_end() -> None:
    class TwoOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(16, 16, bias=False)
            self.b = nn.Linear(16, 4, bias=False)

        def forward(self, x):
            h = self.a(x.flatten(1))  # flatten is a view: no new storage
            y = self.b(h.view(2, 16))
            return h, torch.relu(y)  # h is returned, so it stays live

    mem = activation_memory(trace_model(TwoOut(), torch.randn(2, 4, 4)))
    x, h, y = 2 * 16 * F32, 2 * 16 * F32, 2 * 4 * F32
    # ops: view, t, mm(x->h), view, t, mm(h->y), relu(y->out)
    assert mem.timeline == (x, x, x + h, h, h, h + y, h + y + y)
    assert mem.output_bytes == h + y


def test_parameters_are_not_activations() -> None:
    model = nn.Linear(1000, 2, bias=False)  # 8000 bytes of weight
    mem = activation_memory(trace_model(model, torch.randn(1, 1000)))
    assert mem.peak_bytes == 1000 * F32 + 2 * F32


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZER_STATES))
def test_training_memory_closed_form(optimizer: str) -> None:
    params = 4 * 8 + 8 + 8 * 2 + 2
    tm = training_memory(mlp(), torch.randn(3, 4), optimizer=optimizer)
    states = {"adam": 2, "sgd-momentum": 1, "sgd": 0}[optimizer]
    assert tm.weights_bytes == tm.gradients_bytes == params * F32
    assert tm.optimizer_bytes == states * params * F32
    # Saved for backward: addmm #1 saves its input x [3, 4] (for the weight gradient); ReLU
    # saves its output [3, 8]; addmm #2 saves its input, the same ReLU output (one storage).
    # Weights (and W.t() views) are parameters, not activations.
    assert tm.saved_activations_bytes == (3 * 4 + 3 * 8) * F32
    assert tm.total_bytes == (
        tm.weights_bytes + tm.gradients_bytes + tm.optimizer_bytes + tm.saved_activations_bytes
    )


def test_frozen_parameters_need_no_gradients_or_state() -> None:
    model = mlp()
    model[0].requires_grad_(False)
    tm = training_memory(model, torch.randn(3, 4), optimizer="adam")
    trainable = (8 * 2 + 2) * F32
    assert tm.weights_bytes == (4 * 8 + 8 + 8 * 2 + 2) * F32
    assert (tm.gradients_bytes, tm.optimizer_bytes) == (trainable, 2 * trainable)
    # x no longer needs saving: the first layer has no trainable weight.
    assert tm.saved_activations_bytes == 3 * 8 * F32


def test_training_memory_does_not_mutate_the_model() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 1, 6, 6)
    rng = torch.get_rng_state()
    tm = training_memory(model, x)
    assert not any(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert tm.saved_activations_bytes > 0
    # buffers count as weights: BN running mean/var (2 x 2 float32) + num_batches_tracked (int64)
    assert tm.weights_bytes == (2 * 9 + 2 + 2 + 2) * F32 + 2 * 2 * F32 + 8


def test_unknown_optimizer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="optimizer"):
        training_memory(mlp(), torch.randn(1, 4), optimizer="lion")
