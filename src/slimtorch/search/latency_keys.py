"""What a latency lookup table is keyed by: one layer configuration, read off a forward pass.

A model's latency is predicted as a sum over the layer *calls* of one forward pass (see
:mod:`slimtorch.search.latency`). :func:`walk_layers` runs the model once with hooks and
returns one :class:`LayerCall` per call of

- a **leaf module** (a module without children: ``Conv2d``, ``BatchNorm2d``, ``ReLU``,
  ``MaxPool2d``, ``Linear``, ``Flatten``, ``Identity`` ...), keyed by its class, its
  configuration and the inputs it really got; and
- a **functional op** run outside any leaf module (the residual ``x + y`` of ResNet and
  MobileNetV2 blocks, a ``torch.flatten`` or ``torch.cat`` in a custom ``forward``), caught with
  a ``TorchFunctionMode`` and keyed ``fn:<name>`` with its tensor inputs and other arguments.

A :class:`LayerKey` holds the op kind, every input's shape (batch first), dtype and memory
format, the configuration fields that decide the cost (``MODULE_FIELDS``: channels in/out,
kernel, stride, padding, dilation, groups, bias for convolutions; features for linears; ...;
``extra_repr()`` for any other module) and the torch thread count. Two calls with equal keys
cost the same; a channel-pruned layer gets a new key because its channels and input shape
change.

The walk also counts the calls of non-leaf modules (``Sequential``, a residual block's
``forward``): their Python overhead is outside every leaf and is priced separately.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    >>> walk = walk_layers(m, torch.zeros(2, 1, 8, 8), threads=1)
    >>> [c.name for c in walk.calls], walk.module_calls
    (['0', '1'], 1)
    >>> walk.calls[0].key.fields["out_channels"], walk.calls[0].key.inputs[0].shape
    (4, (2, 1, 8, 8))
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from slimtorch.core.trace import call_model, model_error, restored_state
from slimtorch.errors import ModelError

_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
         "padding_mode")  # fmt: skip
_POOL = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
_AVG_POOL = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
_NORM = ("num_features", "affine", "track_running_stats")
# Module kind -> the attributes that decide its cost (any other module: its extra_repr()).
MODULE_FIELDS: tuple[tuple[type[nn.Module], tuple[str, ...]], ...] = (
    (nn.modules.conv._ConvNd, _CONV),
    (nn.Linear, ("in_features", "out_features")),
    (nn.modules.batchnorm._BatchNorm, _NORM),
    (nn.modules.instancenorm._InstanceNorm, _NORM),
    (nn.GroupNorm, ("num_groups", "num_channels", "affine")),
    (nn.LayerNorm, ("normalized_shape", "elementwise_affine")),
    (nn.modules.pooling._MaxPoolNd, _POOL),
    (nn.modules.pooling._AvgPoolNd, _AVG_POOL),
    (nn.modules.pooling._AdaptiveAvgPoolNd, ("output_size",)),
    (nn.modules.pooling._AdaptiveMaxPoolNd, ("output_size",)),
    (nn.Flatten, ("start_dim", "end_dim")),
)
FUNCTION_PREFIX = "fn:"


@dataclass(frozen=True)
class InputSpec:
    """One tensor input of a layer call: shape (batch first), dtype and memory format."""

    shape: tuple[int, ...]
    dtype: str
    layout: str  # "contiguous", "channels_last" or "strided"

    @classmethod
    def of(cls, t: Tensor) -> InputSpec:
        """The spec of tensor ``t``."""
        if t.is_contiguous():
            layout = "contiguous"
        elif t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
            layout = "channels_last"
        else:
            layout = "strided"
        return cls(tuple(int(s) for s in t.shape), str(t.dtype).removeprefix("torch."), layout)


@dataclass(frozen=True)
class LayerKey:
    """A layer configuration: equal keys cost the same on one machine.

    Attributes:
        op: the module class name (``"Conv2d"``, ``"ParametrizedConv2d"``), or
            ``"fn:<name>"`` for a functional op.
        inputs: one :class:`InputSpec` per tensor input, in argument order.
        fields: configuration, sorted by name (JSON values: ints, bools, lists, strings).
        threads: torch intra-op threads.
    """

    op: str
    inputs: tuple[InputSpec, ...]
    fields: dict[str, Any] = field(hash=False, compare=False)
    threads: int = 1
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        inputs = [[list(s.shape), s.dtype, s.layout] for s in self.inputs]
        body = {"op": self.op, "inputs": inputs, "fields": self.fields, "threads": self.threads}
        object.__setattr__(self, "_text", json.dumps(body, sort_keys=True, separators=(",", ":")))

    @property
    def text(self) -> str:
        """The canonical JSON text: the key of the table's JSON file."""
        return self._text

    def __hash__(self) -> int:
        return hash(self._text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerKey) and other._text == self._text

    @property
    def batch(self) -> int | None:
        """The first input's batch size (None without tensor inputs or for a 0-d input)."""
        first = self.inputs[0].shape if self.inputs else ()
        return first[0] if first else None


@dataclass
class LayerCall:
    """One call in a forward pass: its name, key, and (when kept) how to replay it.

    ``fn(*args)`` repeats the call; both are None when the walk did not keep them (the key was
    already known), so that a walk does not hold every activation of the model.
    """

    name: str
    key: LayerKey
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] | None = None


@dataclass
class Walk:
    """The layer calls of one forward pass, in order, and the count of non-leaf module calls."""

    calls: list[LayerCall]
    module_calls: int


def _jsonable(value: Any) -> Any:
    """``value`` as JSON (tuples to lists); anything else by its repr."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, tuple | list | torch.Size):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.dtype):
        return str(value)
    return repr(value) if not isinstance(value, Tensor) else "tensor"


def module_fields(module: nn.Module) -> dict[str, Any]:
    """The configuration of ``module`` that decides its cost (see ``MODULE_FIELDS``).

    Example:
        >>> module_fields(nn.Linear(4, 3))
        {'bias': True, 'in_features': 4, 'out_features': 3}
    """
    for kind, names in MODULE_FIELDS:
        if isinstance(module, kind):
            found = {n: _jsonable(getattr(module, n)) for n in names if hasattr(module, n)}
            if isinstance(module, nn.modules.conv._ConvNd | nn.Linear):
                found["bias"] = module.bias is not None
            return dict(sorted(found.items()))
    return {"extra_repr": module.extra_repr()}


def module_key(
    module: nn.Module, args: tuple[Any, ...], threads: int, kwargs: dict[str, Any] | None = None
) -> LayerKey:
    """The key of one call of a leaf ``module`` on ``args`` (and ``kwargs``).

    Example:
        >>> k = module_key(nn.Conv2d(3, 8, 3, groups=1), (torch.zeros(1, 3, 8, 8),), 1)
        >>> k.op, k.fields["kernel_size"], k.inputs[0].shape
        ('Conv2d', [3, 3], (1, 3, 8, 8))
    """
    tensors = [t for t in tree_leaves((args, kwargs or {})) if isinstance(t, Tensor)]
    specs = tuple(InputSpec.of(t) for t in tensors)
    fields = module_fields(module)
    if kwargs:
        fields["kwargs"] = {k: _jsonable(v) for k, v in sorted(kwargs.items())}
    return LayerKey(type(module).__name__, specs, fields, threads)


def function_key(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], threads: int
) -> LayerKey:
    """The key of one functional op: its name, tensor inputs, and every other argument.

    Example:
        >>> function_key(torch.add, (torch.zeros(2, 3), 1.0), {}, 1).fields
        {'args': ['tensor', 1.0], 'kwargs': {}}
    """
    tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
    name = getattr(func, "__name__", None) or type(func).__name__
    extra = {"args": _jsonable(list(args)), "kwargs": {k: _jsonable(v) for k, v in kwargs.items()}}
    return LayerKey(FUNCTION_PREFIX + name, tuple(InputSpec.of(t) for t in tensors), extra, threads)


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


class _Recorder(TorchFunctionMode):
    """Hooks and a function mode that record leaf calls and functional ops between them."""

    def __init__(self, threads: int, known: Callable[[LayerKey], bool]) -> None:
        super().__init__()
        self.threads, self.known = threads, known
        self.calls: list[LayerCall] = []
        self.kept: set[LayerKey] = set()
        self.depth = 0  # > 0 while a leaf module runs
        self.module_calls = 0
        self.functions = 0

    def _add(self, name: str, key: LayerKey, fn: Callable[..., Any], args: tuple) -> None:
        keep = not self.known(key) and key not in self.kept
        if keep:
            self.kept.add(key)
        self.calls.append(LayerCall(name, key, fn if keep else None, args if keep else None))

    def leaf_pre(self, name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.depth += 1  # first: the key's shape reads below must not be recorded as ops
        if self.depth == 1:
            fn = functools.partial(module, **kwargs) if kwargs else module
            self._add(name, module_key(module, args, self.threads, kwargs), fn, args)

    def leaf_post(self) -> None:
        self.depth -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors_in = any(isinstance(t, Tensor) for t in tree_leaves((args, kwargs)))
        if self.depth == 0 and tensors_in and isinstance(out, Tensor):
            key = function_key(func, args, kwargs, self.threads)
            self.functions += 1

            def replay(*a: Any, func: Any = func, kwargs: dict = kwargs) -> Any:
                return func(*a, **kwargs)

            self._add(f"{key.op}#{self.functions}", key, replay, tuple(args))
        return out


@contextmanager
def _hooks(model: nn.Module, rec: _Recorder) -> Iterator[None]:
    handles = []
    for name, module in model.named_modules():
        if _is_leaf(module):
            pre = module.register_forward_pre_hook(
                lambda m, a, k, name=name: rec.leaf_pre(name, m, a, k), with_kwargs=True
            )
            post = module.register_forward_hook(lambda m, a, o: rec.leaf_post())
            handles += [pre, post]
        else:
            counter = lambda m, a: setattr(rec, "module_calls", rec.module_calls + 1)  # noqa: E731
            handles.append(module.register_forward_pre_hook(counter))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def walk_layers(
    model: nn.Module,
    example_input: Any,
    *,
    threads: int,
    known: Callable[[LayerKey], bool] = lambda key: False,
) -> Walk:
    """Run ``model`` once (eval, inference mode) and list its layer calls in order.

    Args:
        model: the model; not changed (hooks removed, training flags and RNG restored).
        example_input: tensor, tuple or dict, at the batch size to key by.
        threads: torch threads to record in the keys.
        known: keys for which no replay is needed; the first call of every other key keeps
            its module (or function) and inputs in ``LayerCall.fn`` / ``.args``.

    Returns:
        The :class:`Walk`.

    Raises:
        ModelError: the model fails on the input (one line: input shape, module, error).
    """
    rec = _Recorder(threads, known)
    with restored_state(model, example_input, train=False), torch.inference_mode():
        try:
            with _hooks(model, rec), rec:
                call_model(model, example_input)
        except ModelError:
            raise
        except Exception as exc:
            raise model_error(model, example_input, None, exc) from exc  # type: ignore[arg-type]
    return Walk(rec.calls, rec.module_calls)
