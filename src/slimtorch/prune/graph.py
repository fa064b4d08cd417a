"""Channel dependency graph: which channels of which layers must be removed together.

``trace_channels(model, example_input)`` traces the model with ``torch.fx.symbolic_trace``,
propagates shapes on the example input, and follows the *channel dimension* (dim 1) of every
tensor through the graph. Each conv/linear output opens a new *channel space*; the rules:

- BatchNorm / InstanceNorm and depthwise convs (``groups == in == out``) are *tied*: their
  per-channel parameters belong to the space that flows through them.
- Elementwise binary ops (``+``, ``-``, ``*``, ``/``: residual additions, gating) unite the
  spaces of their operands into one coupled group.
- ``cat`` along dim 1 lays spaces side by side (each keeps its channel offset).
- ``flatten`` from ``[N, C, H, W]`` to ``[N, C*H*W]`` maps channel ``c`` to the ``H*W``
  features ``c*H*W .. (c+1)*H*W - 1`` of the next linear layer.
- Activations, pooling, dropout and reductions over the spatial dims pass channels through.
- Anything else (an op slimtorch cannot rewire: GroupNorm/LayerNorm, grouped convs, slicing,
  the model's output and input) *fixes* the spaces it touches: they are not prunable.

A :class:`ChannelGroup` is one class of united spaces; each place its channels appear is a
:class:`ChannelSlot` (module, role, offset, repeat): channel ``c`` of the group is the index
range ``offset + c*repeat .. offset + (c+1)*repeat - 1`` of the module's output dim
(``role="out"``, ``"tied"``) or input dim (``role="in"``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> g = trace_channels(m, torch.zeros(1, 1, 8, 8))
    >>> [(x.name, x.size, x.prunable) for x in g.groups]
    [('0', 4, True), ('3', 2, False)]
    >>> [(s.module, s.role) for s in g.group("0").slots]
    [('0', 'out'), ('1', 'tied'), ('3', 'in')]
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F
from torch.utils._pytree import tree_leaves

from slimtorch.errors import ModelError
from slimtorch.prune.channel_groups import (
    ChannelGraph,
    ChannelGroup,
    ChannelSlot,
    ChannelSpaces,
    Layout,
    groups_of,
)

__all__ = ["ChannelGraph", "ChannelGroup", "ChannelSlot", "trace_channels"]

CHANNEL_DIM = 1  # NC, NCL, NCHW: channels are dim 1 everywhere this module looks

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TIED_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
    nn.GELU, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
_PASS_FUNCS = {
    F.relu, F.relu6, F.leaky_relu, F.silu, F.gelu, F.hardswish, F.elu, F.dropout,
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.relu, torch.sigmoid, torch.tanh,
    torch.clamp, F.sigmoid, F.tanh,
}  # fmt: skip
_PASS_METHODS = {"relu", "sigmoid", "tanh", "clamp", "contiguous", "clone", "detach"}
_BINARY = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.imul,
    torch.add, torch.sub, torch.mul, torch.div,
}  # fmt: skip
_BINARY_METHODS = {"add", "sub", "mul", "div", "add_", "mul_"}
_FLATTEN_FUNCS = {torch.flatten, torch.reshape}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}
_REDUCE_FUNCS = {torch.mean, torch.sum, torch.amax}
_REDUCE_METHODS = {"mean", "sum", "amax"}


def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many error types on untraceable code
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"cannot trace {type(model).__name__} with torch.fx for channel pruning: "
            f"{type(exc).__name__}: {first}"
        ) from exc


def _propagate_shapes(gm: fx.GraphModule, example_input: Any) -> None:
    """Run ShapeProp in eval mode without gradients; training flags are restored."""
    flags = {m: m.training for m in gm.modules()}
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        with torch.no_grad():
            ShapeProp(gm.eval()).propagate(*args)
    except Exception as exc:  # the user's model can fail in any way on a wrong input
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"model failed on the example input while tracing channels: {first}"
        raise ModelError(msg) from exc
    finally:
        for m, flag in flags.items():
            m.train(flag)


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = getattr(node, "meta", {}).get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class _Walker:
    """Assigns a channel layout to every tensor node of the graph."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.spaces = ChannelSpaces()
        self.layout: dict[fx.Node, Layout | None] = {}
        self.module_out: dict[str, int] = {}
        self.module_in: dict[str, Layout] = {}

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            self.layout[node] = self._visit(node)

    def _fresh(self, node: fx.Node, reason: str) -> Layout | None:
        shape = _shape(node)
        if shape is None or len(shape) <= CHANNEL_DIM:
            return None
        return ((self.spaces.new(shape[CHANNEL_DIM], reason), 1),)

    def _inputs(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in tree_leaves((node.args, node.kwargs)) if isinstance(a, fx.Node)]

    def _unknown(self, node: fx.Node) -> Layout | None:
        what = f"{node.op} {node.target if isinstance(node.target, str) else node.name}"
        for arg in self._inputs(node):
            self.spaces.fix(self.layout.get(arg), f"used by {what}, which cannot be rewired")
        return self._fresh(node, f"produced by {what}")

    def _visit(self, node: fx.Node) -> Layout | None:
        if node.op == "placeholder":
            return self._fresh(node, "model input")
        if node.op == "get_attr":
            return None
        if node.op == "output":
            for arg in self._inputs(node):
                self.spaces.fix(self.layout.get(arg), "model output")
            return None
        if node.op == "call_module":
            return self._module(node, self.gm.get_submodule(str(node.target)))
        return self._function(node)

    def _first(self, node: fx.Node) -> Layout | None:
        arg = node.args[0] if node.args else None
        return self.layout.get(arg) if isinstance(arg, fx.Node) else None

    def _module(self, node: fx.Node, m: nn.Module) -> Layout | None:
        name, layout = str(node.target), self._first(node)
        if layout is None:
            return self._unknown(node)
        if isinstance(m, _CONVS):
            return self._conv(node, name, m, layout)
        if isinstance(m, nn.Linear) and len(_shape(node.args[0]) or ()) == 2:
            return self._producer(node, name, layout, "in", m.out_features)
        if isinstance(m, _TIED_NORMS):
            self.spaces.add_slots(layout, name, "tied")
            return layout
        if isinstance(m, nn.Flatten):
            return self._flatten(node, layout)
        if isinstance(m, _PASS_MODULES):
            return self._passthrough(node, layout)
        return self._unknown(node)

    def _conv(self, node: fx.Node, name: str, m: nn.Module, layout: Layout) -> Layout | None:
        if m.groups == 1 and all(r == 1 for _, r in layout):
            return self._producer(node, name, layout, "in", m.out_channels)
        if m.groups == m.in_channels == m.out_channels and all(r == 1 for _, r in layout):
            self.spaces.add_slots(layout, name, "tied")
            return layout
        return self._unknown(node)

    def _producer(self, node: fx.Node, name: str, layout: Layout, role: str, out: int) -> Layout:
        """A conv/linear: consumes ``layout``, produces its own space (shared across calls)."""
        if name in self.module_in:
            self._unite([self.module_in[name], layout], node)
        else:
            self.module_in[name] = layout
            self.spaces.add_slots(layout, name, role)
        if name not in self.module_out:
            self.module_out[name] = self.spaces.new(out)
            self.spaces.slots[self.module_out[name]].append(ChannelSlot(name, "out"))
        return ((self.module_out[name], 1),)

    def _passthrough(self, node: fx.Node, layout: Layout) -> Layout | None:
        src, out = _shape(node.args[0]), _shape(node)
        same = src is not None and out is not None and len(out) > CHANNEL_DIM
        if same and out[CHANNEL_DIM] == src[CHANNEL_DIM] and len(out) == len(src):
            return layout
        return self._unknown(node)

    def _flatten(self, node: fx.Node, layout: Layout) -> Layout | None:
        src, out = _shape(node.args[0]), _shape(node)
        if src is None or out is None or len(src) < 2 or out != (src[0], _prod(src[1:])):
            return self._passthrough(node, layout) if out == src else self._unknown(node)
        spatial = _prod(src[2:])
        return tuple((space, repeat * spatial) for space, repeat in layout)

    def _reduce(self, node: fx.Node, layout: Layout) -> Layout | None:
        src, out = _shape(node.args[0]), _shape(node)
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        dims = (dims,) if isinstance(dims, int) else dims
        if src is None or out is None or not dims or len(out) < 2:
            return self._unknown(node)
        dims = {d % len(src) for d in dims}
        if dims & {0, CHANNEL_DIM} or out[:2] != src[:2]:
            return self._unknown(node)
        return layout

    def _function(self, node: fx.Node) -> Layout | None:
        target, method = node.target, node.op == "call_method"
        if _shape(node) is None:  # x.size(), x.dim(), shape arithmetic: no channels
            return None
        layout = self._first(node)
        if target in _BINARY or (method and target in _BINARY_METHODS):
            return self._binary(node)
        if target is torch.cat or target is torch.concat:
            return self._cat(node)
        if layout is None:
            return self._unknown(node)
        if target in _PASS_FUNCS or (method and target in _PASS_METHODS):
            return self._passthrough(node, layout)
        if target in _FLATTEN_FUNCS or (method and target in _FLATTEN_METHODS):
            return self._flatten(node, layout)
        if target in _REDUCE_FUNCS or (method and target in _REDUCE_METHODS):
            return self._reduce(node, layout)
        return self._unknown(node)

    def _binary(self, node: fx.Node) -> Layout | None:
        out = _shape(node)
        layouts = []
        for arg in node.args[:2]:
            if not isinstance(arg, fx.Node):
                continue  # a Python scalar broadcasts over every channel
            if self.layout.get(arg) is not None:
                layouts.append(self.layout[arg])
            elif not _broadcasts_channels(_shape(arg), out):
                return self._unknown(node)
        if not layouts:
            return self._unknown(node)
        return self._unite(layouts, node)

    def _unite(self, layouts: list[Layout], node: fx.Node) -> Layout:
        """Couple layouts segment by segment; mismatched segmentations fix them all."""
        first = layouts[0]
        for other in layouts[1:]:
            sizes = [(self.spaces.size[s], r) for s, r in first]
            if [(self.spaces.size[s], r) for s, r in other] != sizes:
                for layout in layouts:
                    self.spaces.fix(layout, f"{node.name} combines mismatched channel layouts")
                return first
            for (a, _), (b, _) in zip(first, other, strict=True):
                self.spaces.union(a, b)
        return first

    def _cat(self, node: fx.Node) -> Layout | None:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        out = _shape(node)
        layouts = [self.layout.get(t) for t in tensors or ()]
        if out is None or any(x is None for x in layouts) or not layouts:
            return self._unknown(node)
        if dim % len(out) == CHANNEL_DIM:
            return tuple(seg for layout in layouts for seg in layout)
        return self._unite(layouts, node)


def _broadcasts_channels(shape: tuple[int, ...] | None, out: tuple[int, ...] | None) -> bool:
    """True when a constant of ``shape`` is the same for every channel of ``out``."""
    if shape is None or out is None:
        return shape is None  # a Python scalar or a non-tensor broadcasts
    lead = len(out) - len(shape)
    return lead > CHANNEL_DIM or shape[CHANNEL_DIM - lead] == 1


def _prod(values: tuple[int, ...]) -> int:
    result = 1
    for v in values:
        result *= int(v)
    return result


def trace_channels(model: nn.Module, example_input: Tensor | tuple[Tensor, ...]) -> ChannelGraph:
    """Find the coupled channel groups of ``model`` from its torch.fx graph.

    Args:
        model: any ``nn.Module`` that ``torch.fx.symbolic_trace`` can trace (not changed;
            training flags are restored).
        example_input: a tensor, or a tuple of positional inputs, used to propagate shapes.

    Returns:
        A :class:`ChannelGraph`; groups are ordered by their first producer in graph order.

    Raises:
        ModelError: the model cannot be traced (the message names the model and the fx
            error's first line) or fails on the example input.

    Example:
        >>> from slimtorch.models import create_model
        >>> g = trace_channels(create_model("resnet"), torch.zeros(1, 1, 8, 8))
        >>> g.group("conv1").modules("out")  # the stem and every block of stage 1 add up
        ('conv1', 'layer1.0.conv2')
    """
    gm = _symbolic_trace(model)
    _propagate_shapes(gm, example_input)
    walker = _Walker(gm)
    walker.run()
    return ChannelGraph(groups_of(walker.spaces))
