"""Which stages of a compression run destroyed accuracy, and what to change in the recipe.

:func:`pipeline_warnings` flags a stage by :func:`slimtorch.accuracy_check.destroyed` against
the record before it, unless a later stage won the accuracy back; :func:`stage_suggestions`
names the recipe fields to change (``finetune_epochs = 5``, ``bits = 6``, ...).

Example:
    >>> from slimtorch.compress.configs import CentroidConfig
    >>> stage_suggestions("finetune_centroids", CentroidConfig(lr=0.01))
    ['a lower lr (now 0.01)', 'distill = true']
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from slimtorch.accuracy_check import (
    MAX_SUGGESTED_BITS,
    SUGGESTED_FINETUNE_EPOCHS,
    SUGGESTED_ITERATIONS,
    AccuracyWarning,
    accuracy_warning,
    destroyed,
)


def stage_suggestions(kind: str, config: Any, later: Sequence[str] = ()) -> list[str]:
    """What to change in a recipe stage of ``kind`` (``later``: the kinds after it)."""
    if kind == "prune":
        return _prune_stage_tips(config, later)
    if kind in ("kmeans", "linear", "bias_kmeans"):
        bits = getattr(config, "bits", MAX_SUGGESTED_BITS)
        tips = [f"more bits (bits = {min(MAX_SUGGESTED_BITS, bits + 2)})"] if bits < 8 else []
        if kind == "kmeans" and "finetune_centroids" not in later:
            tips.append("a finetune_centroids stage after it")
        if kind == "linear" and getattr(config, "granularity", "") == "tensor":
            tips.append('granularity = "channel"')
        return tips
    if kind in ("finetune", "finetune_centroids"):
        return [f"a lower lr (now {config.lr:g})", "distill = true"]
    if kind == "encode" and getattr(config, "codebook_dtype", "") != "float32":
        return ['codebook_dtype = "float32"']
    return []


def _prune_stage_tips(config: Any, later: Sequence[str]) -> list[str]:
    tips = []
    if config.finetune_epochs == 0 and "finetune" not in later:
        tips.append(
            f"fine-tune after pruning (finetune_epochs = {SUGGESTED_FINETUNE_EPOCHS}, "
            "or a finetune stage after it)"
        )
    if config.schedule == "oneshot":
        tips.append(
            f'prune in steps (schedule = "iterative", iterations = {SUGGESTED_ITERATIONS}, '
            "with finetune_epochs)"
        )
    if config.sparsity:
        tips.append(f"a lower sparsity (now {config.sparsity:g})")
    if config.layers:
        tips.append("lower per-layer sparsities in layers, sparing the first and last layers")
    return tips


def pipeline_warnings(
    records: Sequence[Any], stages: Sequence[Any], num_classes: int | None = None
) -> list[AccuracyWarning]:
    """Warnings for the stages of a compression run that destroyed accuracy.

    A stage is flagged when it is :func:`destroyed` relative to the record before it, unless a
    later stage won the accuracy back (the final accuracy is not destroyed relative to the
    baseline): a one-shot prune followed by fine-tuning is how Deep Compression works. When
    no single stage is flagged but the run as a whole is, one warning names the whole run.

    Args:
        records: ``StageRecord`` objects, the baseline first (``index`` -1), then one per stage.
        stages: the recipe's stages (``kind`` and ``config``), in order.
        num_classes: classes of the task.

    Returns:
        The warnings, in stage order.
    """
    base, final = records[0].test_accuracy, records[-1].test_accuracy
    if not destroyed(base, final, num_classes):
        return []
    kinds = [s.kind for s in stages]
    out = []
    for prev, rec in itertools.pairwise(records):
        stage = stages[rec.index]
        tips = stage_suggestions(stage.kind, stage.config, kinds[rec.index + 1 :])
        label = f"{rec.index} {rec.stage}"
        w = accuracy_warning(label, prev.test_accuracy, rec.test_accuracy, num_classes, tips)
        if w is not None:
            out.append(w)
    if not out:
        tips = ["fewer or gentler stages", "longer fine-tuning (epochs)"]
        out.append(AccuracyWarning("all stages", base, final, num_classes, tuple(tips)))
    return out
