"""Codebook layers and the k-means model transform: packing, decode, pruned weights, sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as prune
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtorch.core.size import WeightFormat, model_size_bits, tensor_size_bits
from slimtorch.errors import ConfigError
from slimtorch.models import create_model
from slimtorch.quantize.kmeans import KMeansConfig, kmeans_codebook, kmeans_quantize_model
from slimtorch.quantize.kmeans_module import (
    CodebookConv,
    CodebookLinear,
    pack_indices,
    unpack_indices,
)


def reference_pack(values: list[int], bits: int) -> bytes:
    """Bit by bit: value i at stream bits [i*bits, (i+1)*bits), LSB first, bytes LSB first."""
    stream = [(v >> j) & 1 for v in values for j in range(bits)]
    stream += [0] * (-len(stream) % 8)
    return bytes(sum(stream[i + j] << j for j in range(8)) for i in range(0, len(stream), 8))


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 16).flatmap(
        lambda b: st.tuples(st.just(b), st.lists(st.integers(0, 2**b - 1), min_size=0, max_size=40))
    )
)
def test_pack_round_trips_bit_for_bit(case: tuple[int, list[int]]) -> None:
    bits, values = case
    packed = pack_indices(torch.tensor(values, dtype=torch.long), bits)
    assert packed.dtype == torch.uint8
    assert bytes(packed.tolist()) == reference_pack(values, bits)
    assert unpack_indices(packed, bits, len(values)).tolist() == values


def test_pack_rejects_out_of_range() -> None:
    with pytest.raises(ConfigError):
        pack_indices(torch.tensor([4]), bits=2)
    with pytest.raises(ConfigError):
        pack_indices(torch.tensor([1]), bits=0)
    with pytest.raises(ConfigError):
        pack_indices(torch.tensor([1]), bits=17)


def test_linear_shell_matches_dense_linear() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(20, 7)
    codebook, idx, zero = kmeans_codebook(layer.weight, bits=3)
    shell = CodebookLinear(idx, codebook, 3, layer.bias, zero)
    x = torch.randn(5, 20)
    expected = F.linear(x, codebook[idx], layer.bias)
    torch.testing.assert_close(shell(x), expected, rtol=0, atol=0)
    assert shell.packed.numel() == (20 * 7 * 3 + 7) // 8


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_shell_matches_dense_conv(groups: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=groups)
    model = nn.Sequential(conv)
    q, _ = kmeans_quantize_model(model, KMeansConfig(bits=4))
    assert isinstance(q[0], CodebookConv)
    codebook, idx, _ = kmeans_codebook(conv.weight, bits=4)
    x = torch.randn(2, 4, 9, 9)
    expected = F.conv2d(x, codebook[idx], conv.bias, stride=2, padding=1, groups=groups)
    torch.testing.assert_close(q(x), expected, rtol=0, atol=0)


def test_model_transform_on_pruned_vgg_keeps_zeros_and_sizes() -> None:
    torch.manual_seed(0)
    model = create_model("vgg")
    conv = model.features[1][0]
    prune.l1_unstructured(conv, "weight", amount=0.6)  # torch prune hook: weight_orig * mask
    pruned = (conv.weight_orig * conv.weight_mask).detach()
    q, report = kmeans_quantize_model(model, KMeansConfig(bits=3, exclude=("classifier",)))
    shell = q.features[1][0]
    assert torch.equal(shell.weight == 0, pruned == 0)  # pruned stay exactly zero
    assert shell.weight.unique().numel() <= 2**3
    assert isinstance(q.classifier, nn.Linear) and model.features[1][0] is conv  # copy
    rows = {r.name: r for r in report.layers}
    assert "classifier.weight" not in rows and rows["features.1.0.weight"].bits == 3
    fmt = WeightFormat(bits=3, codebook=True, codebook_entry_bits=32)
    assert rows["features.1.0.weight"].size_bits == tensor_size_bits(shell.weight, fmt).total_bits
    # what the model stores: 3-bit packed indices (8 bits per byte) and 8 fp32 centroids
    dense_bytes = WeightFormat(bits=8, sparse="dense")
    stored = model_size_bits(q, {r"features\.1\.0\.(packed|codebook)": dense_bytes})
    assert stored["features.1.0.packed"].total_bits == 16 * 16 * 3 * 3 * 3  # closed form
    assert stored["features.1.0.codebook"].numel == 2**3


def test_model_transform_output_equals_dequantized_float_model() -> None:
    torch.manual_seed(1)
    model = create_model("vgg").eval()
    q, report = kmeans_quantize_model(model, KMeansConfig(bits=2, layer_bits={"classifier": 6}))
    q.eval()
    dense = create_model("vgg").eval()
    dense.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, module in q.named_modules():
            if isinstance(module, CodebookLinear | CodebookConv):
                dense.get_submodule(name).weight.copy_(module.weight)
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(q(x), dense(x))
    assert {r.name: r.bits for r in report.layers}["classifier.weight"] == 6
    for row in report.layers:  # report error against the float weight, closed form
        w = dict(model.named_parameters())[row.name]
        w_hat = q.get_submodule(row.name.rpartition(".")[0]).weight
        assert row.mse == pytest.approx(float(((w - w_hat) ** 2).mean().detach()), rel=1e-5)
