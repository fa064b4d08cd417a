"""Knowledge distillation: losses (soft targets, FitNets hints, attention transfer) and the step.

- :mod:`~slimtorch.distill.losses`: pure loss functions.
- :mod:`~slimtorch.distill.distill`: :class:`Distiller` for ``fit``'s hooks, :func:`distill`.
"""

from __future__ import annotations

from slimtorch.distill.distill import (
    DistillConfig,
    Distiller,
    compose_hooks,
    distill,
    snapshot_teacher,
)
from slimtorch.distill.losses import (
    AT_BETA,
    HintAdapter,
    attention_map,
    attention_transfer_loss,
    hint_loss,
    kd_loss,
    soft_target_loss,
)

__all__ = [
    "AT_BETA",
    "DistillConfig",
    "Distiller",
    "HintAdapter",
    "attention_map",
    "attention_transfer_loss",
    "compose_hooks",
    "distill",
    "hint_loss",
    "kd_loss",
    "snapshot_teacher",
    "soft_target_loss",
]
