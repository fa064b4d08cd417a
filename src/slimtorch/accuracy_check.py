"""Flag a compression step that destroys accuracy, and say what to change.

A step is flagged when it costs more than :data:`MAX_DROP_POINTS` points of top-1 accuracy, or
when it leaves the model near chance (at most :data:`NEAR_CHANCE_FACTOR` times
``1 / num_classes``) with at most :data:`CHANCE_FALL_RATIO` of its accuracy (with many classes
chance is tiny: 3% -> 0.1% of 1000 classes is under 5 points but the model is gone). Each flag
is an
:class:`AccuracyWarning`: data for the JSON reports (``to_dict``) and one line for the tables
(``message``), with suggestions that name the option (``--finetune-epochs 5``) or recipe field
(``finetune_epochs = 5``) to change. ``slimtorch compress``, ``prune`` and ``quantize`` use it
(the recipe stages' suggestions are in :mod:`slimtorch.compress.accuracy`).

Example:
    >>> w = accuracy_warning("prune", 0.996, 0.108, num_classes=10,
    ...                      suggestions=("more epochs",))
    >>> print(w.message())
    prune: test accuracy 0.9960 -> 0.1080 (-88.8 points, near chance 0.1000); try: more epochs
    >>> accuracy_warning("prune", 0.996, 0.990, num_classes=10) is None
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slimtorch.core.granularity import PerTensor

MAX_DROP_POINTS = 5.0  # a step losing more than 5 points of top-1 accuracy is flagged
NEAR_CHANCE_FACTOR = 2.0  # at most 2x chance (1/num_classes) counts as near chance
CHANCE_FALL_RATIO = 0.5  # ... and a fall there is flagged when it loses half the accuracy
SUGGESTED_FINETUNE_EPOCHS = 5
SUGGESTED_ITERATIONS = 4
SPARSITY_STEP = 0.2  # suggest this much less sparsity (absolute)
MAX_SUGGESTED_BITS = 8


@dataclass(frozen=True)
class AccuracyWarning:
    """A step that destroyed accuracy: what it did and what to try instead.

    Attributes:
        stage: the step (``prune``, ``2 kmeans``, ...).
        before: test accuracy before the step.
        after: test accuracy after it.
        num_classes: classes of the task (chance is ``1 / num_classes``), or None.
        suggestions: what to change, naming options or recipe fields.
    """

    stage: str
    before: float
    after: float
    num_classes: int | None = None
    suggestions: tuple[str, ...] = ()

    @property
    def drop_points(self) -> float:
        """Accuracy lost, in percentage points."""
        return 100.0 * (self.before - self.after)

    @property
    def chance(self) -> float | None:
        """Chance accuracy ``1 / num_classes``."""
        return 1.0 / self.num_classes if self.num_classes else None

    @property
    def near_chance(self) -> bool:
        """Whether the step left the model near chance."""
        return _near_chance(self.after, self.num_classes)

    def message(self) -> str:
        """One line: the drop, near chance or not, and the suggestions."""
        text = (
            f"{self.stage}: test accuracy {self.before:.4f} -> {self.after:.4f} "
            f"({-self.drop_points:+.1f} points"
        )
        if self.near_chance:
            text += f", near chance {self.chance:.4f}"
        text += ")"
        if self.suggestions:
            text += "; try: " + "; ".join(self.suggestions)
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (numbers, the flags, the message and the suggestions)."""
        return {
            "stage": self.stage,
            "before": self.before,
            "after": self.after,
            "drop_points": round(self.drop_points, 2),
            "chance": self.chance,
            "near_chance": self.near_chance,
            "threshold_points": MAX_DROP_POINTS,
            "suggestions": list(self.suggestions),
            "message": self.message(),
        }


def _near_chance(accuracy: float, num_classes: int | None) -> bool:
    return bool(num_classes) and accuracy <= NEAR_CHANCE_FACTOR / num_classes  # type: ignore[operator]


def destroyed(before: float, after: float, num_classes: int | None = None) -> bool:
    """Whether going from ``before`` to ``after`` accuracy is flagged.

    Example:
        >>> destroyed(0.95, 0.92), destroyed(0.95, 0.80), destroyed(0.03, 0.001, num_classes=1000)
        (False, True, True)
    """
    if 100.0 * (before - after) > MAX_DROP_POINTS:
        return True
    return _near_chance(after, num_classes) and after <= CHANCE_FALL_RATIO * before


def accuracy_warning(
    stage: str,
    before: float | None,
    after: float | None,
    num_classes: int | None = None,
    suggestions: Sequence[str] = (),
) -> AccuracyWarning | None:
    """An :class:`AccuracyWarning` when the step is :func:`destroyed`, else None.

    Args:
        stage: the step's name.
        before: accuracy before (None: nothing to compare, no warning).
        after: accuracy after (None: no warning).
        num_classes: classes of the task, for the near-chance test.
        suggestions: what to change.
    """
    if before is None or after is None or not destroyed(before, after, num_classes):
        return None
    return AccuracyWarning(stage, before, after, num_classes, tuple(suggestions))


# --- suggestions for the CLI verbs --------------------------------------------------------------
def prune_suggestions(config: Any, sensitivity: bool = False, surgery: bool = False) -> list[str]:
    """What to change in ``slimtorch prune`` (a ``PruneConfig`` or ``SurgeryConfig``)."""
    tips = []
    if getattr(config, "finetune_epochs", 0) == 0:
        tips.append(
            f"fine-tune with the masks kept (--finetune-epochs {SUGGESTED_FINETUNE_EPOCHS})"
        )
    if not surgery and getattr(config, "schedule", "") == "oneshot":
        tips.append(
            f"prune in steps (--schedule iterative --iterations {SUGGESTED_ITERATIONS} "
            "with fine-tuning, or --schedule gradual)"
        )
    amount = getattr(config, "ratio", None) if surgery else getattr(config, "sparsity", None)
    if amount:
        lower = max(0.0, round(amount - SPARSITY_STEP, 2))
        tips.append(f"a lower --sparsity (now {amount:g}; try {lower:g})")
    if not surgery and not sensitivity:
        tips.append("--sensitivity: per-layer ratios that spare the sensitive layers")
    return tips


def quantize_suggestions(args: Any, config: Any) -> list[str]:
    """What to change in ``slimtorch quantize`` (its parsed options and the ``PTQConfig`` or
    ``KMeansConfig`` they built)."""
    tips = []
    bits = getattr(config, "weight_bits", getattr(config, "bits", MAX_SUGGESTED_BITS))
    if bits < MAX_SUGGESTED_BITS:
        tips.append(f"more bits (--bits {min(MAX_SUGGESTED_BITS, bits + 2)})")
    if args.method == "kmeans":
        if not args.finetune_epochs:
            tips.append("fine-tune the centroids (--finetune-epochs 3)")
        if not args.recalibrate_bn:
            tips.append("--recalibrate-bn")
        return tips
    if isinstance(getattr(config, "weight_granularity", None), PerTensor):
        tips.append("--granularity channel")
    if not args.qat:
        tips.append("quantization-aware training (--qat)")
    if args.activation_bits and args.calibrate == "minmax":
        tips.append("--calibrate percentile (or mse) for the activations")
    if not args.exclude:
        tips.append("keep the first and last layers in float (--exclude NAME)")
    return tips
