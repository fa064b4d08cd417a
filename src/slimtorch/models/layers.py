"""Normalization and activation factories shared by every zoo model.

Every zoo model takes ``norm`` and ``act`` as strings and builds its layers through
:func:`make_norm`, :func:`make_act` and :func:`conv_norm_act`, so the choice lives in one place.

Normalization kinds (``NORMS``):

- ``"batch"``: ``BatchNorm2d`` on feature maps, ``BatchNorm1d`` on feature vectors.
- ``"layer"``: ``GroupNorm(1, C)`` on feature maps, which normalizes each sample over (C, H, W)
  like ``LayerNorm([C, H, W])`` but with a per-channel affine, so it does not depend on the
  spatial size; ``LayerNorm(C)`` on feature vectors.
- ``"instance"``: ``InstanceNorm2d(C, affine=True)``; feature maps only (a vector has no
  spatial extent to normalize over).
- ``"group"``: ``GroupNorm(G, C)`` with ``G = group_count(C)`` (at most 32 groups, at least
  2 channels per group).
- ``"weight"``: no normalization layer; every ``Conv2d`` and ``Linear`` of the finished model is
  reparametrized with ``torch.nn.utils.parametrizations.weight_norm`` (see
  :func:`apply_weight_norm`).
- ``"none"``: no normalization.

Convolutions carry a bias only when no normalization layer follows them (``"weight"``,
``"none"``), because every other kind ends in its own learned shift.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from slimtorch.errors import ConfigError

NORMS: tuple[str, ...] = ("batch", "layer", "instance", "group", "weight", "none")
ACTS: tuple[str, ...] = ("sigmoid", "relu", "leakyrelu", "relu6", "silu", "swish", "hardswish")

MAX_GROUPS = 32  # Wu & He, "Group Normalization" (2018): G = 32 by default
MIN_CHANNELS_PER_GROUP = 2  # below this a group is one channel, i.e. instance norm
LEAKY_RELU_SLOPE = 0.01  # PyTorch's default negative slope

_NORMS_WITHOUT_LAYER = ("weight", "none")


def check_norm(kind: str) -> str:
    """Return ``kind`` if it is a known normalization, else raise ConfigError."""
    if kind not in NORMS:
        raise ConfigError(f"unknown norm {kind!r}; expected one of {', '.join(NORMS)}")
    return kind


def check_act(kind: str) -> str:
    """Return ``kind`` if it is a known activation, else raise ConfigError."""
    if kind not in ACTS:
        raise ConfigError(f"unknown act {kind!r}; expected one of {', '.join(ACTS)}")
    return kind


def group_count(channels: int) -> int:
    """Number of GroupNorm groups for ``channels``: the largest divisor of ``channels`` that
    is at most ``MAX_GROUPS`` and leaves at least ``MIN_CHANNELS_PER_GROUP`` channels per group
    (1 when no such divisor exists)."""
    limit = min(MAX_GROUPS, channels // MIN_CHANNELS_PER_GROUP)
    return max([g for g in range(1, limit + 1) if channels % g == 0], default=1)


def has_norm_layer(kind: str) -> bool:
    """True when ``kind`` inserts a normalization layer (so a preceding conv needs no bias)."""
    return check_norm(kind) not in _NORMS_WITHOUT_LAYER


def make_norm(kind: str, channels: int, *, spatial: bool = True) -> nn.Module:
    """Build the normalization layer ``kind`` for ``channels`` features.

    Args:
        kind: one of ``NORMS``.
        channels: number of channels (feature maps) or features (vectors).
        spatial: True for ``[N, C, H, W]`` feature maps, False for ``[N, C]`` vectors.

    Returns:
        The layer; ``nn.Identity()`` for ``"weight"`` and ``"none"``.

    Example:
        >>> make_norm("group", 64)
        GroupNorm(32, 64, eps=1e-05, affine=True, bias=True)
    """
    check_norm(kind)
    if kind in _NORMS_WITHOUT_LAYER:
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels) if spatial else nn.LayerNorm(channels)
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if not spatial:
        raise ConfigError("norm 'instance' needs feature maps; a fully connected layer has none")
    return nn.InstanceNorm2d(channels, affine=True)


def make_act(kind: str) -> nn.Module:
    """Build the activation ``kind`` (``"swish"`` is an alias of ``"silu"``).

    Args:
        kind: one of ``ACTS``.

    Returns:
        A fresh activation module (never in-place, so forward hooks see clean inputs).

    Example:
        >>> make_act("relu6")
        ReLU6()
    """
    check_act(kind)
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "relu":
        return nn.ReLU()
    if kind == "leakyrelu":
        return nn.LeakyReLU(LEAKY_RELU_SLOPE)
    if kind == "relu6":
        return nn.ReLU6()
    if kind == "hardswish":
        return nn.Hardswish()
    return nn.SiLU()


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    groups: int = 1,
    norm: str = "batch",
    act: str | None = "relu",
) -> nn.Sequential:
    """Conv2d ("same" padding for odd kernels), normalization, activation.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: convolution stride.
        groups: convolution groups (``in_channels`` for a depthwise conv).
        norm: one of ``NORMS``.
        act: one of ``ACTS``, or None for no activation (a linear bottleneck).

    Returns:
        ``nn.Sequential(conv, norm, act)``; always three children (``nn.Identity`` where a
        piece is absent) so parameter names do not depend on the choice.

    Example:
        >>> conv_norm_act(3, 16, 3, norm="batch", act="relu")[0]
        Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
    """
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        groups=groups,
        bias=not has_norm_layer(norm),
    )
    activation = nn.Identity() if act is None else make_act(act)
    return nn.Sequential(conv, make_norm(norm, out_channels), activation)


def linear_norm_act(in_features: int, out_features: int, *, norm: str, act: str) -> nn.Sequential:
    """Linear, normalization over features, activation: a hidden layer of an MLP.

    Args:
        in_features: input features.
        out_features: output features.
        norm: one of ``NORMS`` except ``"instance"``.
        act: one of ``ACTS``.

    Returns:
        ``nn.Sequential(linear, norm, act)``.

    Example:
        >>> linear_norm_act(784, 300, norm="none", act="relu")[0]
        Linear(in_features=784, out_features=300, bias=True)
    """
    linear = nn.Linear(in_features, out_features, bias=not has_norm_layer(norm))
    return nn.Sequential(linear, make_norm(norm, out_features, spatial=False), make_act(act))


def apply_weight_norm(model: nn.Module) -> nn.Module:
    """Reparametrize every Conv2d and Linear weight as ``g * v / ||v||`` (Salimans & Kingma).

    Uses ``torch.nn.utils.parametrizations.weight_norm`` with ``dim=0`` (one gain per output
    channel); the state_dict then holds ``parametrizations.weight.original0`` (g) and
    ``original1`` (v) instead of ``weight``.

    Args:
        model: the model to change in place.

    Returns:
        The same ``model``.

    Example:
        >>> m = apply_weight_norm(nn.Sequential(nn.Linear(4, 2)))
        >>> sorted(m.state_dict())[0]
        '0.bias'
    """
    for module in list(model.modules()):
        if isinstance(module, nn.Conv2d | nn.Linear):
            weight_norm(module, name="weight", dim=0)
    return model


def finish(model: nn.Module, norm: str) -> nn.Module:
    """Apply the model-wide part of ``norm`` (weight normalization) to a freshly built model."""
    return apply_weight_norm(model) if norm == "weight" else model
