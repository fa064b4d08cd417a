"""First-order and scaling-based importance criteria; every score is "higher = keep".

Each criterion returns, per layer, **element scores of the weight's shape** so that any
granularity can aggregate them (:func:`slimtorch.prune.masks.group_scores`). Criteria that
only know whole channels (BatchNorm gamma, APoZ) broadcast their channel score over the filter;
they are meaningful at ``PerChannel(0)`` granularity only.

- magnitude: ``|w|^p``, whose group sum ranks groups by their Lp norm (Han et al. 2015 for
  p = 1, 2 on elements; Li et al. 2017 for L1 filter norms);
- ``bn_gamma``: ``|gamma|`` of the BatchNorm that follows a layer (Liu et al. 2017, network
  slimming; train with :func:`slimming_loss` to make gammas sparse);
- ``apoz``: ``1 - APoZ`` of the channel's post-activation output (Hu et al. 2016);
- ``taylor``: ``|w * dL/dw|`` averaged over calibration batches (Molchanov et al. 2017/2019).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimtorch.errors import ConfigError
from slimtorch.prune.obs import (
    Batches,
    ZeroCounter,
    execution_order,
    first_batches,
    following_module,
    forward_hooks,
    run_batches,
)

ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.SiLU,
    nn.Hardswish,
    nn.Sigmoid,
    nn.GELU,
    nn.ELU,
)
NORMS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm,)

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def magnitude_scores(weight: Tensor, p: float = 1.0) -> Tensor:
    """``|w|^p``: summed over a group it ranks groups by their Lp norm.

    Example:
        >>> magnitude_scores(torch.tensor([-2.0, 1.0]), p=2).tolist()
        [4.0, 1.0]
    """
    if not p > 0:
        raise ConfigError(f"magnitude criterion: the norm order p must be > 0, got {p}")
    return weight.detach().abs().pow(p)


def broadcast_channels(channel_scores: Tensor, weight: Tensor) -> Tensor:
    """Spread per-output-channel scores ``[C]`` over a weight ``[C, ...]``."""
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return channel_scores.to(weight.dtype).reshape(shape).expand_as(weight).clone()


def _out_channels(module: nn.Module) -> int:
    return int(module.weight.shape[0])


def bn_gamma_scores(
    model: nn.Module, layers: dict[str, nn.Module], example: Tensor
) -> dict[str, Tensor]:
    """``|gamma|`` of the BatchNorm that follows each layer, broadcast over its filters.

    Args:
        model: the model.
        layers: name -> Conv2d/Linear whose output channels are scored.
        example: one input batch (used to trace the execution order).

    Returns:
        name -> element scores of the layer's weight shape.

    Raises:
        ConfigError: a layer is not followed by a BatchNorm with as many channels.
    """
    order = execution_order(model, example)
    modules = dict(model.named_modules())
    scores = {}
    for name, layer in layers.items():
        bn = following_module(model, order, name, NORMS, _out_channels(layer))
        if bn is None or modules[bn].weight is None:
            raise ConfigError(
                f"criterion bn_gamma: layer {name!r} is not followed by an affine BatchNorm; "
                "exclude it or choose another criterion"
            )
        gamma = modules[bn].weight.detach().abs()
        scores[name] = broadcast_channels(gamma, layer.weight)
    return scores


def slimming_loss(lam: float = 1e-4, label_smoothing: float = 0.0) -> LossFn:
    """Network-slimming loss for ``fit``: cross-entropy plus ``lam * sum |gamma|`` of every
    BatchNorm (Liu et al. 2017 use ``lam`` of 1e-4 to 1e-5).

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        >>> out, y = torch.zeros(1, 2), torch.tensor([0])
        >>> round(float(slimming_loss(0.5)(m, out, y)), 4)  # ln 2 + 0.5 * (1 + 1)
        1.6931
    """
    if not lam >= 0:
        raise ConfigError(f"slimming_loss: lam must be >= 0, got {lam}")

    def loss(model: nn.Module, outputs: Tensor, targets: Tensor) -> Tensor:
        base = F.cross_entropy(outputs, targets, label_smoothing=label_smoothing)
        gammas = [m.weight.abs().sum() for m in model.modules() if isinstance(m, NORMS)]
        return base + lam * torch.stack(gammas).sum() if gammas else base

    return loss


def apoz_scores(
    model: nn.Module, layers: dict[str, nn.Module], batches: Batches, limit: int | None = None
) -> dict[str, Tensor]:
    """``1 - APoZ`` of each layer's channels, measured after the activation that follows it.

    When no activation follows a layer (before the next conv/linear), its raw output is used.

    Args:
        model: the model.
        layers: name -> Conv2d/Linear.
        batches: calibration ``(x, y)`` batches.
        limit: at most this many batches.

    Returns:
        name -> element scores of the layer's weight shape.
    """
    batches = list(first_batches(batches, limit))
    order = execution_order(model, batches[0][0][:1])
    modules = dict(model.named_modules())
    counters, hooks = {}, {}
    for name, layer in layers.items():
        act = following_module(model, order, name, ACTIVATIONS, _out_channels(layer))
        counters[name] = ZeroCounter()
        hooks[modules[act] if act else layer] = counters[name]
    with forward_hooks(hooks):
        run_batches(model, batches)
    return {
        name: broadcast_channels(1.0 - counters[name].apoz(), layer.weight)
        for name, layer in layers.items()
    }


def taylor_scores(
    model: nn.Module,
    layers: dict[str, nn.Module],
    batches: Batches,
    limit: int | None = None,
    loss_fn: LossFn | None = None,
) -> dict[str, Tensor]:
    """First-order Taylor importance ``|w * dL/dw|``, averaged over calibration batches.

    Args:
        model: the model (gradients are computed in eval mode and cleared afterwards).
        layers: name -> Conv2d/Linear.
        batches: calibration ``(x, y)`` batches.
        limit: at most this many batches.
        loss_fn: ``loss_fn(model, outputs, targets)``; default cross-entropy.

    Returns:
        name -> element scores of the layer's weight shape.
    """
    loss_fn = loss_fn or (lambda m, o, t: F.cross_entropy(o, t))
    totals = {name: torch.zeros_like(layer.weight) for name, layer in layers.items()}
    was_training, count = model.training, 0
    model.eval()
    try:
        for x, y in first_batches(batches, limit):
            model.zero_grad(set_to_none=True)
            loss_fn(model, model(x), y).backward()
            for name, layer in layers.items():
                totals[name] += (layer.weight.detach() * layer.weight.grad).abs()
            count += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if count == 0:
        raise ConfigError("taylor criterion: the calibration loader yielded no batches")
    return {name: t / count for name, t in totals.items()}
