"""Centroid fine-tuning: each centroid's gradient is the sum of its weights' gradients."""

from __future__ import annotations

import copy

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
from slimtorch.quantize.trained import (
    centroid_gradient,
    codebook_layers,
    finetune_centroids,
    recalibrate_bn,
)
from slimtorch.train import FitConfig, evaluate, fit


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


def _digits_2bit() -> tuple[nn.Module, object, object]:
    splits = load_digits(seed=0)
    train, val, _ = make_loaders(splits, batch_size=64, seed=0)
    torch.manual_seed(0)
    model = create_model("lenet300")
    fit(model, train, None, FitConfig(epochs=2), progress=False)
    q, _ = kmeans_quantize_model(model, KMeansConfig(bits=2))
    return q, train, val


def test_loss_hook_replaces_the_loss_and_after_backward_runs_each_step() -> None:
    """Oracles: a ``loss_fn`` that is cross-entropy gives the default run bit for bit; a
    zero loss leaves every centroid where it was (Adam's first step of a zero gradient is 0);
    ``after_backward`` runs once per batch, after the gradients exist."""
    data = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(3)]
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    def centroids(loss_fn=None, after_backward=None) -> list[torch.Tensor]:
        q, _ = kmeans_quantize_model(base, KMeansConfig(bits=2))
        finetune_centroids(q, data, epochs=2, progress=False, loss_fn=loss_fn,
                           after_backward=after_backward)  # fmt: skip
        return [m.codebook.detach().clone() for m in codebook_layers(q).values()]

    plain = centroids()
    same = centroids(lambda model, out, y: F.cross_entropy(out, y))
    assert all(torch.equal(a, b) for a, b in zip(plain, same, strict=True))
    start = [m.codebook.detach() for m in codebook_layers(kmeans_quantize_model(
        base, KMeansConfig(bits=2))[0]).values()]  # fmt: skip
    frozen = centroids(lambda model, out, y: 0.0 * out.sum())
    assert all(torch.equal(a, b) for a, b in zip(start, frozen, strict=True))
    seen = []
    centroids(after_backward=lambda m: seen.append(m[0].codebook.grad is not None))
    assert seen == [True] * (2 * len(data))


def test_keep_best_restores_the_best_epoch_by_validation() -> None:
    q, train, val = _digits_2bit()
    rerun = copy.deepcopy(q)
    start = evaluate(q, val).accuracy
    report = finetune_centroids(q, train, val, epochs=4, lr=3e-2, keep_best=True, progress=False)
    accs = [start] + [e.val_accuracy for e in report.history]
    best = max(range(len(accs)), key=lambda i: (accs[i], -i))  # earliest best
    assert evaluate(q, val).accuracy == accs[best]
    # oracle: an independent run of exactly `best` epochs (same seed, fresh loaders)
    _, train2, val2 = _digits_2bit()
    if best:
        finetune_centroids(rerun, train2, val2, epochs=best, lr=3e-2, progress=False)
    for (n, a), (_, b) in zip(q.state_dict().items(), rerun.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=n)


def test_keep_best_keeps_the_start_when_training_only_hurts() -> None:
    q, train, val = _digits_2bit()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    report = finetune_centroids(q, train, val, epochs=2, lr=50.0, keep_best=True, progress=False)
    assert evaluate(q, val).accuracy > 0.5  # a trained start
    assert max(e.val_accuracy for e in report.history) < evaluate(q, val).accuracy
    for k, v in q.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_cosine_schedule_and_option_errors() -> None:
    q, train, val = _digits_2bit()
    report = finetune_centroids(q, train, val, epochs=2, scheduler="cosine", progress=False)
    assert [e.lr for e in report.history] == pytest.approx([1e-3, 0.5e-3])  # cos(pi/2) -> half
    with pytest.raises(ConfigError, match="scheduler"):
        finetune_centroids(q, train, scheduler="step", progress=False)
    with pytest.raises(ConfigError, match="keep_best"):
        finetune_centroids(q, train, None, keep_best=True, progress=False)


def test_recalibrate_bn_matches_batch_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.3))
    model.eval()
    batches = [(torch.randn(16, 3) * (i + 1) + i, None) for i in range(3)]
    assert recalibrate_bn(model, [*batches, (torch.randn(16, 3), None)], batches=3) == 3
    # oracle: the pre-BN activations of each batch, averaged batch by batch
    with torch.no_grad():
        acts = [model[0](x) for x, _ in batches]
    mean = torch.stack([a.mean(0) for a in acts]).mean(0)
    var = torch.stack([a.var(0, unbiased=True) for a in acts]).mean(0)
    torch.testing.assert_close(model[1].running_mean, mean)
    torch.testing.assert_close(model[1].running_var, var)
    assert model[1].momentum == 0.3 and not model.training
    assert recalibrate_bn(nn.Linear(2, 2), batches) == 0
    with pytest.raises(ConfigError, match="batches"):
        recalibrate_bn(model, batches, batches=0)
