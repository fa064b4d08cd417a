"""The compressed model file (``.slim``): one file holding a whole compressed model.

Layout (all integers little-endian; byte by byte in ``docs/format.md``)::

    offset 0   8 bytes   magic  89 53 4C 49 4D 0D 0A 1A  ("\\x89SLIM\\r\\n\\x1a")
    offset 8   u16       format version (1)
    offset 10  u16       flags (bit 0: header is zlib-compressed JSON; others must be 0)
    offset 12  u32       header length H in bytes
    offset 16  u32       CRC-32 of the H header bytes as stored
    offset 20  H bytes   header: UTF-8 JSON (or zlib of it)
    offset 20+H          payload: every tensor's streams, back to back, no padding

The header names the architecture (a ``ModelSpec``), free-form metadata, the payload size and
per tensor: name, shape, dtype, layout codec and its parameters, its streams (codec,
parameters, offset and byte count relative to the payload start) and a CRC-32 of its payload
bytes. Tensor codecs are in :mod:`slimtorch.encode.codecs`.

Example:
    >>> import tempfile, pathlib, torch
    >>> from slimtorch.models import build_model, make_spec
    >>> spec = make_spec("lenet300")
    >>> model = build_model(spec)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.slim"
    >>> summary = save_compressed(path, model, spec)
    >>> loaded, spec2, _ = load_compressed(path)
    >>> spec2 == spec and all(torch.equal(a, b) for a, b in
    ...     zip(model.state_dict().values(), loaded.state_dict().values()))
    True
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slimtorch.encode.codecs import (
    CodecError,
    LayerCodec,
    Stream,
    decode_tensor,
    encode_tensor,
    stream_nbytes,
)
from slimtorch.encode.header_schema import (
    MAX_HEADER_BYTES,
    FormatError,
    check_header,
    check_payload_bytes,
)
from slimtorch.encode.huffman import DEFAULT_MAX_CODE_LENGTH, HuffmanError
from slimtorch.errors import ConfigError
from slimtorch.io import atomic_write_bytes
from slimtorch.models import ModelSpec, build_model

MAGIC = b"\x89SLIM\r\n\x1a"  # PNG-style: a high byte, then CR LF and ^Z catch text-mode damage
FORMAT_NAME = "slimtorch-compressed"
FORMAT_VERSION = 1
FLAG_ZLIB_HEADER = 1
KNOWN_FLAGS = FLAG_ZLIB_HEADER
PREFIX = struct.Struct("<8sHHII")  # magic, version, flags, header length, header CRC-32
ENCODE_CONFIG_VERSION = 1


@dataclass(frozen=True)
class EncodeConfig:
    """How ``save_compressed`` writes.

    Attributes:
        max_code_length: longest Huffman code, in [1, 24] (default 15, as DEFLATE).
        compress_header: zlib the JSON header (it counts toward the file size).
        verify: check that every codec rebuilds its tensor exactly before writing.
        version: config schema version.

    Example:
        >>> EncodeConfig(compress_header=False).max_code_length
        15
    """

    max_code_length: int = DEFAULT_MAX_CODE_LENGTH
    compress_header: bool = True
    verify: bool = True
    version: int = ENCODE_CONFIG_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.max_code_length, int) or not 1 <= self.max_code_length <= 24:
            raise ConfigError(f"EncodeConfig.max_code_length must be in [1, 24], got {self}")
        if self.version != ENCODE_CONFIG_VERSION:
            raise ConfigError(f"EncodeConfig.version must be {ENCODE_CONFIG_VERSION}, got {self}")


@dataclass(frozen=True)
class CompressedSummary:
    """What ``save_compressed`` wrote: total, header and per-tensor payload bytes."""

    path: Path
    file_bytes: int
    header_bytes: int
    tensor_bytes: dict[str, int] = field(default_factory=dict)
    stream_bytes: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class CompressedFile:
    """A decoded file: the header as parsed, the spec, metadata and every tensor."""

    header: dict[str, Any]
    spec: ModelSpec
    metadata: dict[str, Any]
    tensors: dict[str, Tensor]


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu") for k, v in model.state_dict().items()}


def _encode_all(
    state: dict[str, Tensor], layer_codecs: Mapping[str, LayerCodec], config: EncodeConfig
) -> tuple[list[dict[str, Any]], bytearray]:
    entries, payload = [], bytearray()
    for name, tensor in state.items():
        entry, streams = encode_tensor(name, tensor, layer_codecs.get(name), config.max_code_length)
        if config.verify and layer_codecs.get(name) is not None:
            _verify(name, tensor, entry, streams)
        start, metas = len(payload), []
        for meta, data in streams:
            metas.append({**meta, "offset": len(payload), "nbytes": len(data)})
            payload += data
        crc = zlib.crc32(payload[start:])
        entries.append({**entry, "streams": metas, "crc32": crc})
    return entries, payload


def _verify(name: str, tensor: Tensor, entry: dict[str, Any], streams: list[Stream]) -> None:
    decoded = decode_tensor(entry, streams)
    if not torch.equal(decoded, tensor):
        diff = (decoded.double() - tensor.double()).abs().max().item()
        raise ConfigError(
            f"{name}: its codec does not rebuild the model's tensor exactly (max diff {diff:g}); "
            "pass the codebook, indices and mask the weight was quantized with"
        )


def save_compressed(
    path: str | os.PathLike[str],
    model: nn.Module,
    spec: ModelSpec,
    layer_codecs: Mapping[str, LayerCodec] | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    config: EncodeConfig = EncodeConfig(),
) -> CompressedSummary:
    """Write ``model`` as one compressed file, atomically.

    Args:
        path: the file to write (parents created).
        model: the model; every ``state_dict`` entry is stored, those in ``layer_codecs``
            compressed, the rest plain.
        spec: how to rebuild the architecture (``build_model(spec)``).
        layer_codecs: state-dict key -> :class:`~slimtorch.encode.codecs.CodebookWeight`
            (pruned and/or k-means quantized) or :class:`~slimtorch.encode.codecs.SparseWeight`.
        metadata: JSON-serializable extras (accuracy, recipe, ...).
        config: Huffman length limit, header compression, verification.

    Returns:
        A :class:`CompressedSummary` with the byte counts.

    Raises:
        ConfigError: a codec names no state entry, or does not rebuild its tensor exactly.
    """
    codecs = dict(layer_codecs or {})
    state = _state(model)
    unknown = sorted(set(codecs) - set(state))
    if unknown:
        raise ConfigError(f"layer_codecs name tensors the model lacks: {', '.join(unknown)}")
    entries, payload = _encode_all(state, codecs, config)
    header = {"format": FORMAT_NAME, "spec": spec.to_dict(), "metadata": _json(metadata),
              "payload_bytes": len(payload), "tensors": entries}  # fmt: skip
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    flags = FLAG_ZLIB_HEADER if config.compress_header else 0
    stored = zlib.compress(text, 9) if config.compress_header else text
    prefix = PREFIX.pack(MAGIC, FORMAT_VERSION, flags, len(stored), zlib.crc32(stored))
    blob = prefix + stored + bytes(payload)
    target = atomic_write_bytes(path, blob)
    return CompressedSummary(
        path=target,
        file_bytes=len(blob),
        header_bytes=PREFIX.size + len(stored),
        tensor_bytes={e["name"]: sum(s["nbytes"] for s in e["streams"]) for e in entries},
        stream_bytes={e["name"]: {s["name"]: s["nbytes"] for s in e["streams"]} for e in entries},
    )


def _json(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(metadata or {}), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metadata must be JSON-serializable and finite: {exc}") from exc


def _read_prefix(blob: bytes, where: str) -> tuple[int, int, int, int]:
    if len(blob) < len(MAGIC) or blob[: len(MAGIC)] != MAGIC:
        raise FormatError(
            f"{where} is not a slimtorch compressed model file "
            f"(starts with {blob[:8]!r}, expected {MAGIC!r})"
        )
    if len(blob) < PREFIX.size:
        raise FormatError(f"{where} is truncated: {len(blob)} bytes, shorter than its prefix")
    _, version, flags, hlen, hcrc = PREFIX.unpack_from(blob)
    if version > FORMAT_VERSION:
        raise FormatError(
            f"{where} is format version {version}, newer than this slimtorch reads "
            f"(up to {FORMAT_VERSION}); upgrade slimtorch to read it"
        )
    if version < 1 or flags & ~KNOWN_FLAGS:
        raise FormatError(f"{where} has an invalid version {version} or flags {flags:#x}")
    return version, flags, hlen, hcrc


def _inflate(stored: bytes) -> bytes:
    """A zlib header's JSON text; at most MAX_HEADER_BYTES (a zip bomb stops there)."""
    inflater = zlib.decompressobj()
    text = inflater.decompress(stored, MAX_HEADER_BYTES + 1)
    if len(text) > MAX_HEADER_BYTES:
        raise zlib.error(f"it inflates past {MAX_HEADER_BYTES:,} bytes")
    if not inflater.eof or inflater.unused_data:
        raise zlib.error("the zlib stream is incomplete or followed by other bytes")
    return text


def _read_header(blob: bytes, where: str) -> tuple[dict[str, Any], int]:
    """The parsed and validated header (:func:`check_header`) and the payload's start offset."""
    _, flags, hlen, hcrc = _read_prefix(blob, where)
    stored = blob[PREFIX.size : PREFIX.size + hlen]
    if len(stored) < hlen:
        raise FormatError(f"{where} is truncated inside its header ({len(blob)} bytes)")
    if zlib.crc32(stored) != hcrc:
        raise FormatError(f"{where} is corrupted: the header's CRC-32 does not match")
    if len(stored) > MAX_HEADER_BYTES:
        raise FormatError(f"{where}: its header is over {MAX_HEADER_BYTES:,} bytes")
    try:
        text = _inflate(stored) if flags & FLAG_ZLIB_HEADER else stored
        header = json.loads(text.decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: bad JSON or an int of over 4300 digits; RecursionError: deep nesting
        raise FormatError(f"{where} is corrupted: unreadable header ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: header is not a {FORMAT_NAME} header")
    start = PREFIX.size + hlen
    check_header(header, len(blob) - start, where)
    return header, start


def _check_payload_size(header: dict[str, Any], blob: bytes, start: int, where: str) -> None:
    check_payload_bytes(header.get("payload_bytes"), len(blob) - start, where)


def _decode_entry(entry: dict[str, Any], payload: memoryview, where: str) -> Tensor:
    name = entry.get("name")
    try:
        streams = [
            (m, bytes(payload[m["offset"] : m["offset"] + m["nbytes"]])) for m in entry["streams"]
        ]
        region = b"".join(data for _, data in streams)
        if any(len(d) != m["nbytes"] for m, d in streams):
            raise FormatError(f"{where}: tensor {name!r} points past the end of the payload")
        if zlib.crc32(region) != entry["crc32"]:
            raise FormatError(f"{where} is corrupted: tensor {name!r} fails its CRC-32 check")
        for meta, data in streams:
            if stream_nbytes(meta, len(data)) != len(data):
                raise FormatError(f"{where}: tensor {name!r} stream sizes are inconsistent")
        return decode_tensor(entry, streams)
    except (CodecError, HuffmanError) as exc:
        raise FormatError(f"{where}: tensor {name!r} does not decode: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{where}: malformed entry for tensor {name!r} ({exc!r})") from exc


def read_compressed(path: str | os.PathLike[str]) -> CompressedFile:
    """Read and decode every tensor of a compressed file (no model is built).

    Args:
        path: a file written by :func:`save_compressed`.

    Returns:
        A :class:`CompressedFile`.

    Raises:
        FormatError: the file is foreign, truncated, corrupted, or a newer version.
    """
    where = str(path)
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise FormatError(f"{where}: cannot read ({exc.strerror or exc})") from exc
    header, start = _read_header(blob, where)
    _check_payload_size(header, blob, start, where)
    payload = memoryview(blob)[start:]
    tensors = {e.get("name"): _decode_entry(e, payload, where) for e in header.get("tensors", [])}
    try:
        spec = ModelSpec.from_dict(header.get("spec"))
    except ConfigError as exc:
        raise FormatError(f"{where}: invalid model spec in header: {exc}") from exc
    return CompressedFile(header, spec, dict(header.get("metadata") or {}), tensors)


def load_compressed(
    path: str | os.PathLike[str], *, trust_code: bool | None = None
) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Rebuild the model stored in a compressed file.

    Opening a file never runs code it names: the header's spec may name only zoo models and
    slimtorch's own architectures unless ``trust_code`` (see :mod:`slimtorch.models.trust`).

    Args:
        path: a file written by :func:`save_compressed`.
        trust_code: let the spec name a third-party ``module:factory`` (it is imported and
            run); None means the policy in force (the CLI's ``--trust-code``, else False).

    Returns:
        ``(model, spec, metadata)``; the model is on the CPU in eval mode and its tensors are
        exactly the ones saved (pruned positions are +0.0).

    Raises:
        FormatError: foreign, truncated, corrupted or newer file, or weights that do not fit.
        ModelError: the spec names a factory the trust policy refuses.
    """
    file = read_compressed(path)
    model = build_model(file.spec, trust_code=trust_code, where=str(path))
    try:
        model.load_state_dict(file.tensors, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise FormatError(
            f"{path}: tensors do not fit the model its spec builds: {detail}"
        ) from exc
    return model.eval(), file.spec, file.metadata
