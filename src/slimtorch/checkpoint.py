"""Model checkpoints: ``model.safetensors`` (weights) + ``model.json`` (how to rebuild them).

A checkpoint is a folder with two files:

- ``model.safetensors``: the model's ``state_dict`` in safetensors format (weight-normalized
  layers keep their ``parametrizations.weight.original0/1`` keys).
- ``model.json``: ``{"format": "slimtorch-checkpoint", "version": 2, "spec": {...},
  "metrics": {...}, "weights": {"file": "model.safetensors", "bytes": N, "sha256": "..."},
  "header_sha256": "..."}``. ``spec`` is a :class:`~slimtorch.models.ModelSpec` dict, so
  ``build_model`` rebuilds the architecture before the weights are loaded. ``header_sha256``
  is the SHA-256 of the header's canonical JSON (sorted keys, no spaces) without that field,
  so an edited ``model.json`` (metrics, seed, data, spec) is refused, not silently used.
  Version 1 headers (no ``header_sha256``) still load, with a warning.

Opening a checkpoint never runs code it names: its spec may name only zoo models and
slimtorch's own architectures unless ``trust_code=True`` (``--trust-code``); see
:mod:`slimtorch.models.trust`.

Both files are written atomically (weights first, then the header that vouches for them), and
loading checks the byte count and SHA-256 before building anything, so a truncated or corrupted
file gives a clear ModelError, never a half-loaded model.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from slimtorch.errors import ConfigError, ModelError
from slimtorch.io import atomic_write_bytes, atomic_write_text
from slimtorch.models import ModelSpec, build_model

FORMAT_NAME = "slimtorch-checkpoint"
FORMAT_VERSION = 2
UNCHECKED_VERSION = 1  # written before headers carried their own checksum
HEADER_SUM_KEY = "header_sha256"
WEIGHTS_FILE = "model.safetensors"
HEADER_FILE = "model.json"


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict as independent, contiguous CPU tensors (safetensors refuses shared ones)."""
    state = model.state_dict()
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"cannot save non-tensor state entries: {', '.join(bad)}")
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _json_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(metrics or {}), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"checkpoint metrics must be JSON-serializable and finite: {exc}"
        ) from exc


def save_checkpoint(
    out_dir: str | os.PathLike[str],
    model: nn.Module,
    spec: ModelSpec,
    metrics: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``out_dir`` atomically.

    Args:
        out_dir: the checkpoint folder (created if missing).
        model: the model whose ``state_dict`` is saved; it must be what ``build_model(spec)``
            builds, so that loading can rebuild it.
        spec: how to rebuild the architecture.
        metrics: JSON-serializable numbers to keep with the weights (accuracy, loss, ...).
        overwrite: replace an existing checkpoint in ``out_dir``; False refuses, so a
            checkpoint that was an input is never clobbered by accident.

    Returns:
        The checkpoint folder.

    Example:
        >>> import tempfile
        >>> from slimtorch.models import build_model, make_spec
        >>> spec = make_spec("lenet5")
        >>> folder = save_checkpoint(tempfile.mkdtemp(), build_model(spec), spec, {"acc": 0.9})
        >>> sorted(p.name for p in folder.iterdir())
        ['model.json', 'model.safetensors']
    """
    folder = Path(out_dir)
    existing = [n for n in (WEIGHTS_FILE, HEADER_FILE) if (folder / n).exists()]
    if existing and not overwrite:
        raise ModelError(
            f"{folder} already holds a checkpoint ({', '.join(existing)}); "
            "pass overwrite=True or choose another folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    header_metrics = _json_metrics(metrics)
    data = safetensors.torch.save(_state_tensors(model), metadata={"format": FORMAT_NAME})
    atomic_write_bytes(folder / WEIGHTS_FILE, data)
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "metrics": header_metrics,
        "weights": {"file": WEIGHTS_FILE, "bytes": len(data), "sha256": _sha256(data)},
    }
    header[HEADER_SUM_KEY] = _header_sha256(header)
    atomic_write_text(folder / HEADER_FILE, json.dumps(header, indent=2) + "\n")
    return folder


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _header_sha256(header: dict[str, Any]) -> str:
    """SHA-256 of the header's canonical JSON, without its own checksum field."""
    body = {k: v for k, v in header.items() if k != HEADER_SUM_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _sha256(text.encode("ascii"))


def _checkpoint_folder(path: Path) -> Path:
    """The folder of a checkpoint given as the folder itself or either of its files."""
    if path.is_dir():
        return path
    if path.name in (WEIGHTS_FILE, HEADER_FILE):
        return path.parent
    if not path.exists():
        raise ModelError(f"checkpoint {path} does not exist")
    raise ModelError(
        f"{path} is not a checkpoint: expected a folder, {HEADER_FILE} or {WEIGHTS_FILE}"
    )


def _read_header(path: Path) -> dict[str, Any]:
    """Parse and check ``model.json``: format name, version, weights entry."""
    if not path.is_file():
        raise ModelError(f"checkpoint header {path} is missing")
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"checkpoint header {path} is unreadable: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ModelError(f"{path} is not a {FORMAT_NAME} header")
    version = header.get("version")
    if not isinstance(version, int) or version < 1:
        raise ModelError(f"{path} has an invalid version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelError(
            f"{path} is checkpoint version {version}, newer than this slimtorch reads "
            f"(up to {FORMAT_VERSION}); upgrade slimtorch to load it"
        )
    _check_header_sum(header, version, path)
    weights = header.get("weights")
    if not isinstance(weights, dict) or not {"bytes", "sha256"} <= set(weights):
        raise ModelError(f"{path} lacks the weights' size and sha256")
    if not isinstance(weights["bytes"], int) or not isinstance(weights["sha256"], str):
        raise ModelError(f"{path}: weights.bytes must be an int and weights.sha256 a string")
    if not isinstance(header.get("metrics", {}), dict):
        raise ModelError(f"{path}: metrics must be a JSON object")
    return header


def _check_header_sum(header: dict[str, Any], version: int, path: Path) -> None:
    """Refuse an edited header; warn once for a version-1 header that has no checksum."""
    if version == UNCHECKED_VERSION and HEADER_SUM_KEY not in header:
        warnings.warn(
            f"{path} is a version-1 checkpoint header without a checksum: edits to it cannot "
            "be detected; save the model again to add one",
            stacklevel=3,
        )
        return
    if header.get(HEADER_SUM_KEY) != _header_sha256(header):
        raise ModelError(
            f"{path} was edited or corrupted: its {HEADER_SUM_KEY} does not match its contents "
            "(metrics, spec or weights entry changed after it was written)"
        )


def _read_weights(path: Path, expected: dict[str, Any]) -> bytes:
    """Read ``model.safetensors`` and check it against the header's size and SHA-256."""
    if not path.is_file():
        raise ModelError(f"checkpoint weights {path} are missing")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) != expected["bytes"]:
        raise ModelError(
            f"{path} is truncated or altered: {len(data)} bytes, header says {expected['bytes']}"
        )
    if _sha256(data) != expected["sha256"]:
        raise ModelError(f"{path} is corrupted: its sha256 does not match {HEADER_FILE}")
    return data


def _load_state(model: nn.Module, data: bytes, path: Path) -> None:
    """Load safetensors bytes into ``model`` strictly; mismatches name the file."""
    try:
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own error types on malformed payloads
        raise ModelError(f"{path} is not a valid safetensors file: {exc}") from exc
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ModelError(f"{path} does not fit the model its spec builds: {detail}") from exc


def _spec_of(header: dict[str, Any], header_path: Path) -> ModelSpec:
    try:
        return ModelSpec.from_dict(header.get("spec"))
    except ConfigError as exc:
        raise ModelError(f"{header_path} has an invalid model spec: {exc}") from exc


def read_checkpoint_header(
    path: str | os.PathLike[str],
) -> tuple[ModelSpec, dict[str, Any]]:
    """The spec and metrics of a checkpoint, its header validated (format, version, checksum),
    without reading the weights or building anything.

    Args:
        path: the checkpoint folder or either of its two files.

    Returns:
        ``(spec, metrics)``.

    Raises:
        ModelError: the header is missing, unreadable, edited or of a newer version.
    """
    header_path = _checkpoint_folder(Path(path)) / HEADER_FILE
    header = _read_header(header_path)
    spec = _spec_of(header, header_path)
    return spec, dict(header.get("metrics") or {})


def load_checkpoint(
    path: str | os.PathLike[str], *, trust_code: bool | None = None
) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Rebuild a model from a checkpoint folder (or its ``model.json`` / ``model.safetensors``).

    Args:
        path: the checkpoint folder or either of its two files.
        trust_code: let the spec name a third-party ``module:factory`` (it is imported and
            run); None means the policy in force (the CLI's ``--trust-code``, else False).

    Returns:
        ``(model, spec, metrics)``; the model is on the CPU in eval mode.

    Raises:
        ModelError: a file is missing, unreadable, truncated, corrupted or edited (the message
            names it), the checkpoint is a newer version, the spec names a factory the trust
            policy refuses, or the weights do not fit the spec.

    Example:
        >>> import tempfile
        >>> from slimtorch.models import build_model, make_spec
        >>> spec = make_spec("lenet300")
        >>> folder = save_checkpoint(tempfile.mkdtemp(), build_model(spec), spec, {"acc": 0.5})
        >>> model, spec2, metrics = load_checkpoint(folder / "model.json")
        >>> spec2 == spec, metrics
        (True, {'acc': 0.5})
    """
    folder = _checkpoint_folder(Path(path))
    header_path = folder / HEADER_FILE
    header = _read_header(header_path)
    weights_path = folder / WEIGHTS_FILE
    data = _read_weights(weights_path, header["weights"])
    spec = _spec_of(header, header_path)
    model = build_model(spec, trust_code=trust_code, where=str(header_path))
    _load_state(model, data, weights_path)
    metrics = header.get("metrics") or {}
    return model.eval(), spec, dict(metrics)
