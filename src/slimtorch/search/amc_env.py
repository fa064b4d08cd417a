"""AMC's environment: one episode walks the prunable channel groups of a model in order.

Each step ``t`` is one prunable coupled channel group
(:func:`slimtorch.prune.graph.trace_channels` ``(...).prunable()``, in graph order). The agent
sees the paper's layer embedding (He et al. 2018, Sec. 3.1)::

    (t, kind, c_in, c_out, stride, kernel, params, flops_t, reduced_t, rest_t, a_{t-1})

where the layer is the group's first producer (a conv or linear; ``kind`` is ``depthwise``
when a depthwise conv is tied to the group, as in MobileNet's expansion groups), ``params``
and ``flops_t`` count every module that produces or carries the group's channels, ``reduced_t``
is the MACs removed by the actions so far, ``rest_t`` the MACs of the later groups' layers and
``a_{t-1}`` the previous preserve ratio (1 at ``t = 0``). The first eight features are
min-max normalized over the model's groups (a constant feature is 0); the last three are
fractions of the model's MACs and a ratio, so every feature lies in [0, 1].

The action is the group's preserve ratio, clipped to ``[lbound, rbound]`` and turned into a
channel count (rounded half up, at least 1, up to a multiple of ``round_to``). In the
resource-constrained mode it is then clipped as in the paper's Algorithm 1: the count is the
largest one not above the agent's such that the budget is still met if every later group is
pruned to ``lbound``. Step ``t = 0`` starts from a feasible configuration (everything at
``lbound``; :meth:`AMCEnv.check_feasible`), and each step keeps one, so the finished episode
always meets the budget, whatever the resource function.

MACs ("FLOPs" in the paper: multiply-accumulates of conv and linear layers) are computed in
closed form: a conv/linear layer's MACs are ``unit * c_in * c_out`` (a depthwise conv's
``unit * c``) with the channel counts its slots receive, so :class:`MacModel` gives exactly
the ``total_macs`` that :func:`slimtorch.core.trace.trace_model` counts on the pruned model
(MACs of modules no prunable group touches are constant; pruning never adds MACs).

Example:
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> env = AMCEnv.build(m, torch.zeros(1, 1, 8, 8), lbound=0.25)
    >>> env.mac.total, env.mac.macs([2])  # conv0: 64*4*9, conv2: 36*2*4*9 -> halved
    (4896, 2448)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slimtorch.core.trace import trace_model
from slimtorch.errors import ConfigError, ModelError
from slimtorch.prune.graph import ChannelGraph, ChannelGroup, trace_channels

LAYER_KINDS = ("conv", "depthwise", "linear")  # the "type" feature: 0, 1, 2 before scaling
STATIC_FEATURES = ("index", "kind", "c_in", "c_out", "stride", "kernel", "params", "flops")
STATE_FEATURES = (*STATIC_FEATURES, "reduced", "rest", "previous")
LINEAR_STRIDE, LINEAR_KERNEL = 0, 1  # the reference implementation's values for fc layers
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

Cost = Callable[[Sequence[int]], float]  # channel count per group -> resource (MACs, seconds)


@dataclass(frozen=True)
class AMCLayer:
    """The static description of one step (one prunable channel group)."""

    name: str
    kind: str
    c_in: int
    c_out: int
    stride: int
    kernel: int
    params: int
    macs: int

    def features(self, index: int) -> tuple[float, ...]:
        """The raw (unnormalized) static features in :data:`STATIC_FEATURES` order."""
        return (index, LAYER_KINDS.index(self.kind), self.c_in, self.c_out, self.stride,
                self.kernel, self.params, self.macs)  # fmt: skip


@dataclass(frozen=True)
class MacTerm:
    """One conv/linear module: ``macs = unit * k_in * k_out`` where ``k_in = c_in - sum over
    ``ins`` of removed[g] * repeat`` (``k_out`` likewise)."""

    unit: int
    c_in: int
    c_out: int
    ins: tuple[tuple[int, int], ...]
    outs: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class MacModel:
    """The model's MACs as a function of the channel count of every prunable group."""

    sizes: tuple[int, ...]
    terms: tuple[MacTerm, ...]
    fixed: int

    def macs(self, counts: Sequence[int]) -> int:
        """MACs of the model pruned to ``counts`` (one per group, all groups)."""
        removed = [s - int(k) for s, k in zip(self.sizes, counts, strict=True)]
        total = self.fixed
        for term in self.terms:
            k_in = term.c_in - sum(removed[g] * r for g, r in term.ins)
            k_out = term.c_out - sum(removed[g] * r for g, r in term.outs)
            total += term.unit * k_in * k_out
        return total

    @property
    def total(self) -> int:
        """MACs of the unpruned model."""
        return self.macs(self.sizes)


def is_depthwise(m: nn.Module) -> bool:
    """A conv with ``groups == in == out > 1`` (what channel surgery treats as tied)."""
    return isinstance(m, _CONVS) and m.groups == m.in_channels == m.out_channels and m.groups > 1


def _in_out(m: nn.Module) -> tuple[int, int]:
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    if is_depthwise(m):
        return 1, m.out_channels  # MACs scale with the channel count once
    return m.in_channels, m.out_channels


def mac_model(model: nn.Module, layer_macs: dict[str, int], graph: ChannelGraph) -> MacModel:
    """The closed-form :class:`MacModel` of ``model``.

    Args:
        model: the unpruned model.
        layer_macs: module name -> MACs (``trace_model(model, x).layers``).
        graph: its channel graph.
    """
    groups = graph.prunable()
    slots: dict[str, dict[str, list[tuple[int, int]]]] = {}
    for t, g in enumerate(groups):
        for s in g.slots:
            side = "in" if s.role == "in" else "out"
            slots.setdefault(s.module, {"in": [], "out": []})[side].append((t, s.repeat))
    terms, fixed = [], 0
    for name, macs in layer_macs.items():
        m = model.get_submodule(name) if name else model
        sides = slots.get(name)
        if not macs or sides is None or not isinstance(m, (*_CONVS, nn.Linear)):
            fixed += macs
            continue
        c_in, c_out = _in_out(m)
        ins = () if is_depthwise(m) else tuple(sides["in"])
        if macs % (c_in * c_out):  # not unit * c_in * c_out: count it unpruned (an upper bound)
            fixed += macs
            continue
        terms.append(MacTerm(macs // (c_in * c_out), c_in, c_out, ins, tuple(sides["out"])))
    return MacModel(tuple(g.size for g in groups), tuple(terms), fixed)


def describe_layer(model: nn.Module, group: ChannelGroup, layer_macs: dict[str, int]) -> AMCLayer:
    """The :class:`AMCLayer` of one prunable group."""
    producer = model.get_submodule(group.name)
    owners = group.modules("out", "tied")
    tied = [model.get_submodule(n) for n in group.modules("tied")]
    if isinstance(producer, nn.Linear):
        kind, c_in, stride, kernel = "linear", producer.in_features, LINEAR_STRIDE, LINEAR_KERNEL
    else:
        kind = "depthwise" if any(is_depthwise(m) for m in tied) else "conv"
        c_in, stride, kernel = producer.in_channels, producer.stride[0], producer.kernel_size[0]
    params = sum(p.numel() for n in owners for p in model.get_submodule(n).parameters(False))
    macs = sum(layer_macs.get(n, 0) for n in owners)
    return AMCLayer(group.name, kind, c_in, group.size, stride, kernel, params, macs)


def normalize_columns(raw: Tensor) -> Tensor:
    """Min-max scale each column to [0, 1]; a constant column becomes 0.

    Example:
        >>> normalize_columns(torch.tensor([[1.0, 5.0], [3.0, 5.0]])).tolist()
        [[0.0, 0.0], [1.0, 0.0]]
    """
    low, high = raw.min(dim=0).values, raw.max(dim=0).values  # [F]
    span = torch.where(high > low, high - low, torch.ones_like(high))
    return torch.where(high > low, (raw - low) / span, torch.zeros_like(raw))


def keep_count(size: int, ratio: float, round_to: int = 1) -> int:
    """Channels a preserve ``ratio`` keeps: ``size * ratio`` rounded half up, at least 1, up to
    a multiple of ``round_to``, at most ``size``.

    Example:
        >>> keep_count(10, 0.25), keep_count(10, 0.25, round_to=4), keep_count(3, 0.01)
        (3, 4, 1)
    """
    k = max(1, math.floor(size * ratio + 0.5))
    return min(size, math.ceil(k / round_to) * round_to)


@dataclass(frozen=True)
class Episode:
    """One walk through the groups: the states seen, the agent's actions (before the env's
    clipping, as the reference stores them) and the channel counts applied."""

    states: Tensor  # [T, len(STATE_FEATURES)]
    actions: Tensor  # [T, 1]
    counts: tuple[int, ...]

    def transitions(self) -> list[tuple[Tensor, Tensor, Tensor, bool]]:
        """``(s_t, a_t, s_{t+1}, done)``; the last step's next state is its own (as in the
        reference), masked by ``done``."""
        n = len(self.counts)
        return [(self.states[t], self.actions[t], self.states[min(t + 1, n - 1)], t == n - 1)
                for t in range(n)]  # fmt: skip


@dataclass(frozen=True)
class AMCEnv:
    """The static part of AMC's environment for one model (see the module docstring)."""

    layers: tuple[AMCLayer, ...]
    static: Tensor  # [T, len(STATIC_FEATURES)], normalized
    mac: MacModel
    lbound: float
    rbound: float = 1.0
    round_to: int = 1

    @classmethod
    def build(
        cls,
        model: nn.Module,
        example_input: Tensor | tuple[Tensor, ...],
        lbound: float,
        rbound: float = 1.0,
        round_to: int = 1,
        graph: ChannelGraph | None = None,
    ) -> AMCEnv:
        """Trace ``model`` (channel groups and MACs per layer) and describe every step.

        Raises:
            ModelError: the model cannot be traced or has no prunable channel group.
        """
        graph = graph or trace_channels(model, example_input)
        if not graph.prunable():
            raise ModelError(f"{type(model).__name__} has no prunable channel group for AMC")
        layer_macs = {lc.name: lc.macs for lc in trace_model(model, example_input).layers}
        layers = tuple(describe_layer(model, g, layer_macs) for g in graph.prunable())
        raw = torch.tensor([x.features(t) for t, x in enumerate(layers)], dtype=torch.float64)
        static = normalize_columns(raw).float()
        mac = mac_model(model, layer_macs, graph)
        return cls(layers, static, mac, lbound, rbound, round_to)

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.mac.sizes

    def count_for(self, t: int, action: float) -> int:
        """Channel count of step ``t`` for a raw action (clipped to ``[lbound, rbound]``)."""
        ratio = min(max(float(action), self.lbound), self.rbound)
        return keep_count(self.sizes[t], ratio, self.round_to)

    @property
    def lower_counts(self) -> tuple[int, ...]:
        """Every group pruned to ``lbound``."""
        return tuple(keep_count(s, self.lbound, self.round_to) for s in self.sizes)

    def state(self, t: int, chosen: Sequence[int], previous: float) -> Tensor:
        """The embedding of step ``t`` after ``chosen`` counts for steps ``0 .. t-1``."""
        total = self.mac.total
        reduced = (total - self.mac.macs([*chosen, *self.sizes[t:]])) / total
        rest = sum(x.macs for x in self.layers[t + 1 :]) / total
        dynamic = torch.tensor([reduced, rest, previous], dtype=torch.float32)
        return torch.cat([self.static[t], dynamic])

    def check_feasible(self, cost: Cost, budget: float) -> None:
        """Raise ConfigError when even every group at ``lbound`` exceeds ``budget``."""
        low = cost(self.lower_counts)
        if low > budget:
            raise ConfigError(
                f"AMCConfig.budget: {budget:.6g} cannot be met even with every group at "
                f"lbound={self.lbound} (that costs {low:.6g}); raise the budget or lower lbound"
            )

    def clip_count(
        self, t: int, desired: int, chosen: Sequence[int], cost: Cost, budget: float
    ) -> int:
        """The largest count ``<= desired`` (among those ``keep_count`` gives) that keeps the
        budget reachable with every later group at ``lbound``; the ``lbound`` count when none
        above it does (feasible: it is the configuration the previous step verified)."""
        low, q, size = self.lower_counts, self.round_to, self.sizes[t]
        allowed = sorted({min(size, math.ceil(j / q) * q) for j in range(low[t], desired + 1)})

        def fits(k: int) -> bool:
            return cost([*chosen, k, *low[t + 1 :]]) <= budget

        if fits(allowed[-1]):
            return allowed[-1]
        lo, hi = 0, len(allowed) - 1  # allowed[lo] fits (by induction), allowed[hi] does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(allowed[mid]) else (lo, mid)
        return allowed[lo]

    def run_episode(
        self,
        choose: Callable[[Tensor], Tensor],
        cost: Cost | None = None,
        budget: float | None = None,
    ) -> Episode:
        """Walk every step: ``choose(state) -> action [1]``; with ``budget``, clip each count
        so that the finished episode's ``cost`` is at most ``budget``."""
        chosen: list[int] = []
        states, actions, previous = [], [], 1.0
        for t, size in enumerate(self.sizes):
            s = self.state(t, chosen, previous)
            a = choose(s).float().reshape(1)
            k = self.count_for(t, float(a))
            if budget is not None and cost is not None:
                k = self.clip_count(t, k, chosen, cost, budget)
            chosen.append(k)
            previous = k / size
            states.append(s)
            actions.append(a)
        return Episode(torch.stack(states), torch.stack(actions), tuple(chosen))
