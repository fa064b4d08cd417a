"""How important each channel of a coupled group is, and which channels a ratio keeps.

Channel surgery (:func:`slimtorch.prune.surgery.prune_channels`) scores a group's channels
with one of these functions (``IMPORTANCE`` by name) and keeps the best with
:func:`keep_by_importance`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from slimtorch.errors import ConfigError
from slimtorch.prune.graph import ChannelGroup

Importance = Callable[[nn.Module, ChannelGroup], Tensor]


def _norm_importance(model: nn.Module, group: ChannelGroup, p: int) -> Tensor:
    scores = torch.zeros(group.size)
    for name in group.modules("out"):
        w = model.get_submodule(name).weight.detach().float()  # [C_out, ...]
        scores += w.reshape(w.shape[0], -1).norm(p=p, dim=1)
    return scores


def l1_importance(model: nn.Module, group: ChannelGroup) -> Tensor:
    """Per-channel L1 norm of every producer's filter, summed over the group.

    Example:
        >>> from slimtorch.prune.graph import trace_channels
        >>> m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> with torch.no_grad():
        ...     _ = m[0].weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 0.0], [-3.0, 1.0]]))
        >>> l1_importance(m, trace_channels(m, torch.zeros(1, 2)).groups[0])
        tensor([2.0000, 0.5000, 4.0000])
    """
    return _norm_importance(model, group, 1)


def l2_importance(model: nn.Module, group: ChannelGroup) -> Tensor:
    """Per-channel L2 norm of every producer's filter, summed over the group."""
    return _norm_importance(model, group, 2)


def bn_importance(model: nn.Module, group: ChannelGroup) -> Tensor:
    """|BatchNorm gamma| per channel, summed over the group's BatchNorms (network slimming,
    Liu et al. 2017); groups without a BatchNorm fall back to :func:`l1_importance`."""
    scores = torch.zeros(group.size)
    norms = [model.get_submodule(n) for n in group.modules("tied")]
    norms = [
        m for m in norms if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None
    ]
    for m in norms:
        scores += m.weight.detach().abs().float()
    return scores if norms else l1_importance(model, group)


IMPORTANCE: dict[str, Importance] = {"l1": l1_importance, "l2": l2_importance, "bn": bn_importance}


def keep_by_importance(
    scores: Tensor, ratio: float, min_channels: int = 1, round_to: int = 1
) -> Tensor:
    """Indices (ascending) of the channels to keep: the highest scores, ties to the lower index.

    Args:
        scores: one score per channel.
        ratio: fraction of channels to remove, in ``[0, 1)``.
        min_channels: never keep fewer.
        round_to: round the kept count up to a multiple of this (capped at all channels).

    Returns:
        An int64 tensor of kept channel indices.

    Example:
        >>> keep_by_importance(torch.tensor([3.0, 1.0, 2.0, 1.0]), 0.5)
        tensor([0, 2])
    """
    if not 0 <= ratio < 1:
        raise ConfigError(f"ratio must be in [0, 1), got {ratio}")
    if min_channels < 1 or round_to < 1:
        raise ConfigError(f"min_channels and round_to must be >= 1, got {min_channels}, {round_to}")
    size = scores.numel()
    n = max(min_channels, round(size * (1 - ratio)))
    n = min(size, math.ceil(n / round_to) * round_to)
    order = sorted(range(size), key=lambda i: (-float(scores[i]), i))
    return torch.tensor(sorted(order[:n]), dtype=torch.long)
