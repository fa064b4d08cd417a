"""Total MACs agree with fvcore, an independent counter (dev-only oracle).

fvcore's FlopCountAnalysis traces with TorchScript and counts one "flop" per multiply-add for
conv, linear, matmul, addmm, bmm and einsum. We compare only those operators: fvcore also counts
some normalization and pooling ops under its own conventions.
"""

from __future__ import annotations

import math

import fvcore.nn as fvcore_nn
import pytest
import torch
from torch import nn

from slimtorch.core.trace import trace_model
from slimtorch.models import MODEL_NAMES, create_model

MAC_OPERATORS = ("conv", "linear", "matmul", "addmm", "bmm", "einsum")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def fvcore_macs(model: nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...]) -> int:
    analysis = fvcore_nn.FlopCountAnalysis(model.eval(), x)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return int(sum(n for op, n in analysis.by_operator().items() if op in MAC_OPERATORS))


class OddCNN(nn.Module):
    """Grouped, dilated, strided, depthwise, transposed and 1-d convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.grouped = nn.Conv2d(8, 12, 3, padding=2, dilation=2, groups=4)
        self.depthwise = nn.Conv2d(12, 12, 5, padding=2, groups=12, bias=False)
        self.up = nn.ConvTranspose2d(12, 6, 4, stride=2, padding=1)
        self.line = nn.Conv1d(6, 4, 3)
        self.head = nn.Linear(4 * 254, 5)

    def forward(self, x):
        y = torch.relu(self.grouped(torch.relu(self.stem(x))))
        y = self.up(self.depthwise(y))  # [N, 6, 16, 16]
        return self.head(self.line(y.flatten(2)).flatten(1))


class TinyTransformer(nn.Module):
    """Pre-norm block with attention written as matmuls and an einsum output projection."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Parameter(torch.randn(dim, dim) / dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):  # x: [B, T, C]
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(c, dim=-1)  # each [B, T, C]
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)  # [B, T, C]
        x = x + torch.einsum("btc,cd->btd", y, self.proj)
        return x + self.mlp(self.norm2(x))


def zoo_cases() -> list[tuple[str, str, str]]:
    cases = []
    for name in MODEL_NAMES:
        for norm, act in (("batch", "relu"), ("weight", "silu"), ("group", "hardswish")):
            cases.append((name, norm, act))
    return cases


@pytest.mark.parametrize(("name", "norm", "act"), zoo_cases())
def test_zoo_macs_match_fvcore(name: str, norm: str, act: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, norm=norm, act=act)
    x = torch.rand(2, 1, 8, 8)
    trace = trace_model(model, x)
    assert trace.total_macs == fvcore_macs(model, x) > 0
    assert trace.total_params == fvcore_params(model)
    assert sum(layer.params for layer in trace.layers) == trace.total_params


def fvcore_params(model: nn.Module) -> int:
    """fvcore's own parameter counter (independent of ours)."""
    from fvcore.nn import parameter_count

    return int(parameter_count(model)[""])


@pytest.mark.parametrize(
    ("model", "x"),
    [
        (OddCNN(), torch.rand(2, 3, 16, 16)),
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 10)), None),
        (TinyTransformer(), torch.rand(2, 7, 16)),
    ],
    ids=["odd-cnn", "mlp", "transformer"],
)
def test_hand_built_macs_match_fvcore(model: nn.Module, x: torch.Tensor | None) -> None:
    x = torch.rand(3, 1, 8, 8) if x is None else x
    assert trace_model(model, x).total_macs == fvcore_macs(model, x) > 0
