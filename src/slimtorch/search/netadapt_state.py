"""NetAdapt's resumable state file: the search after its last finished iteration.

One safetensors file: the current (pruned, short-term fine-tuned) model's ``state_dict`` as
its tensors, and a JSON header in the metadata under ``"netadapt"``::

    {"format": "slimtorch-netadapt-state", "version": 1, "config": {...},
     "fingerprint": "<sha256 of the original model, the data and the example input>",
     "iteration": k, "channels": {module: {"in": n, "out": n}},
     "original_latency": s, "budget": s, "trajectory": [...]}

``channels`` are the current model's module sizes (:func:`slimtorch.prune.surgery.channel_sizes`),
so the architecture is rebuilt from the original model before the weights load. The file is
written atomically after each finished iteration; a search started with the same config (up to
``max_iterations``), model and data resumes from it. Every iteration's seeds derive from the
config's seed and the iteration number, so a resumed search gives the same result as one that
never stopped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from slimtorch.errors import ConfigError, ModelError, first_line
from slimtorch.io import atomic_write_bytes
from slimtorch.prune.surgery import channel_sizes, shrink_module

STATE_FORMAT = "slimtorch-netadapt-state"
STATE_VERSION = 1
STATE_KEY = "netadapt"
RESUMABLE_CHANGES = ("max_iterations",)  # config fields a resumed search may change
_RESIZABLE_IO = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # sized by "in" and "out"


@dataclass(frozen=True)
class SavedState:
    """A state file's contents: ``header`` (JSON, see the module docstring) and the weights."""

    header: dict[str, Any]
    weights: dict[str, Tensor]


def _tensor_bytes(t: Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def fingerprint(model: nn.Module, tensors: list[Tensor], example_input: Any) -> str:
    """SHA-256 of the model's class, state (names, dtypes, shapes, bytes), the data tensors and
    the example input's shapes: what a state file must have been written for.

    Example:
        >>> m = nn.Linear(2, 1)
        >>> fingerprint(m, [], torch.zeros(1, 2)) == fingerprint(m, [], torch.zeros(1, 2))
        True
    """
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, value in model.state_dict().items():
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(_tensor_bytes(value))
    for t in tensors:
        digest.update(f"{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(_tensor_bytes(t))
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    digest.update(str([tuple(x.shape) for x in inputs if isinstance(x, Tensor)]).encode())
    return digest.hexdigest()


def write_state(path: str | os.PathLike[str], header: dict[str, Any], model: nn.Module) -> Path:
    """Write ``header`` (format and version added) and ``model``'s weights atomically."""
    weights = {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()
    }
    full = {"format": STATE_FORMAT, "version": STATE_VERSION, **header}
    meta = {STATE_KEY: json.dumps(full, allow_nan=False, sort_keys=True)}
    return atomic_write_bytes(path, safetensors.torch.save(weights, metadata=meta))


def read_state(path: str | os.PathLike[str]) -> SavedState:
    """Read a state file; a truncated, foreign or newer one is a one-line ModelError."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no __iter__)
        header = json.loads(meta[STATE_KEY])
    except (OSError, KeyError, ValueError, safetensors.SafetensorError) as exc:
        raise ModelError(f"{path}: not a readable NetAdapt state file: {first_line(exc)}") from exc
    if header.get("format") != STATE_FORMAT:
        raise ModelError(f"{path}: not a NetAdapt state file (format {header.get('format')!r})")
    if not isinstance(header.get("version"), int) or header["version"] > STATE_VERSION:
        raise ModelError(
            f"{path}: state version {header.get('version')!r} is newer than {STATE_VERSION}"
        )
    return SavedState(header, weights)


def check_state(
    path: str | os.PathLike[str], header: dict[str, Any], config: dict[str, Any], expected: str
) -> None:
    """Refuse a state written by another config (any field but :data:`RESUMABLE_CHANGES`) or
    for another model, data or example input (``expected``: this run's :func:`fingerprint`)."""
    theirs = header.get("config", {})
    for key in sorted(set(theirs) | set(config)):
        if key not in RESUMABLE_CHANGES and theirs.get(key) != config.get(key):
            raise ConfigError(
                f"state file {path} was written by a NetAdapt config with {key}="
                f"{theirs.get(key)!r}, this run has {config.get(key)!r}; delete it or pick "
                "another state path"
            )
    if header.get("fingerprint") != expected:
        raise ConfigError(
            f"state file {path} was written for another model, data or example input; "
            "delete it or pick another state path"
        )


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def rebuild(original: nn.Module, channels: dict[str, dict[str, int]],
            weights: dict[str, Tensor]) -> nn.Module:  # fmt: skip
    """A copy of ``original`` with every module resized to ``channels`` and ``weights`` loaded.

    Raises:
        ModelError: the sizes or weights do not fit ``original``'s architecture.
    """
    model = copy.deepcopy(original)
    now = channel_sizes(model)
    try:
        for name, size in channels.items():
            if now.get(name) == size:
                continue
            module = model.get_submodule(name)
            inp = torch.arange(size["in"]) if isinstance(module, _RESIZABLE_IO) else None
            _replace(model, name, shrink_module(module, torch.arange(size["out"]), inp))
        model.load_state_dict(weights, strict=True)
    except (AttributeError, RuntimeError, KeyError) as exc:
        raise ModelError(f"the NetAdapt state does not fit this model: {first_line(exc)}") from exc
    return model
