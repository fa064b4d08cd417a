"""The small reference zoo: LeNet-300-100, LeNet-5, VGG-, MobileNetV2- and ResNet-style nets.

Every model takes ``num_classes``, ``in_channels``, ``image_size``, ``norm`` and ``act`` and
maps ``[N, in_channels, image_size, image_size]`` to ``[N, num_classes]`` logits.

Example:
    >>> from slimtorch.models import create_model
    >>> model = create_model("resnet", num_classes=10, image_size=8, norm="group", act="silu")
"""

from __future__ import annotations

from slimtorch.models.layers import ACTS, NORMS, apply_weight_norm, make_act, make_norm
from slimtorch.models.registry import (
    MODEL_NAMES,
    ModelSpec,
    build_model,
    create_model,
    default_norm_act,
    make_spec,
)

__all__ = [
    "ACTS",
    "MODEL_NAMES",
    "NORMS",
    "ModelSpec",
    "apply_weight_norm",
    "build_model",
    "create_model",
    "default_norm_act",
    "make_act",
    "make_norm",
    "make_spec",
]
