"""Tensor codecs of the compressed model file: how one tensor becomes byte streams and back.

A tensor's **layout codec** says which streams rebuild it; each stream has its own **stream
codec** (raw bytes or canonical Huffman). Ids are an enum whose values are never reused; a
reader refuses ids it does not know.

=================  ====  =============================================================
codec              id    streams (in payload order)
=================  ====  =============================================================
PLAIN              1     ``values``: the tensor's raw little-endian bytes
CODEBOOK           2     ``codebook`` (raw, K values), ``indices`` (Huffman, alphabet K)
SPARSE_CODEBOOK    3     ``codebook`` (raw), ``indices`` (Huffman, alphabet K + 1: symbol K
                         is a filler zero), ``gaps`` (Huffman, alphabet 2**index_bits)
SPARSE             4     ``values`` (raw, one per entry, fillers are 0), ``gaps`` (Huffman)
RAW                16    stream: ``count`` values of ``dtype``
HUFFMAN            17    stream: code-length table, then the packed codes (see docs/format.md)
=================  ====  =============================================================

Example:
    >>> import torch
    >>> from slimtorch.encode.weights import from_quantized
    >>> w = torch.tensor([[0.0, 0.5], [-0.25, 0.0]])
    >>> cw = from_quantized(w, torch.tensor([-0.25, 0.5]), mask=w != 0)
    >>> entry, streams = encode_tensor("w", w, cw)
    >>> entry["codec"], [s["name"] for s, _ in streams]
    (3, ['codebook', 'indices', 'gaps'])
    >>> torch.equal(decode_tensor(entry, streams), w)
    True
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slimtorch.encode.huffman import (
    DEFAULT_MAX_CODE_LENGTH,
    huffman_code_lengths,
    huffman_decode,
    huffman_encode,
)
from slimtorch.encode.sparse_index import (
    default_index_bits,
    positions_from_gaps,
    relative_gaps,
)
from slimtorch.encode.weights import CodebookWeight, SparseWeight
from slimtorch.errors import ConfigError, ModelError


class Codec(IntEnum):
    """Codec ids stored in the file. Append new ones; never renumber or reuse a value."""

    PLAIN = 1
    CODEBOOK = 2
    SPARSE_CODEBOOK = 3
    SPARSE = 4
    RAW = 16
    HUFFMAN = 17


DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class CodecError(ModelError):
    """A tensor's streams do not decode (corrupted file or inconsistent header)."""


LayerCodec = CodebookWeight | SparseWeight
Stream = tuple[dict[str, Any], bytes]


def _raw_stream(name: str, t: Tensor) -> Stream:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return {"name": name, "codec": int(Codec.RAW), "dtype": DTYPE_NAMES[t.dtype],
            "count": t.numel()}, data  # fmt: skip


def _huffman_stream(name: str, symbols: np.ndarray, alphabet: int, max_len: int) -> Stream:
    counts = np.bincount(symbols, minlength=alphabet)
    lengths = huffman_code_lengths(counts, max_len)
    lbits = 4 if int(lengths.max(initial=0)) < 16 else 8
    data, _ = huffman_encode(symbols, lengths)
    meta = {"name": name, "codec": int(Codec.HUFFMAN), "count": int(symbols.size),
            "alphabet": alphabet, "lbits": lbits}  # fmt: skip
    return meta, _pack_lengths(lengths, lbits) + data


def _pack_lengths(lengths: np.ndarray, lbits: int) -> bytes:
    """Code lengths as bytes (lbits 8) or nibbles, high nibble first (lbits 4)."""
    if lbits == 8:
        return lengths.astype(np.uint8).tobytes()
    padded = np.zeros(2 * ((lengths.size + 1) // 2), dtype=np.uint8)
    padded[: lengths.size] = lengths
    return ((padded[0::2] << 4) | padded[1::2]).astype(np.uint8).tobytes()


def length_table_bytes(alphabet: int, lbits: int) -> int:
    """Bytes of a HUFFMAN stream's code-length table: one per symbol, or one per two."""
    return alphabet if lbits == 8 else (alphabet + 1) // 2


def _unpack_lengths(data: bytes, alphabet: int, lbits: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    if lbits == 8:
        return raw.copy()
    return np.stack([raw >> 4, raw & 0x0F], axis=1).reshape(-1)[:alphabet].copy()


def _check_indices(indices: np.ndarray, k: int, name: str) -> None:
    if indices.size and (indices.min() < 0 or indices.max() >= k):
        raise ConfigError(f"{name}: codebook indices must be in [0, {k}), got {indices.max()}")


def encode_tensor(
    name: str,
    tensor: Tensor,
    codec: LayerCodec | None = None,
    max_code_length: int = DEFAULT_MAX_CODE_LENGTH,
) -> tuple[dict[str, Any], list[Stream]]:
    """Encode one tensor: a header entry (without offsets) and its streams in payload order.

    Args:
        name: the state-dict key.
        tensor: the tensor as it is in the model (gives dtype and shape).
        codec: how it is compressed; None stores it plain.
        max_code_length: longest Huffman code.

    Returns:
        ``(entry, streams)``; ``entry`` has name, shape, dtype, codec and params.
    """
    entry: dict[str, Any] = {"name": name, "shape": list(tensor.shape),
                             "dtype": DTYPE_NAMES[tensor.dtype]}  # fmt: skip
    if codec is None:
        return {**entry, "codec": int(Codec.PLAIN)}, [_raw_stream("values", tensor)]
    if tuple(codec.shape) != tuple(tensor.shape):
        raise ConfigError(f"{name}: codec shape {list(codec.shape)} != tensor {list(tensor.shape)}")
    positions = codec.flat_positions()
    if isinstance(codec, SparseWeight):
        return _encode_sparse(entry, codec, positions, max_code_length)
    if not tensor.is_floating_point():
        raise ConfigError(f"{name}: a codebook needs a floating-point tensor, not {tensor.dtype}")
    indices = codec.indices.detach().cpu().numpy().astype(np.int64).reshape(-1)
    k = codec.codebook.numel()
    _check_indices(indices, k, name)
    if indices.size != positions.size:
        raise ConfigError(f"{name}: {indices.size} indices for {positions.size} kept positions")
    book = _raw_stream("codebook", codec.codebook)
    if not codec.is_sparse:
        streams = [book, _huffman_stream("indices", indices, k, max_code_length)]
        return {**entry, "codec": int(Codec.CODEBOOK)}, streams
    bits = codec.index_bits or default_index_bits(tuple(tensor.shape))
    gaps, filler = relative_gaps(positions, bits)
    symbols = np.full(gaps.size, k, dtype=np.int64)  # fillers: symbol K
    symbols[~filler] = indices
    streams = [
        book,
        _huffman_stream("indices", symbols, k + 1, max_code_length),
        _huffman_stream("gaps", gaps, 1 << bits, max_code_length),
    ]
    return {**entry, "codec": int(Codec.SPARSE_CODEBOOK), "index_bits": bits}, streams


def _encode_sparse(
    entry: dict[str, Any], codec: SparseWeight, positions: np.ndarray, max_len: int
) -> tuple[dict[str, Any], list[Stream]]:
    bits = codec.index_bits or default_index_bits(tuple(entry["shape"]))
    gaps, filler = relative_gaps(positions, bits)
    dtype = DTYPES[entry["dtype"]]  # values are stored in the tensor's own dtype
    values = torch.zeros(gaps.size, dtype=dtype)
    values[torch.from_numpy(~filler)] = codec.values.detach().cpu().reshape(-1).to(dtype)
    streams = [_raw_stream("values", values), _huffman_stream("gaps", gaps, 1 << bits, max_len)]
    return {**entry, "codec": int(Codec.SPARSE), "index_bits": bits}, streams


def stream_nbytes(meta: dict[str, Any], data_len: int) -> int:
    """Bytes a stream must have by its header entry (checked before decoding)."""
    if meta["codec"] == Codec.RAW:
        return int(meta["count"]) * DTYPES[meta["dtype"]].itemsize
    return data_len  # Huffman streams are checked while decoding


def _decode_raw(meta: dict[str, Any], data: bytes) -> Tensor:
    dtype = DTYPES.get(meta.get("dtype"))  # type: ignore[arg-type]
    if dtype is None or len(data) != int(meta["count"]) * dtype.itemsize:
        raise CodecError(f"stream {meta.get('name')!r}: raw size or dtype does not match")
    if not data:
        return torch.empty(0, dtype=dtype)
    if dtype == torch.bool and max(data) > 1:  # any other byte is not a bool in torch
        raise CodecError(f"stream {meta.get('name')!r}: bool values must be bytes 0 or 1")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype)


def _decode_huffman(meta: dict[str, Any], data: bytes) -> np.ndarray:
    alphabet, lbits = int(meta["alphabet"]), int(meta["lbits"])
    table = length_table_bytes(alphabet, lbits)
    if lbits not in (4, 8) or len(data) < table:
        raise CodecError(f"stream {meta.get('name')!r}: code-length table is cut short")
    lengths = _unpack_lengths(data[:table], alphabet, lbits)
    try:
        return huffman_decode(data[table:], lengths, int(meta["count"]))
    except ConfigError as exc:  # lengths over the limit, or no prefix code has them
        raise CodecError(f"stream {meta.get('name')!r}: invalid code-length table: {exc}") from exc


def decode_stream(meta: dict[str, Any], data: bytes) -> Tensor | np.ndarray:
    """Decode one stream: a tensor (RAW) or int64 symbols (HUFFMAN)."""
    if meta.get("codec") == Codec.RAW:
        return _decode_raw(meta, data)
    if meta.get("codec") == Codec.HUFFMAN:
        return _decode_huffman(meta, data)
    raise CodecError(f"stream {meta.get('name')!r} uses stream codec id {meta.get('codec')!r}, "
                     "unknown to this slimtorch")  # fmt: skip


def decode_tensor(entry: dict[str, Any], streams: list[Stream]) -> Tensor:
    """Rebuild a tensor from its header entry and its ``(stream meta, bytes)`` in order."""
    if entry.get("codec") not in _STREAM_NAMES:
        raise CodecError(
            f"tensor {entry.get('name')!r} uses codec id {entry.get('codec')!r}, unknown to "
            "this slimtorch (written by a newer version?)"
        )
    names = [meta.get("name") for meta, _ in streams]
    if names != _STREAM_NAMES[entry["codec"]]:
        raise CodecError(f"tensor {entry.get('name')!r}: streams {names} do not fit its codec")
    parts = [decode_stream(meta, data) for meta, data in streams]
    dtype, shape = DTYPES[entry["dtype"]], tuple(entry["shape"])
    numel, codec = math.prod(shape), entry["codec"]
    if codec == Codec.PLAIN:
        (values,) = parts
        return _shaped(values.to(dtype), shape, numel)
    if codec == Codec.CODEBOOK:
        book, indices = parts
        _check_symbols(indices, book.numel(), entry)
        return _shaped(book.to(dtype)[torch.from_numpy(indices)], shape, numel)
    if codec == Codec.SPARSE_CODEBOOK:
        book, symbols, gaps = parts
        _check_symbols(symbols, book.numel() + 1, entry)
        filled = torch.cat([book.to(dtype), torch.zeros(1, dtype=dtype)])  # symbol K: filler
        return _scatter(filled[torch.from_numpy(symbols)], gaps, shape, dtype)
    if codec == Codec.SPARSE:
        values, gaps = parts
        return _scatter(values.to(dtype), gaps, shape, dtype)
    raise AssertionError(f"unhandled codec {codec}")  # _STREAM_NAMES lists every layout


# Each layout's streams, in payload order, with the stream codec each one must use.
LAYOUT_STREAMS: dict[int, tuple[tuple[str, Codec], ...]] = {
    Codec.PLAIN: (("values", Codec.RAW),),
    Codec.CODEBOOK: (("codebook", Codec.RAW), ("indices", Codec.HUFFMAN)),
    Codec.SPARSE_CODEBOOK: (
        ("codebook", Codec.RAW),
        ("indices", Codec.HUFFMAN),
        ("gaps", Codec.HUFFMAN),
    ),
    Codec.SPARSE: (("values", Codec.RAW), ("gaps", Codec.HUFFMAN)),
}
SPARSE_LAYOUTS = (Codec.SPARSE_CODEBOOK, Codec.SPARSE)  # the layouts with an ``index_bits``
_STREAM_NAMES = {layout: [n for n, _ in streams] for layout, streams in LAYOUT_STREAMS.items()}


def _check_symbols(symbols: np.ndarray, k: int, entry: dict[str, Any]) -> None:
    if symbols.size and int(symbols.max()) >= k:
        raise CodecError(f"tensor {entry.get('name')!r}: an index points past the codebook")


def _shaped(flat: Tensor, shape: tuple[int, ...], numel: int) -> Tensor:
    if flat.numel() != numel:
        raise CodecError(f"decoded {flat.numel()} values for shape {list(shape)}")
    return flat.reshape(shape).clone()


def _scatter(
    values: Tensor, gaps: np.ndarray, shape: tuple[int, ...], dtype: torch.dtype
) -> Tensor:
    positions = positions_from_gaps(gaps)
    numel = math.prod(shape)
    if values.numel() != positions.size or (positions.size and positions[-1] >= numel):
        raise CodecError(f"sparse entries do not fit shape {list(shape)}")
    try:
        out = torch.zeros(numel, dtype=dtype)
    except (RuntimeError, MemoryError) as exc:  # the header's shape is within the caps
        raise CodecError(f"cannot allocate {numel:,} values of shape {list(shape)}") from exc
    out[torch.from_numpy(positions)] = values
    return out.reshape(shape)
