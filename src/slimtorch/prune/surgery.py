"""Channel surgery: physically remove channels and return an ordinary, smaller dense model.

``prune_channels`` traces the coupled channel groups (:mod:`slimtorch.prune.graph`), decides
which channels of each group to keep (given indices, or a ratio and a channel-importance
function: by default the L1 norm of every producer's filter, summed over the group), and
replaces each affected Conv/Linear/BatchNorm/InstanceNorm with a smaller copy whose weights
are the kept slices. Module names and the model's class structure do not change, so the
result trains, profiles and exports like any other model.

Checkpoints: ``save_checkpoint`` stores a spec that ``build_model`` rebuilds. For a pruned
model, :func:`pruned_spec` records the original spec plus the new size of every resized
module; its name is this module's :func:`build_pruned` factory, which builds the original
architecture and resizes those modules, so ``load_checkpoint`` reloads a pruned model with no
special casing::

    small = prune_channels(model, x, ratio=0.5)
    save_checkpoint(out, small, pruned_spec(spec, small, x))
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _WeightNorm

from slimtorch.errors import ConfigError, ModelError
from slimtorch.models import ModelSpec, build_model, create_model
from slimtorch.prune.channel_importance import (
    IMPORTANCE,
    Importance,
    bn_importance,
    keep_by_importance,
    l1_importance,
    l2_importance,
)
from slimtorch.prune.graph import ChannelGraph, ChannelGroup, trace_channels

__all__ = [
    "IMPORTANCE",
    "bn_importance",
    "build_pruned",
    "channel_sizes",
    "keep_by_importance",
    "l1_importance",
    "l2_importance",
    "prune_channels",
    "pruned_spec",
]

PRUNED_FACTORY = "slimtorch.prune.surgery:build_pruned"
_RESIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.modules.batchnorm._BatchNorm,
              nn.modules.instancenorm._InstanceNorm)  # fmt: skip


def _check_keep(group: ChannelGroup, indices: Sequence[int] | Tensor) -> Tensor:
    kept = sorted({int(i) for i in torch.as_tensor(indices).reshape(-1).tolist()})
    if not kept or kept[0] < 0 or kept[-1] >= group.size:
        raise ConfigError(
            f"keep[{group.name!r}] must hold channel indices in [0, {group.size}), at least one"
        )
    return torch.tensor(kept, dtype=torch.long)


def _resolve_keep(
    graph: ChannelGraph,
    model: nn.Module,
    keep: Mapping[str, Sequence[int] | Tensor] | None,
    ratio: float | Mapping[str, float] | None,
    importance: Importance,
    min_channels: int,
    round_to: int,
) -> dict[str, Tensor]:
    """Group name -> kept channel indices, from explicit indices and/or ratios."""
    result: dict[str, Tensor] = {}
    ratios = _ratios(graph, ratio)
    for name, r in ratios.items():
        scores = importance(model, graph.group(name))
        result[name] = keep_by_importance(scores, r, min_channels, round_to)
    for key, indices in (keep or {}).items():
        group = graph.group(key)
        if not group.prunable:
            raise ConfigError(
                f"keep[{key!r}]: channel group {group.name!r} is fixed: {group.reason}"
            )
        result[group.name] = _check_keep(group, indices)
    return result


def _ratios(graph: ChannelGraph, ratio: float | Mapping[str, float] | None) -> dict[str, float]:
    if ratio is None:
        return {}
    if isinstance(ratio, int | float):
        return {g.name: float(ratio) for g in graph.prunable()}
    out = {}
    for key, r in ratio.items():
        group = graph.group(key)
        if not group.prunable:
            raise ConfigError(
                f"ratio[{key!r}]: channel group {group.name!r} is fixed: {group.reason}"
            )
        out[group.name] = float(r)
    return out


def _module_keeps(
    graph: ChannelGraph, model: nn.Module, keeps: dict[str, Tensor]
) -> dict[str, dict[str, Tensor]]:
    """Module name -> {"out": kept indices along dim 0, "in": kept indices along the input}."""
    removed: dict[str, dict[str, list[Tensor]]] = {}
    for name, kept in keeps.items():
        group = graph.group(name)
        mask = torch.ones(group.size, dtype=torch.bool)
        mask[kept] = False
        dropped = mask.nonzero().reshape(-1)
        for slot in group.slots:
            dim = "in" if slot.role == "in" else "out"
            removed.setdefault(slot.module, {}).setdefault(dim, []).append(slot.indices(dropped))
    result: dict[str, dict[str, Tensor]] = {}
    for module_name, dims in removed.items():
        module = model.get_submodule(module_name)
        result[module_name] = {}
        for dim, parts in dims.items():
            total = _dim_size(module, dim)
            mask = torch.ones(total, dtype=torch.bool)
            mask[torch.cat(parts)] = False
            result[module_name][dim] = mask.nonzero().reshape(-1)
    return result


def _dim_size(module: nn.Module, dim: str) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features if dim == "out" else module.in_features
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return module.out_channels if dim == "out" else module.in_channels
    return module.num_features


def _slice_param(module: nn.Module, name: str, index: Tensor, dim: int) -> None:
    tensor = getattr(module, name, None)
    if tensor is None:
        return
    new = tensor.detach().index_select(dim, index).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, new)


def _shrink_weight(module: nn.Module, out: Tensor | None, inp: Tensor | None) -> None:
    """Slice ``weight`` (dim 0 by ``out``, dim 1 by ``inp``); weight-normalized ones too."""
    if not parametrize.is_parametrized(module, "weight"):
        if out is not None:
            _slice_param(module, "weight", out, 0)
        if inp is not None:
            _slice_param(module, "weight", inp, 1)
        return
    plist = module.parametrizations.weight
    if [type(p) for p in plist] != [_WeightNorm]:
        raise ModelError(f"cannot slice a weight parametrized by {list(plist)}; only weight_norm")
    with torch.no_grad():
        w = module.weight.detach()
        w = w if out is None else w.index_select(0, out)
        w = w if inp is None else w.index_select(1, inp)
        g, v = plist[0].right_inverse(w)  # g = ||w|| per output, v = w: the same weight
    plist.original0 = nn.Parameter(g.clone())
    plist.original1 = nn.Parameter(v.clone())


def shrink_module(module: nn.Module, out: Tensor | None, inp: Tensor | None) -> nn.Module:
    """A copy of ``module`` keeping output indices ``out`` and input indices ``inp``.

    Depthwise convs (``groups == in == out``) keep ``out`` on both sides. Returns a deep copy
    with sliced parameters and updated size attributes; ``module`` is not changed.

    Example:
        >>> shrink_module(nn.Linear(4, 3), torch.tensor([0, 2]), torch.tensor([1])).weight.shape
        torch.Size([2, 1])
    """
    new = copy.deepcopy(module)
    if isinstance(new, nn.Linear):
        _shrink_weight(new, out, inp)
        new.out_features, new.in_features = new.weight.shape
    elif isinstance(new, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        depthwise = new.groups == new.in_channels == new.out_channels and new.groups > 1
        _shrink_weight(new, out, None if depthwise else inp)
        new.out_channels = new.weight.shape[0]
        new.in_channels = new.out_channels if depthwise else new.weight.shape[1] * new.groups
        new.groups = new.out_channels if depthwise else new.groups
    else:
        for name in ("weight", "running_mean", "running_var"):
            if out is not None:
                _slice_param(new, name, out, 0)
        new.num_features = len(out) if out is not None else new.num_features
    if out is not None:
        _slice_param(new, "bias", out, 0)
    return new


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _check_runs(model: nn.Module, example_input: Any) -> None:
    flags = {m: m.training for m in model.modules()}
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        with torch.no_grad():
            model.eval()(*args)
    except Exception as exc:  # a model that hard-codes a channel count fails here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"the channel-pruned {type(model).__name__} fails on the example input "
            f"(does it hard-code a channel count?): {first}"
        ) from exc
    finally:
        for m, flag in flags.items():
            m.train(flag)


def prune_channels(
    model: nn.Module,
    example_input: Tensor | tuple[Tensor, ...],
    keep: Mapping[str, Sequence[int] | Tensor] | None = None,
    *,
    ratio: float | Mapping[str, float] | None = None,
    importance: Importance | str = "l1",
    min_channels: int = 1,
    round_to: int = 1,
    graph: ChannelGraph | None = None,
) -> nn.Module:
    """Remove channels for real: a smaller dense copy of ``model`` (``model`` is unchanged).

    Args:
        model: a model ``torch.fx`` can trace.
        example_input: an input to trace shapes with.
        keep: group name (or the name of any module producing the group) -> channel indices
            to keep. Overrides ``ratio`` for those groups.
        ratio: fraction of channels to remove from every prunable group (float) or from the
            named groups (mapping).
        importance: ``"l1"``, ``"l2"``, ``"bn"`` (:func:`bn_importance`) or a function
            ``(model, group) -> scores[group.size]``.
        min_channels: keep at least this many channels per group.
        round_to: round kept counts up to a multiple of this.
        graph: a precomputed :func:`trace_channels` result for ``model``.

    Returns:
        The pruned model: same class and module names, smaller Conv/Linear/norm layers.

    Raises:
        ConfigError: a key matches no group, a group is fixed, indices out of range, bad ratio.
        ModelError: the model cannot be traced, or the pruned model fails to run.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        ...                   nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
        >>> small = prune_channels(m, torch.zeros(1, 1, 8, 8), ratio=0.5)
        >>> small[0].out_channels, small[1].num_features, small[4].in_features
        (4, 4, 144)
    """
    fn = IMPORTANCE.get(importance) if isinstance(importance, str) else importance
    if fn is None:
        names = ", ".join(IMPORTANCE)
        raise ConfigError(f"unknown importance {importance!r}; expected one of {names}")
    graph = graph or trace_channels(model, example_input)
    keeps = _resolve_keep(graph, model, keep, ratio, fn, min_channels, round_to)
    pruned = copy.deepcopy(model)
    for name, dims in _module_keeps(graph, model, keeps).items():
        new = shrink_module(model.get_submodule(name), dims.get("out"), dims.get("in"))
        _replace(pruned, name, new)
    _check_runs(pruned, example_input)
    return pruned


def channel_sizes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Size of every Conv/Linear/BatchNorm/InstanceNorm by qualified name.

    Example:
        >>> channel_sizes(nn.Sequential(nn.Linear(4, 3)))
        {'0': {'in': 4, 'out': 3}}
    """
    sizes = {}
    for name, m in model.named_modules():
        if isinstance(m, _RESIZABLE):
            sizes[name] = {"in": _dim_size(m, "in"), "out": _dim_size(m, "out")}
            if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
                sizes[name]["in"] = m.in_channels
    return sizes


def pruned_spec(base: ModelSpec, pruned: nn.Module) -> ModelSpec:
    """A spec that rebuilds ``pruned``: ``base`` plus the sizes of the resized modules.

    Args:
        base: the spec of the unpruned architecture (what ``build_model`` built originally).
        pruned: the output of :func:`prune_channels` on that architecture.

    Returns:
        ``ModelSpec("slimtorch.prune.surgery:build_pruned", {"base": ..., "channels": ...,
        shape args of base})``; ``build_model`` on it returns the pruned architecture.
    """
    original = channel_sizes(create_model(base.name, **base.kwargs))  # a spec already built
    changed = {n: s for n, s in channel_sizes(pruned).items() if original.get(n) != s}
    shape = {k: base.kwargs[k] for k in ("num_classes", "in_channels", "image_size")
             if k in base.kwargs}  # fmt: skip
    return ModelSpec(PRUNED_FACTORY, {"base": base.to_dict(), "channels": changed, **shape})


def build_pruned(
    *, base: dict[str, Any], channels: dict[str, dict[str, int]], **shape: Any
) -> nn.Module:
    """Factory for :func:`pruned_spec` specs: build ``base``, then resize ``channels``' modules.

    Args:
        base: the unpruned model's spec dict.
        channels: module name -> ``{"in": n, "out": n}`` (fresh weights, the checkpoint's
            state_dict fills them).
        **shape: ``num_classes``/``in_channels``/``image_size`` as ``create_model`` passes them
            (already in ``base``; ignored).

    Returns:
        The pruned architecture.
    """
    model = build_model(ModelSpec.from_dict(base))
    for name, size in channels.items():
        try:
            module = model.get_submodule(name)
        except AttributeError as exc:
            raise ModelError(f"pruned spec names {name!r}, which {base['name']} lacks") from exc
        out = torch.arange(size["out"])
        inp = torch.arange(size["in"]) if isinstance(module, _RESIZABLE[:4]) else None
        _replace(model, name, shrink_module(module, out, inp))
    return model
