"""Trace a model once: every aten op in execution order, its cost, bytes and module.

``trace_model`` runs the model on the example input under ``torch.no_grad()`` in eval mode
inside ``recorder.OpRecorder`` and counts each op with the rules in ``counting`` (the rule table
lives in that module's docstring). It never mutates the model: hooks are removed, every module's
training flag is restored, and the global RNG state is restored.

Bytes per op (for rooflines and energy): ``weight_bytes`` = inputs that are static (parameters,
buffers, or tensors computed only from them, e.g. ``W.t()``); ``input_bytes`` = the other
inputs; ``output_bytes`` = outputs (the written tensor of an in-place op). Each is
``numel * element_size`` of the tensor as passed. View ops (``view``, ``t``, ``expand``, ...)
move no data and record 0 bytes.

Layers are the modules that executed ops directly (innermost attribution), plus leaf modules
that ran without any op (``Dropout`` in eval, ``Identity``), in first-execution order. A module
called several times (a shared ``ReLU``) is one layer with the sum of its calls; its shapes come
from the first call.

The trace also keeps a ``StorageLog`` (which storages each op allocates and reads) so that
``memory.activation_memory(trace)`` can replay liveness without running the model again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from slimtorch.core.counting import conv_output_size
from slimtorch.core.recorder import (
    OpRecorder,
    RawOp,
    RecorderError,
    StorageTable,
    hooked_modules,
    module_hooks,
    parametrized_params,
    register_model_storages,
    tensors_in,
    torch_devices,
)
from slimtorch.errors import ModelError

__all__ = [
    "LayerCount",
    "OpRecord",
    "StorageEvent",
    "StorageLog",
    "Trace",
    "call_model",
    "conv_output_size",
    "describe_input",
    "trace_model",
]

ExampleInput = Tensor | tuple[Tensor, ...] | dict[str, Tensor]


@dataclass(frozen=True)
class OpRecord:
    """One aten op in execution order; ``module`` is the innermost module ("" = root)."""

    index: int
    op: str
    module: str
    macs: int
    flops: int
    ops: int
    effective_macs: int
    input_bytes: int
    output_bytes: int
    weight_bytes: int
    out_shapes: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class LayerCount:
    """Totals of one module's directly executed ops; ``kind`` is for display only."""

    name: str
    kind: str
    params: int
    macs: int
    flops: int
    ops: int
    effective_macs: int
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    input_bytes: int
    output_bytes: int
    weight_bytes: int


@dataclass(frozen=True)
class StorageEvent:
    """Storages one op allocated ``(id, nbytes)`` and the activation storages it read/wrote."""

    created: tuple[tuple[int, int], ...] = ()
    used: tuple[int, ...] = ()


@dataclass(frozen=True)
class StorageLog:
    """Activation storage events, one per op (aligned with ``Trace.ops``).

    Parameters, buffers and constants are not activations and never appear here.
    """

    events: tuple[StorageEvent, ...] = ()
    inputs: tuple[tuple[int, int], ...] = ()  # model input storages (id, nbytes)
    outputs: tuple[int, ...] = ()  # storage ids holding the model output


@dataclass(frozen=True)
class Trace:
    """Everything one traced forward pass tells: per-op, per-layer and total counts."""

    layers: tuple[LayerCount, ...]
    ops: tuple[OpRecord, ...]
    total_params: int
    total_macs: int
    total_flops: int
    total_ops: int
    total_effective_macs: int
    output_shape: tuple[int, ...] | None
    storage_log: StorageLog = field(default_factory=StorageLog)
    uncounted_ops: tuple[str, ...] = ()  # aten ops that ran but have no counting rule


def describe_input(example_input: Any) -> str:
    """Shapes of an example input for error messages: ``[1, 3, 8, 8]``, ``{'x': [2, 4]}``."""
    if isinstance(example_input, Tensor):
        return str(list(example_input.shape))
    if isinstance(example_input, dict):
        items = (f"{k!r}: {describe_input(v)}" for k, v in example_input.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(example_input, tuple):
        return "(" + ", ".join(describe_input(v) for v in example_input) + ")"
    return type(example_input).__name__


def call_model(model: nn.Module, example_input: Any) -> Any:
    """``model(x)``, ``model(*x)`` for a tuple, ``model(**x)`` for a dict."""
    if isinstance(example_input, dict):
        return model(**example_input)
    if isinstance(example_input, tuple):
        return model(*example_input)
    return model(example_input)


@contextmanager
def restored_state(model: nn.Module, example_input: Any, *, train: bool) -> Iterator[None]:
    """Set every module's training flag to ``train``; restore flags and the RNG state after."""
    flags = [(m, m.training) for m in model.modules()]
    devices = torch_devices([*model.parameters(), *tensors_in(example_input)])
    try:
        with torch.random.fork_rng(devices=devices):
            model.train(train)
            yield
    finally:
        for m, flag in flags:
            m.training = flag


def model_error(model: nn.Module, example_input: Any, where: str, err: Exception) -> ModelError:
    """A one-line ModelError: input shape, failing module (if known), first error line."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    place = ""  # failing module unknown
    if where == "":
        place = " in the root module"
    elif where is not None:
        place = f" in module {where!r}"
    return ModelError(
        f"{type(model).__name__} failed on input {describe_input(example_input)}{place}: {first}"
    )


def trace_model(model: nn.Module, example_input: ExampleInput) -> Trace:
    """Run ``model`` once on ``example_input`` and count every aten op it executes.

    Args:
        model: any ``nn.Module`` (not changed: hooks removed, training flags restored).
        example_input: a tensor (``model(x)``), a tuple (``model(*x)``) or a dict
            (``model(**x)``).

    Returns:
        The ``Trace``: ops in execution order, layers in first-execution order, totals.

    Raises:
        ModelError: the model raised on the input; the message names the input shape, the
            innermost module that was running, and the first line of the original error.

    Example:
        >>> t = trace_model(nn.Linear(4, 3), torch.zeros(2, 4))
        >>> t.total_macs, t.total_params, t.output_shape
        (24, 15, (2, 3))
    """
    storages = StorageTable()
    recorder = OpRecorder(storages)
    modules = hooked_modules(model)
    register_model_storages(storages, model, example_input)
    with restored_state(model, example_input, train=False), module_hooks(recorder, modules):
        try:
            with torch.no_grad(), recorder:
                output = call_model(model, example_input)
        except RecorderError:
            raise
        except Exception as err:
            where = recorder.stack[-1] if recorder.stack else None
            raise model_error(model, example_input, where, err) from err
    return _build_trace(model, modules, recorder, example_input, output)


def _op_record(index: int, raw: RawOp) -> OpRecord:
    c = raw.count
    return OpRecord(
        index=index,
        op=raw.op,
        module=raw.module,
        macs=c.macs,
        flops=c.flops,
        ops=c.ops,
        effective_macs=c.effective_macs,
        input_bytes=raw.input_bytes,
        output_bytes=raw.output_bytes,
        weight_bytes=raw.weight_bytes,
        out_shapes=raw.out_shapes,
    )


def _layer(name: str, module: nn.Module, ops: list[OpRecord], shapes: tuple) -> LayerCount:
    return LayerCount(
        name=name,
        kind=type(module).__name__,
        params=parametrized_params(module),
        macs=sum(o.macs for o in ops),
        flops=sum(o.flops for o in ops),
        ops=sum(o.ops for o in ops),
        effective_macs=sum(o.effective_macs for o in ops),
        input_shape=shapes[0],
        output_shape=shapes[1],
        input_bytes=sum(o.input_bytes for o in ops),
        output_bytes=sum(o.output_bytes for o in ops),
        weight_bytes=sum(o.weight_bytes for o in ops),
    )


def _storage_log(recorder: OpRecorder, example_input: Any, output: Any) -> StorageLog:
    table = recorder.storages
    inputs = {table.lookup(t)[0]: None for t in tensors_in(example_input)}
    outputs = {table.lookup(t)[0]: None for t in tensors_in(output)}
    return StorageLog(
        events=tuple(StorageEvent(r.created, r.used) for r in recorder.ops),
        inputs=tuple((u, table.activation_bytes[u]) for u in inputs if u is not None),
        outputs=tuple(u for u in outputs if u in table.activation_bytes),
    )


def _build_trace(
    model: nn.Module,
    modules: dict[str, nn.Module],
    recorder: OpRecorder,
    example_input: Any,
    output: Any,
) -> Trace:
    ops = tuple(_op_record(i, raw) for i, raw in enumerate(recorder.ops))
    by_module: dict[str, list[OpRecord]] = {name: [] for name in recorder.order}
    for o in ops:
        by_module[o.module].append(o)
    layers = tuple(
        _layer(name, modules[name], by_module[name], recorder.shapes.get(name, (None, None)))
        for name in recorder.order
    )
    first_out = next((t for t in tree_leaves(output) if isinstance(t, Tensor)), None)
    uncounted = {raw.op: None for raw in recorder.ops if raw.uncounted}
    return Trace(
        layers=layers,
        ops=ops,
        total_params=sum(p.numel() for p in model.parameters()),
        total_macs=sum(o.macs for o in ops),
        total_flops=sum(o.flops for o in ops),
        total_ops=sum(o.ops for o in ops),
        total_effective_macs=sum(o.effective_macs for o in ops),
        output_shape=None if first_out is None else tuple(first_out.shape),
        storage_log=_storage_log(recorder, example_input, output),
        uncounted_ops=tuple(uncounted),
    )
