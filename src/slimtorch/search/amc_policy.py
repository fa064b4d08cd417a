"""The end of an AMC episode: prune the model to the episode's policy and score it.

:func:`apply_policy` keeps, in every prunable channel group, the channels an importance
criterion ranks highest (:mod:`slimtorch.prune.channel_importance`: ``l1``, ``l2``, ``bn``)
and removes the others with channel surgery; optionally it first refits the layers that read
the pruned channels by least squares (:func:`reconstruct`, with the regression solver of
:mod:`slimtorch.prune.regression`), as AMC's reference implementation does.
:func:`evaluate_episode` is the parallel part of the search: one finished episode's pruned
model scored on the validation subset *without fine-tuning*, plus its MACs and FLOPs counted by
slimtorch's tracer. It is a module-level function of one picklable :class:`EpisodeTask`, so
:class:`~slimtorch.search.parallel.Workers` can run it anywhere with the same result.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slimtorch.core.trace import trace_model
from slimtorch.errors import ConfigError
from slimtorch.prune.channel_importance import IMPORTANCE, Importance
from slimtorch.prune.graph import ChannelGraph, trace_channels
from slimtorch.prune.obs import Batches, layer_hessians
from slimtorch.prune.regression import least_squares_weights
from slimtorch.prune.surgery import prune_channels
from slimtorch.quantize.trained import recalibrate_bn
from slimtorch.train import evaluate


def top_channels(scores: Tensor, k: int) -> Tensor:
    """Indices (ascending) of the ``k`` highest scores, ties to the lower index.

    Example:
        >>> top_channels(torch.tensor([1.0, 3.0, 3.0, 2.0]), 2).tolist()
        [1, 2]
    """
    return torch.sort(scores, descending=True, stable=True).indices[:k].sort().values


def policy_keep(
    model: nn.Module, graph: ChannelGraph, counts: Mapping[str, int], importance: Importance
) -> dict[str, Tensor]:
    """Group name -> kept channel indices: the ``counts[name]`` most important channels of
    every group the policy prunes (importance scored on ``model``)."""
    keep = {}
    for g in graph.prunable():
        k = int(counts[g.name])
        if k < g.size:
            keep[g.name] = top_channels(importance(model, g), k)
    return keep


def consumer_layers(model: nn.Module, graph: ChannelGraph) -> list[str]:
    """Linear and ungrouped Conv2d layers that read a prunable group (their weights can be
    refit by least squares, :func:`reconstruct`)."""
    names = {s.module for g in graph.prunable() for s in g.slots if s.role == "in"}
    return [n for n, m in model.named_modules() if n in names and (isinstance(m, nn.Linear) or (
        isinstance(m, nn.Conv2d) and m.groups == 1))]  # fmt: skip


def input_grams(
    model: nn.Module, graph: ChannelGraph, batches: Batches, limit: int | None = None
) -> dict[str, Tensor]:
    """The input Gram ``X X^T`` (float64, im2col columns for a conv) of every consumer layer
    on the unpruned model, for :func:`reconstruct`."""
    names = consumer_layers(model, graph)
    return {n: acc.gram() for n, acc in layer_hessians(model, names, batches, limit).items()}


def reconstruct(
    model: nn.Module, graph: ChannelGraph, keep: Mapping[str, Tensor], grams: Mapping[str, Tensor]
) -> nn.Module:
    """A copy of ``model`` whose consumer layers are refit by least squares to their unpruned
    outputs from the kept input channels only (He et al. 2017's reconstruction with the
    unpruned model's inputs, as AMC's reference does by default): ``W' = argmin ||W X -
    W'_S X_S||``, zeros on the dropped inputs, which surgery then removes."""
    new = copy.deepcopy(model)
    masks: dict[str, Tensor] = {}
    for name, kept in keep.items():
        group = graph.group(name)
        dropped = torch.ones(group.size, dtype=torch.bool)
        dropped[kept] = False
        for slot in group.slots:
            if slot.role == "in" and slot.module in grams:
                layer = new.get_submodule(slot.module)
                mask = masks.setdefault(slot.module, torch.ones(layer.weight.shape[1], dtype=bool))
                mask[slot.indices(dropped.nonzero().reshape(-1))] = False
    for name, mask in masks.items():
        layer = new.get_submodule(name)
        w = layer.weight.detach()  # [out, C, *kernel]
        cols = mask.repeat_interleave(w[0].numel() // w.shape[1])  # [C * k]
        fitted = least_squares_weights(w.reshape(w.shape[0], -1), grams[name], cols)
        with torch.no_grad():
            layer.weight.copy_(fitted.reshape(w.shape))
    return new


def apply_policy(
    model: nn.Module,
    example_input: Tensor | tuple[Tensor, ...],
    counts: Mapping[str, int],
    *,
    importance: Importance | str = "l1",
    grams: Mapping[str, Tensor] | None = None,
    graph: ChannelGraph | None = None,
) -> nn.Module:
    """Prune ``model`` to a policy with channel surgery (``model`` is not changed).

    Args:
        model: the unpruned model.
        example_input: an input to trace shapes with.
        counts: prunable group name -> channels to keep.
        importance: channel criterion: ``"l1"``, ``"l2"``, ``"bn"`` or a function
            ``(model, group) -> scores`` (:mod:`slimtorch.prune.channel_importance`).
        grams: consumer layer -> input Gram (:func:`input_grams`): refit the consumers by
            least squares (:func:`reconstruct`) before removing the channels.
        graph: ``trace_channels(model, example_input)`` when already computed.

    Returns:
        The smaller dense model (same module names).

    Example:
        >>> m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> apply_policy(m, torch.zeros(1, 3), {"0": 2})[2].in_features
        2
    """
    fn = IMPORTANCE.get(importance) if isinstance(importance, str) else importance
    if fn is None:
        raise ConfigError(f"unknown importance {importance!r}; expected one of {list(IMPORTANCE)}")
    graph = graph or trace_channels(model, example_input)
    keep = policy_keep(model, graph, counts, fn)
    source = reconstruct(model, graph, keep, grams) if grams and keep else model
    return prune_channels(source, example_input, keep=keep, graph=graph)


@dataclass(frozen=True)
class EpisodeTask:
    """Everything one episode's evaluation needs (picklable; no seed: it is deterministic)."""

    model: nn.Module
    example_input: Tensor | tuple[Tensor, ...]
    graph: ChannelGraph
    counts: dict[str, int]
    importance: str
    grams: dict[str, Tensor] | None
    val_x: Tensor
    val_y: Tensor
    batch_size: int
    bn_x: Tensor | None = None  # training samples re-estimating BatchNorm before scoring


@dataclass(frozen=True)
class EpisodeScore:
    """An episode's pruned model: validation-subset accuracy and loss, MACs, FLOPs."""

    accuracy: float
    loss: float
    macs: int
    flops: int


def score_model(
    model: nn.Module,
    example_input: Tensor | tuple[Tensor, ...],
    val_x: Tensor,
    val_y: Tensor,
    batch_size: int,
) -> EpisodeScore:
    """Accuracy and loss on ``(val_x, val_y)`` and the tracer's MACs and FLOPs of ``model``."""
    batches = [(val_x[i : i + batch_size], val_y[i : i + batch_size])
               for i in range(0, len(val_x), batch_size)]  # fmt: skip
    result = evaluate(model, batches)
    trace = trace_model(model, example_input)
    return EpisodeScore(result.accuracy, result.loss, trace.total_macs, trace.total_flops)


def evaluate_episode(task: EpisodeTask) -> EpisodeScore:
    """Prune ``task.model`` to the episode's counts and score it without fine-tuning."""
    t = task
    pruned = apply_policy(
        t.model, t.example_input, t.counts, importance=t.importance, grams=t.grams, graph=t.graph
    )
    if t.bn_x is not None:
        recalibrate_bn(pruned, [(x, None) for x in t.bn_x.split(t.batch_size)])
    return score_model(pruned, t.example_input, t.val_x, t.val_y, t.batch_size)
