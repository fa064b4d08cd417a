"""Save and load integer-only models: one safetensors file whose metadata holds the program.

Layout: a standard safetensors file (8-byte header length, JSON header, tensor bytes). Tensors
are named ``"<step>.<tensor>"`` (int8 weights, int32 biases, int64 multipliers and shifts,
float32 scales). The safetensors metadata key ``"slimtorch"`` holds a JSON document:
``{"format": FORMAT_NAME, "version": FORMAT_VERSION, "input_shape": [...], "backend": ...,
"reduce_range": ..., "steps": [{"op": ..., "attrs": {...}, "tensors": [...]}, ...], "sha256":
<of the tensor bytes>, "data": {"data": ..., "seed": ..., "input_shape": ..., "num_classes":
...}}`` (``data``: what the model was calibrated and scored on, :mod:`slimtorch.data.record`;
optional). ``reduce_range`` (true: every activation fits 7 bits, so torch's engines run it
exactly on every CPU; false: 8-bit activations, which run on the reference kernels where the
engine saturates) is derived from the steps' ``q_max`` and written for readers of the header;
the steps themselves carry the ranges. Writes are atomic; a truncated, corrupted or foreign
file raises ``ModelError``.

Example:
    >>> import tempfile, pathlib, torch
    >>> from slimtorch.quantize.integer import IntegerModel, Step
    >>> steps = [Step("quantize", attrs={"scale": 0.1, "zero_point": 0, "q_min": 0, "q_max": 255}),
    ...          Step("dequantize", {"scale": torch.tensor([0.1])})]
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "int8.safetensors"
    >>> _ = save_integer_model(IntegerModel(steps, (2,)), path)
    >>> [s.op for s in load_integer_model(path).steps]
    ['quantize', 'dequantize']
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from slimtorch.errors import ModelError
from slimtorch.io import atomic_write_bytes
from slimtorch.quantize.integer import IntegerModel, Step

FORMAT_NAME = "slimtorch-integer-model"
FORMAT_VERSION = 1
METADATA_KEY = "slimtorch"
HEADER_LENGTH_BYTES = 8  # safetensors: little-endian u64 header size


def save_integer_model(
    model: IntegerModel, path: str | os.PathLike[str], data: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to ``path`` atomically.

    Args:
        model: the integer model.
        path: target file (``.safetensors``).
        data: the data it was made with (``slimtorch.data.record.data_record``), or None.

    Returns:
        The written path.
    """
    tensors, steps = {}, []
    for i, st in enumerate(model.steps):
        for name, t in st.tensors.items():
            tensors[f"{i}.{name}"] = t.contiguous()
        steps.append({"op": st.op, "attrs": st.attrs, "tensors": sorted(st.tensors)})
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "backend": model.backend,
        "input_shape": list(model.input_shape),
        "reduce_range": model.reduce_range,
        "steps": steps,
        "sha256": hashlib.sha256(st_save(tensors)).hexdigest(),
    }
    if data is not None:
        doc["data"] = data
    data = st_save(tensors, metadata={METADATA_KEY: json.dumps(doc)})
    return atomic_write_bytes(path, data)


def _metadata(data: bytes, path: Path) -> dict[str, Any]:
    if len(data) < HEADER_LENGTH_BYTES:
        raise ModelError(f"{path}: truncated (not a safetensors file)")
    (n,) = struct.unpack("<Q", data[:HEADER_LENGTH_BYTES])
    try:
        header = json.loads(data[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + n])
        doc = json.loads(header["__metadata__"][METADATA_KEY])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ModelError(f"{path}: not a slimtorch integer model (bad or missing header)") from None
    if doc.get("format") != FORMAT_NAME or doc.get("version") != FORMAT_VERSION:
        raise ModelError(
            f"{path}: expected {FORMAT_NAME} version {FORMAT_VERSION}, got "
            f"{doc.get('format')!r} version {doc.get('version')!r}"
        )
    return doc


def integer_model_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON document of a file written by :func:`save_integer_model` (no tensors decoded).

    Args:
        path: the file.

    Returns:
        The document: ``format``, ``version``, ``backend``, ``input_shape``, ``steps``, and
        ``reduce_range`` and ``data`` when the writer recorded them.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelError(f"{path}: cannot read ({err.strerror})") from None
    return _metadata(data, path)


def load_integer_model(path: str | os.PathLike[str]) -> IntegerModel:
    """Read a model written by :func:`save_integer_model` (checksum verified).

    Args:
        path: the file.

    Returns:
        The ``IntegerModel``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelError(f"{path}: cannot read ({err.strerror})") from None
    doc = _metadata(data, path)
    try:
        tensors = st_load(data)
    except Exception:
        raise ModelError(f"{path}: corrupted tensor data") from None
    if hashlib.sha256(st_save(tensors)).hexdigest() != doc.get("sha256"):
        raise ModelError(f"{path}: checksum mismatch (the file is corrupted)")
    steps = [
        Step(s["op"], {t: tensors[f"{i}.{t}"] for t in s["tensors"]}, s["attrs"])
        for i, s in enumerate(doc["steps"])
    ]
    return IntegerModel(steps, tuple(doc["input_shape"]), doc.get("backend", "reference"))
