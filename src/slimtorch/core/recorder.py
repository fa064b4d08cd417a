"""Record every aten op a model runs, in order, with the innermost module running it.

``OpRecorder`` is a ``TorchDispatchMode``: it sees each aten op after PyTorch's composite ops
have decomposed (``F.linear`` -> ``t`` + ``addmm``, ``einsum`` -> ``permute`` + ``bmm``), so any
``nn.Module`` is covered, including attention written with ``@``, ``einsum`` or
``F.scaled_dot_product_attention``. Forward pre-hooks and hooks on every submodule maintain a
stack of qualified module names; each op is attributed to the top of the stack (innermost).
Modules inside a parametrization (``conv.parametrizations.weight``) get no hooks, so computing a
parametrized weight is attributed to the module that owns the weight.

Storages get a stable id for the whole recording: ``StorageWeakRef`` keeps each seen
``StorageImpl`` from being reused, so its address is unique. A storage is *static* if it is a
parameter or buffer, existed before the forward without being a model input (a constant
attribute), or was computed only from static storages (``W.t()``, a pruning ``weight * mask``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.nn.utils import parametrize
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from slimtorch.core.aten_rules import count_op, op_key
from slimtorch.core.counting import OpCount


@dataclass(frozen=True)
class RawOp:
    """One recorded op before it becomes a public ``OpRecord``."""

    op: str
    module: str
    count: OpCount
    input_bytes: int
    output_bytes: int
    weight_bytes: int
    out_shapes: tuple[tuple[int, ...], ...]
    created: tuple[tuple[int, int], ...]  # (storage id, nbytes) allocated by this op
    used: tuple[int, ...]  # activation storage ids this op reads or writes
    uncounted: bool


def tensors_in(tree: Any) -> list[Tensor]:
    """Distinct tensors (by object identity) among the leaves of a pytree, in order."""
    seen: dict[int, Tensor] = {}
    for leaf in tree_leaves(tree):
        if isinstance(leaf, Tensor):
            seen.setdefault(id(leaf), leaf)
    return list(seen.values())


def tensor_bytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def storage_ref(t: Tensor) -> StorageWeakRef | None:
    """A weak reference to ``t``'s storage, or None for tensors without one (sparse, ...)."""
    try:
        return StorageWeakRef(t.untyped_storage())
    except (RuntimeError, NotImplementedError, TypeError):
        return None


class StorageTable:
    """Stable storage ids, their byte sizes (activations only) and which are static."""

    def __init__(self) -> None:
        self._ids: dict[int, int] = {}
        self._refs: list[StorageWeakRef] = []  # pins StorageImpls so addresses stay unique
        self.static: set[int] = set()
        self.activation_bytes: dict[int, int] = {}

    def lookup(self, t: Tensor) -> tuple[int | None, bool]:
        """``(id, is_new)`` for ``t``'s storage; id is None when it has no storage."""
        ref = storage_ref(t)
        if ref is None:
            return None, False
        if ref.cdata in self._ids:
            return self._ids[ref.cdata], False
        self._ids[ref.cdata] = len(self._ids)
        self._refs.append(ref)
        return self._ids[ref.cdata], True

    def add_static(self, t: Tensor) -> None:
        uid, _ = self.lookup(t)
        if uid is not None:
            self.static.add(uid)

    def add_activation(self, t: Tensor) -> int | None:
        uid, _ = self.lookup(t)
        if uid is not None:
            self.activation_bytes[uid] = t.untyped_storage().nbytes()
        return uid

    def is_static(self, t: Tensor) -> bool:
        uid, _ = self.lookup(t)
        return uid is not None and uid in self.static


class RecorderError(RuntimeError):
    """Recording or counting an op failed: a slimtorch bug, not a problem with the model."""


class OpRecorder(TorchDispatchMode):
    """Records ops; attributes them to ``self.stack[-1]`` (``""`` is the root module)."""

    def __init__(self, storages: StorageTable) -> None:
        super().__init__()
        self.storages = storages
        self.stack: list[str] = []
        self.ops: list[RawOp] = []
        self.order: dict[str, None] = {}  # modules in first-execution order
        self.shapes: dict[str, tuple[tuple[int, ...] | None, tuple[int, ...] | None]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        try:
            self._record(func, args, kwargs, out)
        except Exception as err:
            raise RecorderError(f"slimtorch could not count {func}: {err}") from err
        return out

    def _record(self, func, args, kwargs, out) -> None:
        ins, outs = tensors_in((args, kwargs)), tensors_in(out)
        in_ids = [self._input_id(t) for t in ins]
        static_op = all(uid in self.storages.static for uid in in_ids if uid is not None)
        count = count_op(func, args, kwargs, out, self.storages.is_static)
        created = self._outputs(outs, static_op)
        aliasing = bool(outs) and not created and not func._schema.is_mutable
        weights = [t for t, uid in zip(ins, in_ids, strict=True) if uid in self.storages.static]
        module = self.stack[-1] if self.stack else ""
        self.order.setdefault(module, None)
        self.ops.append(
            RawOp(
                op=op_key(func),
                module=module,
                count=count or OpCount(),
                input_bytes=0 if aliasing else sum(map(tensor_bytes, ins)) - _sum_bytes(weights),
                output_bytes=0 if aliasing else sum(map(tensor_bytes, outs)),
                weight_bytes=0 if aliasing else _sum_bytes(weights),
                out_shapes=tuple(tuple(t.shape) for t in tree_leaves(out) if isinstance(t, Tensor)),
                created=created,
                used=tuple(u for u in in_ids if u in self.storages.activation_bytes),
                uncounted=count is None,
            )
        )

    def _input_id(self, t: Tensor) -> int | None:
        """Storage id of an op input; a storage first seen here existed before: static."""
        uid, new = self.storages.lookup(t)
        if new:
            self.storages.static.add(uid)
        return uid

    def _outputs(self, outs: list[Tensor], static_op: bool) -> tuple[tuple[int, int], ...]:
        """Register output storages; returns the newly allocated ones with their sizes."""
        created = []
        for t in outs:
            uid, new = self.storages.lookup(t)
            if uid is None:
                continue
            if new:
                nbytes = t.untyped_storage().nbytes()
                self.storages.activation_bytes[uid] = nbytes
                created.append((uid, nbytes))
            if static_op and new:
                self.storages.static.add(uid)
            elif not static_op:
                self.storages.static.discard(uid)
        return tuple(created)

    def enter(self, name: str, module: nn.Module, args: Any) -> None:
        self.stack.append(name)

    def leave(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if name not in self.shapes:
            self.shapes[name] = (_first_shape((args, kwargs)), _first_shape(output))
        if next(module.children(), None) is None:
            self.order.setdefault(name, None)  # leaves that ran no op (Dropout, Identity)
        while name in self.stack:  # unwinds frames whose forward raised and was caught
            if self.stack.pop() == name:
                break


def _sum_bytes(tensors: list[Tensor]) -> int:
    return sum(map(tensor_bytes, tensors))


def _first_shape(tree: Any) -> tuple[int, ...] | None:
    first = next((t for t in tree_leaves(tree) if isinstance(t, Tensor)), None)
    return None if first is None else tuple(first.shape)


def hooked_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> module for every module except those inside parametrizations."""
    inside: set[int] = set()
    for m in model.modules():
        if parametrize.is_parametrized(m):
            inside.update(id(p) for p in m.parametrizations.modules())
    return {n: m for n, m in model.named_modules() if id(m) not in inside}


@contextmanager
def module_hooks(recorder: OpRecorder, modules: dict[str, nn.Module]) -> Iterator[None]:
    """Install the recorder's enter/leave hooks on ``modules``; always removes them."""
    handles = []
    try:
        for name, m in modules.items():
            handles.append(m.register_forward_pre_hook(partial(recorder.enter, name), prepend=True))
            handles.append(m.register_forward_hook(partial(recorder.leave, name), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def register_model_storages(storages: StorageTable, model: nn.Module, inputs: Any) -> None:
    """Parameters and buffers are static; model inputs are activations."""
    for t in (*model.parameters(), *model.buffers()):
        storages.add_static(t)
    for t in tensors_in(inputs):
        storages.add_activation(t)


def parametrized_params(module: nn.Module) -> int:
    """Parameters a module owns directly, counting parametrized weights' stored originals."""
    own = sum(p.numel() for p in module.parameters(recurse=False))
    if parametrize.is_parametrized(module):
        own += sum(p.numel() for p in module.parametrizations.parameters())
    return own


def torch_devices(tensors: list[Tensor]) -> list[int]:
    """CUDA device indices used by ``tensors`` (for ``torch.random.fork_rng``)."""
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
