"""Centroid fine-tuning: each centroid's gradient is the sum of its weights' gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as prune
from torch import nn

from slimtorch.data import load_digits, make_loaders
from slimtorch.errors import ConfigError
from slimtorch.models import create_model
from slimtorch.quantize.kmeans import KMeansConfig, kmeans_codebook, kmeans_quantize_model
from slimtorch.quantize.kmeans_module import CodebookConv, CodebookLinear
from slimtorch.quantize.trained import centroid_gradient, codebook_layers, finetune_centroids
from slimtorch.train import evaluate


def loop_sum(grad: torch.Tensor, idx: torch.Tensor, k: int) -> torch.Tensor:
    """Slow oracle: one masked sum per centroid."""
    return torch.stack([grad[idx == j].sum() for j in range(k)])


def test_linear_centroid_gradient_is_summed_weight_gradient() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(12, 5)
    codebook, idx, zero = kmeans_codebook(layer.weight, bits=3)
    shell = CodebookLinear(idx, codebook, 3, layer.bias, zero)
    x, y = torch.randn(9, 12), torch.randint(0, 5, (9,))
    F.cross_entropy(shell(x), y).backward()
    # oracle 1: a dense float weight holding the same values, its autograd gradient summed
    w = codebook[idx].clone().requires_grad_(True)
    F.cross_entropy(F.linear(x, w, layer.bias), y).backward()
    torch.testing.assert_close(shell.codebook.grad, loop_sum(w.grad, idx, 8))
    torch.testing.assert_close(centroid_gradient(w.grad, idx, 8), loop_sum(w.grad, idx, 8))
    # oracle 2: autograd through an explicit one-hot scatter (weight = onehot(idx) @ codebook)
    cb = codebook.clone().requires_grad_(True)
    onehot = F.one_hot(idx, 8).float()  # [5, 12, 8]
    F.cross_entropy(F.linear(x, onehot @ cb, layer.bias), y).backward()
    torch.testing.assert_close(shell.codebook.grad, cb.grad)


def test_conv_centroid_gradient_and_pruned_entry_gets_none() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    prune.l1_unstructured(conv, "weight", amount=0.5)
    model, _ = kmeans_quantize_model(nn.Sequential(conv), KMeansConfig(bits=2))
    shell = model[0]
    assert isinstance(shell, CodebookConv) and shell.zero_index == 0
    x = torch.randn(2, 3, 5, 5)
    model(x).square().sum().backward()
    w = shell.weight.detach().clone().requires_grad_(True)
    F.conv2d(x, w, shell.bias, padding=1).square().sum().backward()
    expected = loop_sum(w.grad, shell.indices().view(w.shape), 4)
    expected[0] = 0.0  # the reserved exact-zero entry is not trained
    torch.testing.assert_close(shell.codebook.grad, expected)


def test_finetune_changes_only_centroids_and_keeps_assignments() -> None:
    splits = load_digits(seed=0)
    train, val, _ = make_loaders(splits, batch_size=64, seed=0)
    torch.manual_seed(0)
    model = create_model("lenet300")
    prune.l1_unstructured(model.get_submodule(_first_linear(model)), "weight", amount=0.5)
    q, _ = kmeans_quantize_model(model, KMeansConfig(bits=2))
    layers = codebook_layers(q)
    before_idx = {n: m.packed.clone() for n, m in layers.items()}
    before_cb = {n: m.codebook.detach().clone() for n, m in layers.items()}
    before_other = {n: p.detach().clone() for n, p in q.named_parameters() if "codebook" not in n}
    flags = {n: p.requires_grad for n, p in q.named_parameters()}
    acc_before = evaluate(q, val).accuracy
    report = finetune_centroids(q, train, val, epochs=2, lr=1e-3, progress=False)
    assert len(report.history) == 2
    for n, m in layers.items():
        assert torch.equal(m.packed, before_idx[n])  # assignments fixed
        assert not torch.equal(m.codebook.detach(), before_cb[n])  # centroids moved
        if m.zero_index >= 0:
            assert bool((m.weight[m.indices().view(m.weight_shape) == 0] == 0).all())
    for n, p in q.named_parameters():
        if "codebook" not in n:
            assert torch.equal(p.detach(), before_other[n])
        assert p.requires_grad == flags[n]
    assert evaluate(q, val).accuracy >= acc_before  # 2-bit damage partly repaired


def _first_linear(model: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if isinstance(m, nn.Linear))


def test_finetune_needs_codebook_layers() -> None:
    with pytest.raises(ConfigError):
        finetune_centroids(nn.Linear(2, 2), [(torch.randn(2, 2), torch.tensor([0, 1]))])
