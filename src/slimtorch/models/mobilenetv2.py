"""MobileNetV2-style network (Sandler et al., 2018): inverted residuals, linear bottlenecks.

Each block expands ``c_in`` to ``t * c_in`` channels with a 1x1 conv, filters them with a 3x3
depthwise conv (stride ``s``), and projects back to ``c`` channels with a 1x1 conv that has no
activation (the linear bottleneck). The block adds its input when ``s == 1`` and
``c_in == c``. A settings table of rows ``(t, c, n, s)`` describes the body; the ``"imagenet"``
table with ``width_mult=1.0`` and ``image_size=224`` reproduces torchvision's
``mobilenet_v2`` (3,504,872 parameters, same state_dict names).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from slimtorch.errors import ConfigError
from slimtorch.models.layers import conv_norm_act, finish

CHANNEL_DIVISOR = 8  # channel counts are rounded to multiples of 8, as in the paper's code
STRIDED_STEM_MIN_SIZE = 64  # inputs this large get a stride-2 stem, smaller ones stride 1


@dataclass(frozen=True)
class MobileNetV2Settings:
    """A MobileNetV2 body: stem width, rows of ``(t, c, n, s)``, last 1x1 conv width.

    ``t`` is the expansion factor, ``c`` the output channels, ``n`` the number of blocks and
    ``s`` the stride of the first block of the row.
    """

    stem: int
    rows: tuple[tuple[int, int, int, int], ...]
    last: int


MOBILENETV2_SETTINGS: dict[str, MobileNetV2Settings] = {
    "small": MobileNetV2Settings(
        stem=16, rows=((1, 8, 1, 1), (6, 16, 2, 2), (6, 24, 2, 2), (6, 32, 1, 1)), last=128
    ),
    # Sandler et al. 2018, table 2.
    "imagenet": MobileNetV2Settings(
        stem=32,
        rows=(
            *((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2)),
            *((6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)),
        ),
        last=1280,
    ),
}


def make_divisible(value: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below 90% of it.

    Example:
        >>> make_divisible(32 * 0.35)
        16
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (3x3), project (1x1, linear); add the input when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int, norm: str, act: str):
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_norm_act(c_in, hidden, 1, norm=norm, act=act))
        layers.append(
            conv_norm_act(hidden, hidden, 3, stride=stride, groups=hidden, norm=norm, act=act)
        )
        project = conv_norm_act(hidden, c_out, 1, norm=norm, act=None)
        layers.extend([project[0], project[1]])  # torchvision naming: conv.K, conv.K+1
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # [N, c_out, H/stride, W/stride]
        return x + y if self.use_residual else y


def resolve_settings(settings: str | Sequence[Sequence[int]]) -> MobileNetV2Settings:
    """A settings name, or a list of ``(t, c, n, s)`` rows (stem 32, last 1280)."""
    if isinstance(settings, str):
        if settings not in MOBILENETV2_SETTINGS:
            names = ", ".join(MOBILENETV2_SETTINGS)
            raise ConfigError(f"unknown mobilenetv2 settings {settings!r}; expected one of {names}")
        return MOBILENETV2_SETTINGS[settings]
    rows = tuple(tuple(int(v) for v in row) for row in settings)
    if not rows or any(len(r) != 4 or min(r) < 1 for r in rows):
        raise ConfigError(f"mobilenetv2 settings need rows of 4 positive ints (t, c, n, s): {rows}")
    base = MOBILENETV2_SETTINGS["imagenet"]
    return MobileNetV2Settings(stem=base.stem, rows=rows, last=base.last)  # type: ignore[arg-type]


def _body(s: MobileNetV2Settings, stem: int, width: float, norm: str, act: str) -> list[nn.Module]:
    """The inverted residual blocks of every row; returns them in order."""
    blocks: list[nn.Module] = []
    c_in = stem
    for t, c, n, stride in s.rows:
        c_out = make_divisible(c * width)
        for i in range(n):
            blocks.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, t, norm, act))
            c_in = c_out
    return blocks


def mobilenetv2(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 8,
    norm: str = "batch",
    act: str = "relu6",
    settings: str | Sequence[Sequence[int]] = "small",
    width_mult: float = 1.0,
    dropout: float = 0.0,
) -> nn.Sequential:
    """MobileNetV2-style network: stem, inverted residual rows, 1x1 conv, pool, classifier.

    Args:
        num_classes: output classes.
        in_channels: input channels.
        image_size: input size; the stem has stride 2 when it is >= 64, else stride 1.
        norm: normalization after every conv.
        act: activation after every conv except the linear bottleneck projections.
        settings: ``"small"`` (default, for 8-32 px), ``"imagenet"`` (the paper's table 2), or
            a list of ``(t, c, n, s)`` rows.
        width_mult: multiplies every channel count (rounded to multiples of 8); the last
            conv is never made narrower than the table says.
        dropout: dropout probability before the classifier.

    Returns:
        ``nn.Sequential`` named ``features, pool, flatten, classifier`` (``classifier`` is
        ``Sequential(Dropout, Linear)``, as in torchvision).

    Example:
        >>> m = mobilenetv2(num_classes=1000, in_channels=3, image_size=224, settings="imagenet")
        >>> sum(p.numel() for p in m.parameters())
        3504872
    """
    if width_mult <= 0:
        raise ConfigError(f"mobilenetv2 width_mult must be > 0, got {width_mult}")
    s = resolve_settings(settings)
    stem = make_divisible(s.stem * width_mult)
    last = make_divisible(s.last * max(1.0, width_mult))
    stride = 2 if image_size >= STRIDED_STEM_MIN_SIZE else 1
    blocks = _body(s, stem, width_mult, norm, act)
    c_body = make_divisible(s.rows[-1][1] * width_mult)
    features = nn.Sequential(
        conv_norm_act(in_channels, stem, 3, stride=stride, norm=norm, act=act),
        *blocks,
        conv_norm_act(c_body, last, 1, norm=norm, act=act),
    )
    model = nn.Sequential()
    model.add_module("features", features)
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flatten", nn.Flatten())
    model.add_module("classifier", nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes)))
    return finish(model, norm)
