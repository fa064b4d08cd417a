"""Trained quantization: fine-tune the centroids of k-means codebook layers.

Deep Compression (Han et al., ICLR 2016, Sec. 3.3) keeps every weight's cluster assignment
fixed and updates each shared value with the sum of the gradients of the weights that share
it. A codebook layer decodes ``weight = codebook[indices]``; the backward pass of that gather
is exactly this scatter-add (:func:`centroid_gradient` is the closed form, used as the test
oracle), so fine-tuning is ordinary training with only the codebooks trainable.

Example:
    >>> import torch
    >>> centroid_gradient(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 1, 0]), k=2).tolist()
    [4.0, 2.0]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from slimtorch.errors import ConfigError
from slimtorch.quantize.kmeans_module import CodebookLayer
from slimtorch.train import (
    SCHEDULERS,
    EpochStats,
    FitConfig,
    FitReport,
    LossFn,
    ModelHook,
    evaluate,
    fit,
)

DEFAULT_CENTROID_LR = 1e-3  # Adam step for centroids; weights here are O(0.1)

Batches = Iterable[Sequence[Tensor]]


def centroid_gradient(weight_grad: Tensor, indices: Tensor, k: int) -> Tensor:
    """Each centroid's gradient: the sum of the gradients of the weights assigned to it.

    Args:
        weight_grad: Gradient of the loss with respect to the decoded weight (any shape).
        indices: Cluster index of each weight, same shape.
        k: Number of centroids.

    Returns:
        ``[k]`` tensor; entry ``j`` is ``weight_grad[indices == j].sum()``.

    Example:
        >>> centroid_gradient(torch.ones(2, 2), torch.tensor([[0, 2], [2, 2]]), k=3).tolist()
        [1.0, 0.0, 3.0]
    """
    if weight_grad.shape != indices.shape:
        raise ConfigError(f"indices: shape {tuple(indices.shape)} != {tuple(weight_grad.shape)}")
    out = torch.zeros(k, dtype=weight_grad.dtype)
    return out.index_add_(0, indices.reshape(-1).long(), weight_grad.reshape(-1))


def codebook_layers(model: nn.Module) -> dict[str, CodebookLayer]:
    """The codebook layers of ``model`` by qualified name.

    Example:
        >>> codebook_layers(nn.Linear(2, 2))
        {}
    """
    return {n: m for n, m in model.named_modules() if isinstance(m, CodebookLayer)}


def finetune_centroids(
    model: nn.Module,
    train_loader: Batches,
    val_loader: Batches | None = None,
    epochs: int = 1,
    lr: float = DEFAULT_CENTROID_LR,
    *,
    train_other: bool = False,
    freeze_bn: bool = False,
    scheduler: str = "none",
    keep_best: bool = False,
    seed: int = 0,
    progress: bool = True,
    label: str = "finetune_centroids",
    loss_fn: LossFn | None = None,
    after_backward: ModelHook | None = None,
) -> FitReport:
    """Fine-tune the centroids of every codebook layer in place, assignments fixed.

    Only the ``codebook`` parameters learn (plus every other parameter with ``train_other``);
    reserved exact-zero entries stay 0 and ``requires_grad`` flags are restored afterwards.

    Args:
        model: A model from :func:`~slimtorch.quantize.kmeans.kmeans_quantize_model`.
        train_loader, val_loader: ``(x, y)`` batches (validation after each epoch; optional).
        epochs, lr: Passes over ``train_loader`` (>= 1) and the Adam learning rate.
        train_other: Also train biases, norms and float layers.
        freeze_bn: Run BatchNorm on its running statistics (not updated), as inference does.
        scheduler: ``"none"`` or ``"cosine"`` (lr annealed to 0 over ``epochs``).
        keep_best: End in the state (parameters and buffers) with the best validation accuracy
            among the start and every epoch (the earliest on a tie); needs ``val_loader``.
        seed, progress, label: The training loop's seed, progress lines and their label.
        loss_fn: ``loss_fn(model, outputs, targets) -> scalar`` in place of cross-entropy
            (e.g. a :class:`~slimtorch.distill.Distiller`'s, to learn from a teacher).
        after_backward: ``hook(model)`` before each optimizer step (e.g. the Distiller's).

    Returns:
        The ``FitReport`` of the fine-tuning run.

    Example:
        >>> from slimtorch.quantize.kmeans import KMeansConfig, kmeans_quantize_model
        >>> q, _ = kmeans_quantize_model(nn.Sequential(nn.Linear(4, 2)), KMeansConfig(bits=2))
        >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
        >>> finetune_centroids(q, data, epochs=2, progress=False).history[-1].epoch
        1
    """
    layers = codebook_layers(model)
    _check_options(layers, scheduler, keep_best, val_loader)
    best = _BestState(model, evaluate(model, val_loader).accuracy) if keep_best else None
    config = FitConfig(epochs=epochs, lr=lr, optimizer="adam", scheduler=scheduler, seed=seed)
    callbacks = [best.update] if best is not None else None
    with _centroids_only(model, layers, train_other, freeze_bn):
        report = fit(model, train_loader, val_loader, config, progress, callbacks, label=label,
                     loss_fn=loss_fn, after_backward=after_backward)  # fmt: skip
        if best is not None:
            model.load_state_dict(best.state)
    return report


def _check_options(
    layers: dict[str, CodebookLayer], scheduler: str, keep_best: bool, val_loader: object
) -> None:
    if not layers:
        raise ConfigError("finetune_centroids: the model has no codebook layers (k-means first)")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"scheduler: expected one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if keep_best and val_loader is None:
        raise ConfigError("keep_best: needs a val_loader to choose the best state")


@contextlib.contextmanager
def _centroids_only(
    model: nn.Module, layers: dict[str, CodebookLayer], train_other: bool, freeze_bn: bool
) -> Iterator[None]:
    """Only the codebooks (all parameters with ``train_other``) require gradients, BatchNorm
    runs on its running statistics with ``freeze_bn``; both undone on exit."""
    centroids = {id(m.codebook) for m in layers.values()}
    saved = {p: p.requires_grad for p in model.parameters()}
    hooks = [
        m.register_forward_pre_hook(_eval_mode)
        for m in model.modules()
        if freeze_bn and isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        for p in model.parameters():
            p.requires_grad_(train_other or id(p) in centroids)
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for p, flag in saved.items():
            p.requires_grad_(flag)


class _BestState:
    """Epoch callback: a copy of the model's state at its best validation accuracy so far."""

    def __init__(self, model: nn.Module, accuracy: float) -> None:
        self.accuracy = accuracy
        self.state = _copy_state(model)

    def update(self, model: nn.Module, stats: EpochStats) -> None:
        """Keep ``model``'s state if this epoch beat the best validation accuracy."""
        if stats.val_accuracy is not None and stats.val_accuracy > self.accuracy:
            self.accuracy, self.state = stats.val_accuracy, _copy_state(model)


def _copy_state(model: nn.Module) -> dict[str, Tensor]:
    # Epoch callbacks may run inside fit's inference-mode evaluation: copies made there would be
    # inference tensors, which later training cannot save for backward.
    with torch.inference_mode(False):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


def recalibrate_bn(model: nn.Module, loader: Batches, batches: int | None = None) -> int:
    """Re-estimate every BatchNorm's running statistics under the model's current weights.

    Quantization changes each layer's output distribution, so the float model's running
    mean and variance no longer match. This resets them and averages the batch statistics
    (cumulative average, ``momentum=None``) over ``loader`` in train mode without gradients;
    nothing else changes. Momenta and the model's mode are restored.

    Args:
        model: Any model; a model without BatchNorm is left unchanged.
        loader: ``(x, y)`` batches (labels unused), typically the training split.
        batches: Use at most this many batches (``None``: all).

    Returns:
        The number of batches seen.

    Example:
        >>> bn = nn.BatchNorm1d(2)
        >>> recalibrate_bn(bn, [(torch.tensor([[1.0, 2.0], [3.0, 6.0]]), None)])
        1
        >>> bn.running_mean.tolist()
        [2.0, 4.0]
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if batches is not None and (not isinstance(batches, int) or batches < 1):
        raise ConfigError(f"batches: expected an integer >= 1 or None, got {batches!r}")
    if not norms:
        return 0
    momenta, was_training, seen = [m.momentum for m in norms], model.training, 0
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for x, *_ in loader:
                if batches is not None and seen >= batches:
                    break
                model(x)
                seen += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return seen


def _eval_mode(module: nn.Module, args: object) -> None:
    """Forward pre-hook: run this (BatchNorm) layer with its running statistics."""
    module.eval()
