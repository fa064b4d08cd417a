"""The channel-group data of :func:`slimtorch.prune.graph.trace_channels`.

:class:`ChannelSpaces` is the union-find the tracer fills while it walks the graph (one
*space* per conv/linear output, united by residual additions, with the *slots* where each
space's channels appear and the reasons that fix a space); :func:`groups_of` turns it into
the :class:`ChannelGraph` of :class:`ChannelGroup` s that pruning and surgery read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from slimtorch.errors import ConfigError


@dataclass(frozen=True)
class ChannelSlot:
    """Where a group's channels sit in one module: channel ``c`` is the index range
    ``offset + c*repeat .. offset + (c+1)*repeat - 1`` of the module's output dim
    (``role`` ``"out"`` or ``"tied"``) or input dim (``"in"``)."""

    module: str
    role: str
    offset: int = 0
    repeat: int = 1

    def indices(self, channels: Tensor) -> Tensor:
        """Module indices (int64, ascending for ascending ``channels``) of the given channels."""
        base = self.offset + channels.long()[:, None] * self.repeat  # [k, 1]
        return (base + torch.arange(self.repeat)[None, :]).reshape(-1)  # [k * repeat]


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together (a coupled group).

    Attributes:
        name: the qualified name of the group's first producer (conv/linear) in graph order.
        size: channels in the group.
        slots: every place the channels appear, in graph order.
        prunable: False when some op fixes the channels (``reason`` says which).
        reason: why the group is fixed; ``""`` when prunable.
    """

    name: str
    size: int
    slots: tuple[ChannelSlot, ...]
    prunable: bool
    reason: str = ""

    def modules(self, *roles: str) -> tuple[str, ...]:
        """Names of modules with a slot of one of ``roles`` (all roles when none given)."""
        names = [s.module for s in self.slots if not roles or s.role in roles]
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class ChannelGraph:
    """All channel groups of a model (see :func:`trace_channels`)."""

    groups: tuple[ChannelGroup, ...]

    def group(self, key: str) -> ChannelGroup:
        """The group named ``key``, or the group whose outputs module ``key`` produces.

        Raises:
            ConfigError: no group has that name or produces from that module.
        """
        for g in self.groups:
            if g.name == key or key in g.modules("out", "tied"):
                return g
        names = ", ".join(g.name for g in self.prunable())
        raise ConfigError(f"{key!r} matches no channel group; prunable groups: {names}")

    def prunable(self) -> tuple[ChannelGroup, ...]:
        """The groups that may be pruned."""
        return tuple(g for g in self.groups if g.prunable)


Layout = tuple[tuple[int, int], ...]  # (space, repeat) per segment along the channel dim


class ChannelSpaces:
    """Union-find over channel spaces, with slots and fixing reasons per space."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.slots: list[list[ChannelSlot]] = []
        self.fixed: dict[int, str] = {}

    def new(self, size: int, reason: str = "") -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.slots.append([])
        if reason:
            self.fixed[len(self.parent) - 1] = reason
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def fix(self, layout: Layout | None, reason: str) -> None:
        for space, _ in layout or ():
            self.fixed.setdefault(space, reason)

    def add_slots(self, layout: Layout, module: str, role: str) -> None:
        offset = 0
        for space, repeat in layout:
            self.slots[space].append(ChannelSlot(module, role, offset, repeat))
            offset += self.size[space] * repeat


def groups_of(spaces: ChannelSpaces) -> tuple[ChannelGroup, ...]:
    """One group per class of united spaces that some conv/linear produces, in graph order."""
    members: dict[int, list[int]] = {}
    for s in range(len(spaces.parent)):
        members.setdefault(spaces.find(s), []).append(s)
    groups = []
    for root in sorted(members):
        slots = [slot for s in members[root] for slot in spaces.slots[s]]
        producers = [s.module for s in slots if s.role == "out"]
        if not producers:
            continue  # the input, or a value no conv/linear produced: nothing to prune
        reasons = [spaces.fixed[s] for s in members[root] if s in spaces.fixed]
        name = producers[0]
        groups.append(ChannelGroup(name, spaces.size[root], tuple(slots), not reasons,
                                   reasons[0] if reasons else ""))  # fmt: skip
    return tuple(groups)
