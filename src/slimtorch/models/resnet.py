"""ResNet-style network (He et al., 2016) built from basic blocks.

Stage ``i`` has ``blocks[i]`` basic blocks with ``width * 2**i`` channels; every stage after
the first halves the resolution in its first block. A block whose input and output shapes
differ gets a 1x1 strided conv + norm projection shortcut (option B of the paper). Inputs of
64 px or more get the ImageNet stem (7x7/2 conv, 3x3/2 max pool); smaller inputs a 3x3 stride-1
conv. ``resnet(num_classes=1000, in_channels=3, image_size=224, blocks=(2, 2, 2, 2),
width=64)`` is ResNet-18 with torchvision's parameter names (11,689,512 parameters).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from slimtorch.errors import ConfigError
from slimtorch.models.layers import finish, has_norm_layer, make_act, make_norm

IMAGENET_STEM_MIN_SIZE = 64  # inputs this large get the 7x7/2 conv + 3x3/2 max pool stem
IMAGENET_STEM_KERNEL = 7
DEFAULT_BLOCKS = (1, 1, 1)
DEFAULT_WIDTH = 16


def _conv(c_in: int, c_out: int, kernel: int, stride: int, norm: str) -> nn.Conv2d:
    """A square conv with 'same' padding and a bias only when no norm layer follows."""
    return nn.Conv2d(
        c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=not has_norm_layer(norm)
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-norm layers with an identity or 1x1 projection shortcut.

    Children keep torchvision's names (``conv1, bn1, conv2, bn2, downsample``); the ``bn*``
    layers hold whichever normalization ``norm`` selects.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, act: str):
        super().__init__()
        self.conv1 = _conv(c_in, c_out, 3, stride, norm)
        self.bn1 = make_norm(norm, c_out)
        self.act1 = make_act(act)
        self.conv2 = _conv(c_out, c_out, 3, 1, norm)
        self.bn2 = make_norm(norm, c_out)
        self.act2 = make_act(act)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                _conv(c_in, c_out, 1, stride, norm), make_norm(norm, c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)  # [N, c_out, H', W']
        y = self.act1(self.bn1(self.conv1(x)))  # [N, c_out, H', W']
        y = self.bn2(self.conv2(y))  # [N, c_out, H', W']
        return self.act2(y + shortcut)


def _stem(in_channels: int, width: int, image_size: int, norm: str, act: str) -> list:
    """``(name, module)`` pairs of the stem: ImageNet style for large inputs, else 3x3/1."""
    large = image_size >= IMAGENET_STEM_MIN_SIZE
    kernel, stride = (IMAGENET_STEM_KERNEL, 2) if large else (3, 1)
    pairs = [
        ("conv1", _conv(in_channels, width, kernel, stride, norm)),
        ("bn1", make_norm(norm, width)),
        ("act", make_act(act)),
    ]
    if large:
        pairs.append(("maxpool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))
    return pairs


def _stage(c_in: int, c_out: int, n: int, stride: int, norm: str, act: str) -> nn.Sequential:
    """``n`` basic blocks; only the first may change the stride or the width."""
    blocks = [BasicBlock(c_in, c_out, stride, norm, act)]
    blocks += [BasicBlock(c_out, c_out, 1, norm, act) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


def resnet(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 8,
    norm: str = "batch",
    act: str = "relu",
    blocks: Sequence[int] = DEFAULT_BLOCKS,
    width: int = DEFAULT_WIDTH,
) -> nn.Sequential:
    """ResNet-style network of basic blocks.

    Args:
        num_classes: output classes.
        in_channels: input channels.
        image_size: input size; >= 64 selects the 7x7/2 + max-pool stem.
        norm: normalization after every conv (including projection shortcuts).
        act: activation after the stem and inside and after every block.
        blocks: blocks per stage; ``(2, 2, 2, 2)`` is ResNet-18, ``(3, 4, 6, 3)`` ResNet-34.
        width: channels of the stem and first stage; stage ``i`` has ``width * 2**i``.

    Returns:
        ``nn.Sequential`` named ``conv1, bn1, act, [maxpool], layer1 .. layerK, avgpool,
        flatten, fc``.

    Example:
        >>> m = resnet(
        ...     num_classes=1000, in_channels=3, image_size=224, blocks=(2, 2, 2, 2), width=64
        ... )
        >>> sum(p.numel() for p in m.parameters())
        11689512
    """
    blocks = tuple(int(b) for b in blocks)
    if not blocks or min(blocks) < 1 or width < 1:
        raise ConfigError(
            f"resnet needs blocks >= 1 per stage and width >= 1, got {blocks}, {width}"
        )
    layers = _stem(in_channels, width, image_size, norm, act)
    c_in = width
    for i, n in enumerate(blocks):
        c_out = width * 2**i
        layers.append((f"layer{i + 1}", _stage(c_in, c_out, n, 1 if i == 0 else 2, norm, act)))
        c_in = c_out
    layers += [("avgpool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
    layers.append(("fc", nn.Linear(c_in, num_classes)))
    return finish(nn.Sequential(OrderedDict(layers)), norm)
