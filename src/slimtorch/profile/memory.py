"""Activation memory of inference and total memory of a training step.

Inference (``activation_memory``) replays the trace's ``StorageLog`` in the real execution
order; it does not run the model again. Liveness rules:

- a storage is live from the op that allocates it through its last use as an op input; a
  storage nobody reads is live only during the op that allocated it;
- model inputs are live from before the first op through their last use;
- storages holding the model output stay live to the end;
- views share their base storage (storages are counted, not tensors), and in-place ops
  allocate nothing;
- parameters, buffers and constants are not activations; tensors computed from them during the
  forward (``weight * mask`` of a pruning hook) are allocations and count.

``timeline[i]`` is the live activation bytes while op ``i`` runs: its inputs have not been freed
yet and its outputs are allocated. The peak is the largest entry, so a branch's skip tensor that
waits for the residual add is counted at every op in between.

Training (``training_memory``) adds up, for one step of a standard optimizer:
weights (parameters and buffers) + gradients (one per trainable parameter element) + optimizer
state (``OPTIMIZER_STATES`` copies of every trainable parameter: Adam's two moments, SGD
momentum's buffer; Adam's scalar step counters are ignored) + activations saved for backward.
Saved activations are measured, not modelled: one forward in train mode with grad enabled,
under ``torch.autograd.graph.saved_tensors_hooks``, sums the bytes of every distinct storage
autograd saves that is not a parameter or buffer (no backward is run). The forward runs through
``torch.func.functional_call`` with cloned buffers, so BatchNorm running statistics of the model
are not updated; training flags and the RNG state are restored.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from slimtorch.core.recorder import storage_ref, tensor_bytes
from slimtorch.core.trace import ExampleInput, Trace, model_error, restored_state
from slimtorch.errors import ConfigError

OPTIMIZER_STATES: dict[str, int] = {"adam": 2, "sgd-momentum": 1, "sgd": 0}


@dataclass(frozen=True)
class ActivationMemory:
    """Peak live activation bytes of one inference and where it happens."""

    peak_bytes: int
    peak_op_index: int  # -1 when the model ran no op
    peak_module: str
    input_bytes: int
    output_bytes: int
    timeline: tuple[int, ...]  # live activation bytes while each op runs


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes held during one training step, by kind."""

    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    saved_activations_bytes: int
    total_bytes: int


def _lifetimes(trace: Trace) -> dict[int, tuple[int, int, int]]:
    """Storage id -> (first op, last op, nbytes) under the liveness rules above."""
    log, n = trace.storage_log, len(trace.storage_log.events)
    life = {uid: (0, 0, nbytes) for uid, nbytes in log.inputs}
    for i, event in enumerate(log.events):
        for uid, nbytes in event.created:
            life[uid] = (i, i, nbytes)
        for uid in event.used:
            first, _, nbytes = life[uid]
            life[uid] = (first, i, nbytes)
    for uid in log.outputs:
        first, _, nbytes = life[uid]
        life[uid] = (first, max(n - 1, 0), nbytes)
    return life


def activation_memory(trace: Trace) -> ActivationMemory:
    """Peak activation memory of inference, replaying the traced execution order.

    Args:
        trace: a ``Trace`` from ``trace_model`` (it carries the storage events).

    Returns:
        The ``ActivationMemory``: peak bytes, the op and module at the peak, input and output
        bytes, and the per-op timeline.

    Example:
        >>> from slimtorch.core.trace import trace_model
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        >>> activation_memory(trace_model(m, torch.zeros(1, 4))).peak_bytes  # linear + relu out
        64
    """
    log, n = trace.storage_log, len(trace.storage_log.events)
    delta = [0] * (n + 1)
    for first, last, nbytes in _lifetimes(trace).values():
        delta[first] += nbytes
        delta[last + 1] -= nbytes
    timeline = tuple(accumulate(delta[:n]))
    input_bytes = sum(nbytes for _, nbytes in log.inputs)
    sizes = {uid: nb for e in log.events for uid, nb in e.created} | dict(log.inputs)
    output_bytes = sum(sizes[uid] for uid in log.outputs)
    if not timeline:
        return ActivationMemory(input_bytes, -1, "", input_bytes, output_bytes, ())
    peak = max(timeline)
    index = timeline.index(peak)
    return ActivationMemory(
        peak, index, trace.ops[index].module, input_bytes, output_bytes, timeline
    )


def _unique_bytes(tensors: list[Tensor]) -> int:
    seen: dict[Any, int] = {}
    for t in tensors:
        ref = storage_ref(t)
        seen.setdefault(id(t) if ref is None else ref.cdata, tensor_bytes(t))
    return sum(seen.values())


def saved_activation_bytes(model: nn.Module, example_input: ExampleInput) -> int:
    """Bytes of distinct non-parameter storages autograd saves in one train-mode forward."""
    state = [*model.parameters(), *model.buffers()]
    pinned = [r for r in map(storage_ref, state) if r is not None]
    state_keys = {r.cdata for r in pinned}
    saved: dict[int, int] = {}
    refs = []  # keeps saved storages' addresses unique while we count

    def pack(t: Tensor) -> Tensor:
        ref = storage_ref(t)
        if ref is not None and ref.cdata not in state_keys:
            refs.append(ref)
            saved.setdefault(ref.cdata, t.untyped_storage().nbytes())
        return t

    buffers = {name: b.clone() for name, b in model.named_buffers()}
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    kwargs = example_input if isinstance(example_input, dict) else None
    with restored_state(model, example_input, train=True):
        try:
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, _same):
                functional_call(model, buffers, () if kwargs else args, kwargs, strict=False)
        except Exception as err:
            raise model_error(model, example_input, None, err) from err
    return sum(saved.values())


def _same(t: Tensor) -> Tensor:
    return t


def training_memory(
    model: nn.Module, example_input: ExampleInput, optimizer: str = "adam"
) -> TrainingMemory:
    """Memory of one training step: weights, gradients, optimizer state, saved activations.

    Args:
        model: any ``nn.Module``; not changed (buffers are cloned, flags restored).
        example_input: one batch, as for ``trace_model``.
        optimizer: ``"adam"`` (2 states per parameter), ``"sgd-momentum"`` (1) or ``"sgd"`` (0).

    Returns:
        The ``TrainingMemory`` in bytes; ``total_bytes`` is the sum of the four parts.

    Raises:
        ConfigError: unknown optimizer.
        ModelError: the model raised on the input.

    Example:
        >>> tm = training_memory(nn.Linear(4, 2), torch.zeros(3, 4), optimizer="sgd")
        >>> tm.weights_bytes, tm.gradients_bytes, tm.optimizer_bytes
        (40, 40, 0)
    """
    if optimizer not in OPTIMIZER_STATES:
        known = ", ".join(OPTIMIZER_STATES)
        raise ConfigError(f"optimizer: expected one of {known}, got {optimizer!r}")
    weights = _unique_bytes([*model.parameters(), *model.buffers()])
    grads = _unique_bytes([p for p in model.parameters() if p.requires_grad])
    states = OPTIMIZER_STATES[optimizer] * grads
    saved = saved_activation_bytes(model, example_input)
    return TrainingMemory(weights, grads, states, saved, weights + grads + states + saved)
