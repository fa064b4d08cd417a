"""VGG-style CNN: stacks of 3x3 conv-norm-act layers and 2x2 max pools from a config list.

A config is a list like ``[16, 16, "M", 32, 32, "M"]``: an int is a 3x3 conv with that many
output channels, ``"M"`` a 2x2 max pool (Simonyan & Zisserman, 2015). After the features a
global average pool feeds optional hidden linear layers and the classifier, as in the CIFAR
variants used for channel pruning (Liu et al., "Network Slimming", 2017).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from itertools import pairwise

from torch import nn

from slimtorch.errors import ConfigError
from slimtorch.models.layers import conv_norm_act, finish, linear_norm_act

POOL = "M"
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "tiny": (16, 16, POOL, 32, 32, POOL),
    "small": (32, 32, POOL, 64, 64, POOL, 128, 128, POOL),
    # Simonyan & Zisserman 2015, table 1, configurations A (11 layers) and D (16 layers).
    "vgg11": (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg16": (
        *(64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL),
        *(512, 512, 512, POOL, 512, 512, 512, POOL),
    ),
}
DEFAULT_CONFIG = "tiny"
VGG_KERNEL = 3


def resolve_config(cfg: str | Sequence[int | str], image_size: int) -> tuple[int | str, ...]:
    """Turn a config name or list into a validated tuple for ``image_size`` input.

    Args:
        cfg: a key of ``VGG_CONFIGS`` or a list of positive ints and ``"M"``.
        image_size: input height and width; each ``"M"`` halves it and it must stay >= 1.

    Returns:
        The config as a tuple.

    Example:
        >>> resolve_config([8, "M", 16], 8)
        (8, 'M', 16)
    """
    if isinstance(cfg, str):
        if cfg not in VGG_CONFIGS:
            raise ConfigError(
                f"unknown vgg config {cfg!r}; expected one of {', '.join(VGG_CONFIGS)}"
            )
        cfg = VGG_CONFIGS[cfg]
    items = tuple(cfg)
    bad = [x for x in items if x != POOL and not (isinstance(x, int) and x > 0)]
    if bad or not any(x != POOL for x in items):
        raise ConfigError(f"vgg config needs positive ints and 'M' with at least one conv: {items}")
    if image_size >> items.count(POOL) < 1:
        raise ConfigError(
            f"vgg config pools {items.count(POOL)} times; too many for {image_size}px"
        )
    return items


def _features(cfg: tuple[int | str, ...], in_channels: int, norm: str, act: str) -> nn.Sequential:
    """The conv/pool stack; returns ``nn.Sequential`` numbered like torchvision's VGG."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in cfg:
        if item == POOL:
            layers.append(nn.MaxPool2d(2))
        else:
            layers.append(conv_norm_act(channels, int(item), VGG_KERNEL, norm=norm, act=act))
            channels = int(item)
    return nn.Sequential(*layers)


def vgg(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 8,
    norm: str = "batch",
    act: str = "relu",
    cfg: str | Sequence[int | str] = DEFAULT_CONFIG,
    hidden: Sequence[int] = (),
) -> nn.Sequential:
    """VGG-style network: ``features`` from ``cfg``, global average pool, ``classifier``.

    Args:
        num_classes: output classes.
        in_channels: input channels.
        image_size: input height and width (bounds how many pools ``cfg`` may have).
        norm: normalization after each conv (hidden linear layers get none, except that
            ``"weight"`` reparametrizes every layer).
        act: activation after each conv and hidden linear layer.
        cfg: a key of ``VGG_CONFIGS`` (``"tiny"``, ``"small"``, ``"vgg11"``, ``"vgg16"``) or a
            list such as ``[16, "M", 32, "M"]``.
        hidden: widths of hidden linear layers between the pool and the classifier.

    Returns:
        ``nn.Sequential`` named ``features, pool, flatten, [fc1 ..], classifier``.

    Example:
        >>> import torch
        >>> vgg(cfg=[8, "M", 16, "M"])(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    items = resolve_config(cfg, image_size)
    widths = [next(int(x) for x in reversed(items) if x != POOL), *hidden]
    head_norm = "weight" if norm == "weight" else "none"
    layers: list[tuple[str, nn.Module]] = [
        ("features", _features(items, in_channels, norm, act)),
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
    ]
    for i, (w_in, w_out) in enumerate(pairwise(widths)):
        layers.append((f"fc{i + 1}", linear_norm_act(w_in, w_out, norm=head_norm, act=act)))
    layers.append(("classifier", nn.Linear(widths[-1], num_classes)))
    return finish(nn.Sequential(OrderedDict(layers)), norm)
