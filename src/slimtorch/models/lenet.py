"""LeNet-300-100 (an MLP) and LeNet-5 (a small CNN), sized for the input they get.

LeNet-300-100 is the fully connected network of LeCun et al. (1998) that Han et al. (2015)
prune; on 28x28 MNIST it has 266,610 parameters. LeNet-5 follows the 32x32 design of the same
paper with max pooling and a modern activation: on 28x28 input the first conv pads by 2 (as
LeCun padded MNIST to 32x32), giving the classic 16x5x5 -> 120 -> 84 -> classes head.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from itertools import pairwise

from torch import nn

from slimtorch.errors import ConfigError
from slimtorch.models.layers import conv_norm_act, finish, linear_norm_act

LENET300_HIDDEN = (300, 100)  # LeCun et al. 1998, "LeNet-300-100"
LENET5_CHANNELS = (6, 16)  # C1 and C3 feature maps
LENET5_HIDDEN = (120, 84)  # C5 and F6 units
LENET5_KERNEL = 5
LENET5_DESIGN_SIZE = 32  # LeNet-5 was designed for 32x32 input
LENET5_PAD = 2  # "same" padding for a 5x5 kernel


def lenet300(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 8,
    norm: str = "none",
    act: str = "relu",
    hidden: Sequence[int] = LENET300_HIDDEN,
) -> nn.Sequential:
    """LeNet-300-100: flatten, then fully connected hidden layers, then the classifier.

    Args:
        num_classes: output classes.
        in_channels: input channels.
        image_size: input height and width.
        norm: normalization after each hidden linear layer (``"instance"`` is refused: a
            vector has no spatial extent).
        act: activation after each hidden layer.
        hidden: hidden layer widths.

    Returns:
        ``nn.Sequential`` named ``flatten, fc1 .. fcK, classifier``; input ``[N, C, H, W]``,
        output ``[N, num_classes]``.

    Example:
        >>> sum(p.numel() for p in lenet300(image_size=28).parameters())
        266610
    """
    widths = [in_channels * image_size * image_size, *hidden]
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    for i, (w_in, w_out) in enumerate(pairwise(widths)):
        layers.append((f"fc{i + 1}", linear_norm_act(w_in, w_out, norm=norm, act=act)))
    layers.append(("classifier", nn.Linear(widths[-1], num_classes)))
    return finish(nn.Sequential(OrderedDict(layers)), norm)


def _lenet5_padding(size: int, design_size: int) -> int:
    """Padding of a 5x5 conv: none when the input is at least the classic size, else 'same'."""
    return 0 if size >= design_size else LENET5_PAD


def _lenet5_geometry(image_size: int) -> tuple[int, int, int]:
    """Paddings of the two convs and the side of the final feature map."""
    pad1 = _lenet5_padding(image_size, LENET5_DESIGN_SIZE)
    size = (image_size + 2 * pad1 - LENET5_KERNEL + 1) // 2  # C1 then S2
    pad2 = _lenet5_padding(size, 2 * LENET5_KERNEL)  # classic C3 sees 14x14 -> 10x10
    size = (size + 2 * pad2 - LENET5_KERNEL + 1) // 2  # C3 then S4
    if size < 1:
        raise ConfigError(f"lenet5 needs image_size >= 4, got {image_size}")
    return pad1, pad2, size


def _lenet5_conv(c_in: int, c_out: int, padding: int, norm: str, act: str) -> nn.Sequential:
    """A 5x5 conv with explicit padding, normalization, activation and 2x2 max pooling."""
    block = conv_norm_act(c_in, c_out, LENET5_KERNEL, norm=norm, act=act)
    block[0].padding = (padding, padding)
    block.append(nn.MaxPool2d(2))
    return block


def lenet5(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 8,
    norm: str = "none",
    act: str = "relu",
) -> nn.Sequential:
    """LeNet-5: two 5x5 conv + 2x2 max-pool stages, then 120 -> 84 -> classes.

    Each 5x5 conv uses no padding when its input is at least the classic size (32 for C1,
    10 for C3) and padding 2 otherwise, so 28x28 and 32x32 input both end in 16x5x5 maps
    and 8x8 input ends in 16x2x2.

    Args:
        num_classes: output classes.
        in_channels: input channels.
        image_size: input height and width (at least 4).
        norm: normalization after each conv (the fully connected head has none, except that
            ``"weight"`` reparametrizes every layer).
        act: activation after each conv and hidden linear layer.

    Returns:
        ``nn.Sequential`` named ``conv1, conv2, flatten, fc1, fc2, classifier``.

    Example:
        >>> sum(p.numel() for p in lenet5(image_size=28).parameters())
        61706
    """
    pad1, pad2, side = _lenet5_geometry(image_size)
    c1, c2 = LENET5_CHANNELS
    h1, h2 = LENET5_HIDDEN
    head_norm = "weight" if norm == "weight" else "none"
    layers = OrderedDict(
        conv1=_lenet5_conv(in_channels, c1, pad1, norm, act),
        conv2=_lenet5_conv(c1, c2, pad2, norm, act),
        flatten=nn.Flatten(),
        fc1=linear_norm_act(c2 * side * side, h1, norm=head_norm, act=act),
        fc2=linear_norm_act(h1, h2, norm=head_norm, act=act),
        classifier=nn.Linear(h2, num_classes),
    )
    return finish(nn.Sequential(layers), norm)
