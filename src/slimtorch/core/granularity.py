"""Granularity as data: which values share one decision (a scale, a keep/prune choice).

One family of frozen types serves pruning and quantization, their configs and recipes:

- ``PerTensor()``: the whole tensor (one quantization scale per layer);
- ``PerChannel(axis)``: one per index along ``axis`` (output channels: ``axis=0``; pruning
  removes whole filters, or with ``axis=1`` whole input channels);
- ``PerGroup(size, axis)``: ``size`` consecutive values along ``axis`` (quantization groups);
- ``Element()``: each weight alone (fine-grained pruning);
- ``NM(n, m)``: keep ``n`` of every ``m`` consecutive weights (semi-structured pruning);
- ``Vector(axis)``: 1-D slices of a kernel; ``Kernel()``: each ``weight[o, i]`` kernel.

Each has one text spelling, used by the CLI and by recipes and read back by
:func:`parse_granularity`: ``tensor``, ``channel``, ``input-channel``, ``group:128``,
``element``, ``2:4``, ``vector:-1``, ``kernel``. A config says which kinds it accepts
(``PRUNE_KINDS``, ``QUANT_KINDS``).

Example:
    >>> parse_granularity("group:128"), format_granularity(NM(2, 4))
    (PerGroup(size=128, axis=-1, ragged=False), '2:4')
    >>> parse_granularity("2:4", QUANT_KINDS)
    Traceback (most recent call last):
    ...
    slimtorch.errors.ConfigError: granularity: expected tensor, channel or group:SIZE, got '2:4'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slimtorch.errors import ConfigError


@dataclass(frozen=True)
class PerTensor:
    """One scale (and zero point) for the whole tensor."""


@dataclass(frozen=True)
class PerChannel:
    """One decision per index along ``axis`` (output channels: ``axis=0``)."""

    axis: int = 0


@dataclass(frozen=True)
class PerGroup:
    """One scale per ``size`` consecutive values along ``axis`` (the input dim: ``-1``).

    ``ragged``: a ``size`` that does not divide the axis leaves a short last group instead of
    being an error.
    """

    size: int
    axis: int = -1
    ragged: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            raise ConfigError(f"PerGroup.size: expected a positive integer, got {self.size!r}")


@dataclass(frozen=True)
class Element:
    """Fine-grained: each weight is its own group."""


@dataclass(frozen=True)
class NM:
    """Keep ``n`` of every ``m`` consecutive weights along the input dimension (``0 < n < m``)."""

    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.m, int) and 0 < self.n < self.m):
            raise ConfigError(f"N:M sparsity needs integers 0 < N < M, got N={self.n}, M={self.m}")


@dataclass(frozen=True)
class Vector:
    """1-D slices along ``axis`` (``-1``: kernel rows, ``-2``: kernel columns)."""

    axis: int = -1


@dataclass(frozen=True)
class Kernel:
    """Each ``weight[o, i]`` kernel (all dimensions after the first two) is one group."""


Granularity = PerTensor | PerChannel | PerGroup | Element | NM | Vector | Kernel
GRANULARITY_TYPES: tuple[type, ...] = (PerTensor, PerChannel, PerGroup, Element, NM, Vector, Kernel)

PRUNE_KINDS: tuple[type, ...] = (Element, NM, Vector, Kernel, PerChannel)
QUANT_KINDS: tuple[type, ...] = (PerTensor, PerChannel, PerGroup)

# How each kind is spelled, for error messages: what a config accepting it may be given.
SPELLINGS: dict[type, str] = {
    PerTensor: "tensor",
    PerChannel: "channel",
    PerGroup: "group:SIZE",
    Element: "element",
    NM: "N:M (e.g. 2:4)",
    Vector: "vector[:AXIS]",
    Kernel: "kernel",
}
_NAMED: dict[str, Granularity] = {
    "tensor": PerTensor(),
    "channel": PerChannel(0),
    "filter": PerChannel(0),
    "input-channel": PerChannel(1),
    "element": Element(),
    "fine": Element(),
    "kernel": Kernel(),
    "vector": Vector(-1),
}


def parse_granularity(
    text: str | Granularity, allowed: tuple[type, ...] | None = None, what: str = "granularity"
) -> Granularity:
    """The granularity a text names (a granularity object is checked and returned as is).

    Args:
        text: ``tensor``, ``channel`` (= ``filter``), ``input-channel``, ``group:SIZE``,
            ``element``, ``N:M``, ``vector[:AXIS]`` or ``kernel``.
        allowed: the kinds the caller accepts (default: all).
        what: names the field in error messages (``PruneConfig.granularity``, ``--granularity``).

    Returns:
        The granularity object.

    Raises:
        ConfigError: an unknown spelling, or a kind outside ``allowed``.

    Example:
        >>> parse_granularity("input-channel"), parse_granularity("vector:-2")
        (PerChannel(axis=1), Vector(axis=-2))
    """
    kinds = allowed or tuple(SPELLINGS)
    g = text if not isinstance(text, str) else _parse(text)
    if g is None or not isinstance(g, kinds):
        expected = [SPELLINGS[k] for k in kinds]
        listed = ", ".join(expected[:-1]) + (" or " if len(expected) > 1 else "") + expected[-1]
        raise ConfigError(f"{what}: expected {listed}, got {text!r}")
    return g


def _parse(text: str) -> Granularity | None:
    t = text.strip().lower()
    if t in _NAMED:
        return _NAMED[t]
    head, _, tail = t.partition(":")
    try:
        if head == "group" and tail:
            return PerGroup(int(tail))
        if head == "vector" and tail:
            return Vector(int(tail))
        if tail:
            return NM(int(head), int(tail))
    except ValueError:
        return None
    return None


def format_granularity(g: Granularity) -> str:
    """Inverse of :func:`parse_granularity` (``format_granularity(PerGroup(64)) == "group:64"``).

    Only the spellable forms round-trip: a ``PerGroup`` along another axis or ragged, and a
    ``PerChannel`` along an axis other than 0 or 1, are described by :func:`granularity_to_dict`.
    """
    if isinstance(g, NM):
        return f"{g.n}:{g.m}"
    if isinstance(g, Vector):
        return f"vector:{g.axis}"
    if isinstance(g, PerGroup):
        return f"group:{g.size}"
    if isinstance(g, PerChannel):
        return "input-channel" if g.axis == 1 else "channel"
    names = {PerTensor: "tensor", Element: "element", Kernel: "kernel"}
    return names[type(g)]


def granularity_to_dict(g: Granularity) -> dict[str, Any]:
    """A JSON-able description: ``{"kind": "channel", "axis": 0}``."""
    if isinstance(g, PerChannel):
        return {"kind": "channel", "axis": g.axis}
    if isinstance(g, PerGroup):
        extra = {"ragged": True} if g.ragged else {}
        return {"kind": "group", "size": g.size, "axis": g.axis, **extra}
    if isinstance(g, NM):
        return {"kind": "nm", "n": g.n, "m": g.m}
    if isinstance(g, Vector):
        return {"kind": "vector", "axis": g.axis}
    return {"kind": format_granularity(g)}


def granularity_from_dict(d: dict[str, Any]) -> Granularity:
    """Inverse of :func:`granularity_to_dict`."""
    kind = d.get("kind")
    if kind == "channel":
        return PerChannel(int(d["axis"]))
    if kind == "group":
        return PerGroup(int(d["size"]), int(d.get("axis", -1)), bool(d.get("ragged", False)))
    if kind == "nm":
        return NM(int(d["n"]), int(d["m"]))
    if kind == "vector":
        return Vector(int(d["axis"]))
    if kind in ("tensor", "element", "kernel"):
        return _NAMED[kind]
    raise ConfigError(f"granularity: unknown kind {kind!r}")
