"""The ``.slim`` header's schema, checked before anything is decoded or allocated.

Anyone can write a header with a valid CRC-32 (it is a checksum, not a signature), so the
reader trusts no field: :func:`check_header` refuses a header unless every field has the type
and range that format version 1 allows and every size is consistent with the payload's actual
length. After it passes, decoding allocates at most what the payload can encode (a sparse
tensor's implicit zeros aside, which the element caps bound). The rules are listed in
``docs/format.md`` ("Validation").

Example:
    >>> header = {"format": "slimtorch-compressed", "spec": {}, "metadata": [],
    ...           "payload_bytes": 0, "tensors": []}
    >>> try:
    ...     check_header(header, payload_len=0, where="m.slim")
    ... except FormatError as exc:
    ...     print(exc)
    m.slim: header: field 'metadata' must be a JSON object, got []
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NoReturn

from slimtorch.encode.codecs import (
    DTYPES,
    LAYOUT_STREAMS,
    SPARSE_LAYOUTS,
    Codec,
    length_table_bytes,
)
from slimtorch.encode.sparse_index import MAX_INDEX_BITS
from slimtorch.errors import ModelError

# Real headers take ~0.5 KiB per tensor; a zlib header inflating past this is a zip bomb.
MAX_HEADER_BYTES = 64 * 2**20
# Far above any real tensor's rank, far below what torch and the decoder handle.
MAX_NDIM = 32
# Sparse tensors' zeros are implicit, so their size is bounded only by these caps: 2**32
# elements is twice the largest tensor of a 405B-parameter LLM (its 128256 x 16384 embedding).
MAX_TENSOR_ELEMENTS = 2**32
MAX_TOTAL_ELEMENTS = 2**36
CRC32_LIMIT = 2**32
HUFFMAN_LBITS = (4, 8)  # bits per entry of a HUFFMAN stream's code-length table
MIN_CODE_BITS = 1  # every coded symbol takes at least one bit

HEADER_FIELDS = frozenset({"format", "spec", "metadata", "payload_bytes", "tensors"})
ENTRY_FIELDS = frozenset({"name", "shape", "dtype", "codec", "streams", "crc32"})
STREAM_FIELDS = {
    Codec.RAW: frozenset({"name", "codec", "dtype", "count", "offset", "nbytes"}),
    Codec.HUFFMAN: frozenset({"name", "codec", "count", "alphabet", "lbits", "offset", "nbytes"}),
}
FLOAT_DTYPES = frozenset(name for name, dtype in DTYPES.items() if dtype.is_floating_point)


class FormatError(ModelError):
    """A file is not a valid slimtorch compressed model (foreign, truncated or corrupted)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class _At:
    """Where in the header a check is: the file and a path such as "tensor 'w' stream 'gaps'"."""

    where: str
    what: str

    def fail(self, field: str, expected: str, got: Any) -> NoReturn:
        raise FormatError(
            f"{self.where}: {self.what}: field {field!r} must be {expected}, got {_show(got)}"
        )

    def fields(self, obj: Any, allowed: frozenset[str]) -> dict[str, Any]:
        """``obj`` as a dict with exactly the ``allowed`` keys."""
        if not isinstance(obj, dict):
            raise FormatError(f"{self.where}: {self.what} must be a JSON object, got {_show(obj)}")
        missing, unknown = sorted(allowed - set(obj)), sorted(set(obj) - allowed)
        if missing:
            raise FormatError(f"{self.where}: {self.what}: missing field {missing[0]!r}")
        if unknown:
            raise FormatError(f"{self.where}: {self.what}: unknown field {_show(unknown[0])}")
        return obj

    def integer(self, obj: dict[str, Any], field: str, lo: int = 0, hi: int | None = None) -> int:
        """``obj[field]``, which must be an int (not a bool) in ``[lo, hi]``."""
        value = obj[field]
        if not _is_int(value):
            self.fail(field, "an integer", value)
        if value < lo or (hi is not None and value > hi):
            self.fail(field, f"in [{lo}, {hi}]" if hi is not None else f">= {lo}", value)
        return value

    def stream(self, role: str) -> _At:
        """The same place, one of its tensor's streams."""
        return _At(self.where, f"{self.what} stream {role!r}")

    def equal(self, field: str, got: Any, want: Any, why: str) -> None:
        if got != want:
            self.fail(field, f"{_show(want)} ({why})", got)


def check_payload_bytes(value: Any, have: int, where: str) -> None:
    """``payload_bytes`` must be an int equal to the bytes after the header (``have``)."""
    if not _is_int(value):
        _At(where, "header").fail("payload_bytes", "an integer", value)
    if have < value:
        raise FormatError(f"{where} is truncated: payload has {have} bytes, header says {value}")
    if have > value:
        raise FormatError(f"{where} has {have - value} unexpected bytes after its payload")


def check_header(header: dict[str, Any], payload_len: int, where: str) -> None:
    """Refuse a header whose schema, codec parameters or sizes are not valid.

    Args:
        header: the parsed JSON header (a dict whose ``format`` was checked).
        payload_len: the bytes that follow the header in the file.
        where: the file, for messages.

    Raises:
        FormatError: naming the file, the tensor (and stream) and the field, and what was
            expected.
    """
    at = _At(where, "header")
    at.fields(header, HEADER_FIELDS)
    check_payload_bytes(header["payload_bytes"], payload_len, where)
    if not isinstance(header["metadata"], dict):
        at.fail("metadata", "a JSON object", header["metadata"])
    tensors = header["tensors"]
    if not isinstance(tensors, list):
        at.fail("tensors", "a list of tensor entries", tensors)
    offset, total, names = 0, 0, set()
    for i, entry in enumerate(tensors):
        name, numel, offset = _check_entry(entry, i, offset, payload_len, where)
        if name in names:
            _At(where, f"tensor #{i}").fail("name", "unique", name)
        names.add(name)
        total += numel
        if total > MAX_TOTAL_ELEMENTS:
            raise FormatError(
                f"{where}: the tensors hold more than {MAX_TOTAL_ELEMENTS:,} elements in all"
            )
    if offset != payload_len:
        raise FormatError(
            f"{where}: the tensors' streams cover {offset} of the payload's {payload_len} bytes"
        )


def _check_entry(
    entry: Any, i: int, offset: int, payload_len: int, where: str
) -> tuple[str, int, int]:
    """Check one tensor entry whose streams start at ``offset``: (name, elements, end)."""
    at = _At(where, f"tensor #{i}")
    if not isinstance(entry, dict):
        raise FormatError(f"{where}: tensor #{i} must be a JSON object, got {_show(entry)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        at.fail("name", "a non-empty string", name)
    at = _At(where, f"tensor {name!r}")
    layout = entry.get("codec")
    if not _is_int(layout):
        at.fail("codec", "a tensor codec id (an integer)", layout)
    if layout not in LAYOUT_STREAMS:
        known = ", ".join(str(int(c)) for c in LAYOUT_STREAMS)
        raise FormatError(f"{where}: tensor {name!r} uses codec id {layout}, unknown to this "
                          f"slimtorch (written by a newer version?); it knows {known}")  # fmt: skip
    at.fields(entry, ENTRY_FIELDS | ({"index_bits"} if layout in SPARSE_LAYOUTS else set()))
    numel = _check_shape(at, entry["shape"])
    if not isinstance(entry["dtype"], str) or entry["dtype"] not in DTYPES:
        at.fail("dtype", f"one of {' '.join(DTYPES)}", entry["dtype"])
    at.integer(entry, "crc32", 0, CRC32_LIMIT - 1)
    roles = LAYOUT_STREAMS[layout]
    streams = entry["streams"]
    if not isinstance(streams, list) or len(streams) != len(roles):
        at.fail("streams", f"a list of {len(roles)} streams ({', '.join(n for n, _ in roles)})",
                streams)  # fmt: skip
    by_name = {}
    for meta, (role, codec) in zip(streams, roles, strict=True):
        by_name[role] = _check_stream(meta, role, codec, offset, payload_len, at)
        offset += meta["nbytes"]
    _check_layout(at, Codec(layout), entry, by_name, numel)
    return name, numel, offset


def _check_shape(at: _At, shape: Any) -> int:
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        at.fail("shape", f"a list of at most {MAX_NDIM} sizes", shape)
    for size in shape:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            at.fail("shape", "a list of non-negative integers", shape)
    numel = math.prod(shape)
    if numel > MAX_TENSOR_ELEMENTS:
        at.fail("shape", f"at most {MAX_TENSOR_ELEMENTS:,} elements", shape)
    return numel


def _check_stream(
    meta: Any, role: str, codec: Codec, offset: int, payload_len: int, entry_at: _At
) -> dict[str, Any]:
    """One stream of a tensor: its role's name and codec, its place and its parameters."""
    at = entry_at.stream(role)
    if not isinstance(meta, dict):
        raise FormatError(f"{at.where}: {at.what} must be a JSON object, got {_show(meta)}")
    at.equal("name", meta.get("name"), role, "the streams of this codec, in order")
    if not _is_int(meta.get("codec")) or meta.get("codec") != codec:
        at.fail("codec", f"{int(codec)} ({codec.name})", meta.get("codec"))
    at.fields(meta, STREAM_FIELDS[codec])
    at.equal("offset", meta["offset"], offset, "streams are back to back")
    nbytes = at.integer(meta, "nbytes", 0, payload_len - offset)
    count = at.integer(meta, "count")
    if codec == Codec.RAW:
        if not isinstance(meta["dtype"], str) or meta["dtype"] not in DTYPES:
            at.fail("dtype", f"one of {' '.join(DTYPES)}", meta["dtype"])
        size = DTYPES[meta["dtype"]].itemsize
        at.equal("nbytes", nbytes, count * size, f"{count} values of {size} bytes")
        return meta
    lbits = meta["lbits"]
    if not _is_int(lbits) or lbits not in HUFFMAN_LBITS:
        at.fail("lbits", "4 or 8", lbits)
    alphabet = at.integer(meta, "alphabet", 1)
    codes = nbytes - length_table_bytes(alphabet, lbits)
    if codes < 0:
        at.fail("nbytes", f"at least its {alphabet}-symbol code-length table", nbytes)
    if count * MIN_CODE_BITS > 8 * codes or (count == 0 and codes > 0):
        at.fail("count", f"what its {codes} code bytes hold (1 to 8 symbols a byte)", count)
    return meta


def _check_layout(
    at: _At, layout: Codec, entry: dict[str, Any], streams: dict[str, dict[str, Any]], numel: int
) -> None:
    """The streams agree with each other, with the tensor's dtype and with its shape."""
    if "values" in streams:  # PLAIN, SPARSE: the tensor's own values, in its dtype
        at.equal("dtype", entry["dtype"], streams["values"]["dtype"], "its values stream's dtype")
    if "codebook" in streams:  # CODEBOOK, SPARSE_CODEBOOK: k-means centroids
        if entry["dtype"] not in FLOAT_DTYPES:
            at.fail("dtype", "a floating-point dtype (it has a codebook)", entry["dtype"])
        book = streams["codebook"]
        if book["dtype"] not in FLOAT_DTYPES:
            at.stream("codebook").fail("dtype", "a floating-point dtype", book["dtype"])
        at.stream("codebook").integer(book, "count", 1)
        fillers = 1 if layout == Codec.SPARSE_CODEBOOK else 0  # symbol K: a filler zero
        at.stream("indices").equal(
            "alphabet", streams["indices"]["alphabet"], book["count"] + fillers,
            "the codebook's size" + (" + 1 filler" if fillers else ""),
        )  # fmt: skip
    if layout in (Codec.PLAIN, Codec.CODEBOOK):
        stored = streams["values" if layout == Codec.PLAIN else "indices"]
        if numel != stored["count"]:
            at.fail("shape", f"{stored['count']} elements, one per stored {stored['name']!r}",
                    entry["shape"])  # fmt: skip
        return
    bits = at.integer(entry, "index_bits", 1, MAX_INDEX_BITS)
    gaps = streams["gaps"]
    at.stream("gaps").equal("alphabet", gaps["alphabet"], 1 << bits, "2**index_bits")
    first = streams["indices" if layout == Codec.SPARSE_CODEBOOK else "values"]
    at.stream("gaps").equal("count", gaps["count"], first["count"], f"one per {first['name']!r}")
    if gaps["count"] > numel:
        at.fail("shape", f"room for its {gaps['count']} sparse entries", entry["shape"])
