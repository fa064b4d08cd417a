"""Canonical, length-limited Huffman coding of integer symbol arrays.

The code is fully described by one code length per symbol (0 = symbol unused), as in DEFLATE
(RFC 1951, Sec. 3.2.2): symbols are sorted by (length, symbol value) and given consecutive
codes, so the decoder needs only the lengths. Bits are packed most-significant first: the
first symbol's code starts at bit 7 of byte 0, and the last byte is padded with zero bits.

- :func:`huffman_code_lengths` — optimal lengths under a length limit (package-merge,
  Larmore & Hirschberg 1990). A single used symbol gets a 1-bit code; no used symbol, none.
- :func:`huffman_encode` / :func:`huffman_decode` — compiled (numba) loops: the decoder looks
  up ``max_length`` peeked bits in one table (symbol, length) per step.
- :func:`huffman_encode_ref` / :func:`huffman_decode_ref` — slow, obviously correct
  references (bit strings and a dict of codes) the fast ones are tested against.

Example:
    >>> import numpy as np
    >>> x = np.array([0, 0, 0, 1, 2, 0, 1])
    >>> lengths = huffman_code_lengths(np.bincount(x))
    >>> lengths.tolist(), canonical_codes(lengths).tolist()
    ([1, 2, 2], [0, 2, 3])
    >>> data, nbits = huffman_encode(x, lengths)
    >>> nbits, huffman_decode(data, lengths, len(x)).tolist()
    (10, [0, 0, 0, 1, 2, 0, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from slimtorch.errors import ConfigError, SlimtorchError

# DEFLATE's limit (RFC 1951, Sec. 3.2.7): code lengths fit in 4 bits, tables stay small.
DEFAULT_MAX_CODE_LENGTH = 15
# The decoder's lookup table has 2**(longest code) entries; 24 bits = 16 Mi entries at most.
MAX_SUPPORTED_CODE_LENGTH = 24


class HuffmanError(SlimtorchError):
    """A Huffman stream cannot be decoded (corrupted, truncated, or the wrong code)."""


def _check_max_length(max_length: int) -> None:
    if not isinstance(max_length, int) or not 1 <= max_length <= MAX_SUPPORTED_CODE_LENGTH:
        raise ConfigError(
            f"max_length must be an int in [1, {MAX_SUPPORTED_CODE_LENGTH}], got {max_length!r}"
        )


def huffman_code_lengths(
    counts: np.ndarray, max_length: int = DEFAULT_MAX_CODE_LENGTH
) -> np.ndarray:
    """Optimal prefix-code lengths for symbol ``counts`` with no code longer than ``max_length``.

    Args:
        counts: ``[alphabet]`` non-negative integer counts (``np.bincount`` of the symbols).
        max_length: the longest code allowed, in ``[1, 24]``.

    Returns:
        ``[alphabet]`` uint8 lengths; 0 for symbols with count 0. Minimizes
        ``sum(counts * lengths)`` among prefix codes within the limit.

    Raises:
        ConfigError: negative counts, or more used symbols than ``2**max_length``.

    Example:
        >>> huffman_code_lengths(np.array([10, 1, 1, 1, 1])).tolist()
        [1, 3, 3, 3, 3]
        >>> huffman_code_lengths(np.array([10, 1, 1, 1, 1, 1]), max_length=3).tolist()
        [2, 3, 3, 3, 3, 2]
    """
    _check_max_length(max_length)
    counts = np.asarray(counts)
    if counts.ndim != 1 or (counts.size and (counts.min() < 0)):
        raise ConfigError("counts must be a 1-D array of non-negative integers")
    lengths = np.zeros(counts.shape[0], dtype=np.uint8)
    used = np.flatnonzero(counts > 0)
    if used.size == 1:
        lengths[used] = 1
    if used.size <= 1:
        return lengths
    if used.size > 2**max_length:
        raise ConfigError(
            f"{used.size} used symbols need codes longer than max_length={max_length}"
        )
    order = used[np.argsort(counts[used], kind="stable")]  # lightest first
    lengths[order] = _package_merge(counts[order].astype(np.int64), max_length)
    return lengths


def _package_merge(weights: np.ndarray, max_length: int) -> np.ndarray:
    """Lengths for ``weights`` sorted ascending (n >= 2), each at most ``max_length``."""
    n = weights.shape[0]
    is_package: list[np.ndarray] = []  # per level: which merged items are packages
    items = weights
    is_package.append(np.zeros(n, dtype=bool))
    for _ in range(max_length - 1):
        pairs = items[: items.shape[0] // 2 * 2].reshape(-1, 2).sum(axis=1)  # packages
        merged = np.concatenate([weights, pairs])
        order = np.argsort(merged, kind="stable")  # ties: leaves (listed first) first
        items = merged[order]
        is_package.append(order >= n)
    lengths = np.zeros(n, dtype=np.int64)
    take = 2 * n - 2  # the cheapest 2n-2 items of the last level form the code
    for flags in reversed(is_package):
        leaves = take - int(flags[:take].sum())
        lengths[:leaves] += 1  # leaves appear in weight order within every level
        take = 2 * (take - leaves)
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values for ``lengths`` (DEFLATE's assignment, RFC 1951 Sec. 3.2.2).

    Args:
        lengths: ``[alphabet]`` code lengths, 0 for unused symbols.

    Returns:
        ``[alphabet]`` uint32 codes; the code of symbol ``s`` is the low ``lengths[s]`` bits.

    Raises:
        ConfigError: the lengths violate Kraft's inequality (no prefix code has them).

    Example:
        >>> canonical_codes(np.array([2, 1, 3, 3])).tolist()
        [2, 0, 6, 7]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and (lengths.min() < 0 or lengths.max() > MAX_SUPPORTED_CODE_LENGTH):
        raise ConfigError(f"code lengths must be in [0, {MAX_SUPPORTED_CODE_LENGTH}]")
    top = int(lengths.max(initial=0))
    kraft = sum(int(c) << (top - ln) for ln, c in enumerate(np.bincount(lengths)) if ln > 0)
    if kraft > (1 << top):
        raise ConfigError("code lengths violate Kraft's inequality: not a prefix code")
    bl_count = np.bincount(lengths, minlength=top + 1)
    bl_count[0] = 0
    next_code = np.zeros(top + 1, dtype=np.int64)
    for bits in range(1, top + 1):
        next_code[bits] = (next_code[bits - 1] + bl_count[bits - 1]) << 1
    order = np.lexsort((np.arange(lengths.size), lengths))  # by length, then symbol
    order = order[lengths[order] > 0]
    ranks = np.arange(order.size) - np.searchsorted(lengths[order], lengths[order], "left")
    codes = np.zeros(lengths.size, dtype=np.uint32)
    codes[order] = (next_code[lengths[order]] + ranks).astype(np.uint32)
    return codes


def _checked_symbols(symbols: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    symbols = np.ascontiguousarray(np.asarray(symbols).reshape(-1))
    if symbols.size == 0:
        return symbols.astype(np.int64)
    if not np.issubdtype(symbols.dtype, np.integer):
        raise ConfigError(f"symbols must be integers, got dtype {symbols.dtype}")
    lo, hi = int(symbols.min()), int(symbols.max())
    if lo < 0 or hi >= lengths.size:
        raise ConfigError(f"symbols must be in [0, {lengths.size}), got values in [{lo}, {hi}]")
    if int(lengths[symbols].min()) == 0:
        raise ConfigError("a symbol to encode has code length 0 (count 0 when lengths were built)")
    return symbols


@numba.njit(nogil=True)
def _encode_kernel(symbols, codes, lengths, out):  # pragma: no cover - compiled
    acc = np.int64(0)
    nacc = 0
    pos = 0
    for i in range(symbols.shape[0]):
        s = symbols[i]
        ln = np.int64(lengths[s])
        acc = (acc << ln) | np.int64(codes[s])
        nacc += ln
        while nacc >= 8:
            nacc -= 8
            out[pos] = (acc >> nacc) & 0xFF
            pos += 1
        acc &= (np.int64(1) << nacc) - 1
    if nacc > 0:
        out[pos] = (acc << (8 - nacc)) & 0xFF


def huffman_encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Pack the canonical codes of ``symbols`` into bytes (MSB first, zero-padded).

    Args:
        symbols: integer array (any shape, read flat) with values in ``[0, len(lengths))``.
        lengths: the code lengths (``huffman_code_lengths`` of the symbols' counts).

    Returns:
        ``(data, nbits)``: ``ceil(nbits / 8)`` bytes and the number of meaningful bits.

    Example:
        >>> huffman_encode(np.array([1, 0, 1]), np.array([1, 1]))
        (b'\\xa0', 3)
    """
    lengths = np.asarray(lengths, dtype=np.uint8)
    symbols = _checked_symbols(symbols, lengths)
    codes = canonical_codes(lengths)
    nbits = int(lengths[symbols].sum(dtype=np.int64))
    out = np.zeros((nbits + 7) // 8, dtype=np.uint8)
    if symbols.size:
        _encode_kernel(symbols, codes, lengths, out)
    return out.tobytes(), nbits


def _decode_table(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(symbol, length) for every ``top``-bit prefix; length 0 marks an unused prefix."""
    codes = canonical_codes(lengths)
    top = max(int(lengths.max(initial=0)), 1)
    used = np.flatnonzero(lengths)
    spans = (1 << (top - lengths[used].astype(np.int64))).astype(np.int64)
    starts = codes[used].astype(np.int64) << (top - lengths[used].astype(np.int64))
    sym_table = np.zeros(1 << top, dtype=np.int64)
    len_table = np.zeros(1 << top, dtype=np.uint8)
    index = np.repeat(starts - np.cumsum(spans) + spans, spans) + np.arange(int(spans.sum()))
    sym_table[index] = np.repeat(used, spans)
    len_table[index] = np.repeat(lengths[used], spans)
    return sym_table, len_table, top


@numba.njit(nogil=True)
def _decode_kernel(data, count, sym_table, len_table, top, out):  # pragma: no cover - compiled
    acc = np.int64(0)
    nacc = 0
    pos = 0
    n = data.shape[0]
    mask = (np.int64(1) << top) - 1
    for i in range(count):
        while nacc < top:
            b = np.int64(data[pos]) if pos < n else np.int64(0)
            acc = (acc << 8) | b
            pos += 1
            nacc += 8
        idx = (acc >> (nacc - top)) & mask
        ln = len_table[idx]
        if ln == 0:
            return -1 - i
        out[i] = sym_table[idx]
        nacc -= ln
        acc &= (np.int64(1) << nacc) - 1
    return pos * 8 - nacc


def huffman_decode(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """Decode ``count`` symbols packed by :func:`huffman_encode` with the same ``lengths``.

    Args:
        data: the packed bytes (exactly ``ceil(nbits / 8)`` of them).
        lengths: the code lengths used to encode.
        count: how many symbols to decode.

    Returns:
        ``[count]`` int64 symbols.

    Raises:
        HuffmanError: a bit pattern is no code, the data ends early, or bytes are left over.

    Example:
        >>> huffman_decode(b"\\xa0", np.array([1, 1]), 3).tolist()
        [1, 0, 1]
    """
    lengths = np.asarray(lengths, dtype=np.uint8)
    buf = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(int(count), dtype=np.int64)
    if count == 0:
        used_bits = 0
    else:
        if not lengths.any():
            raise HuffmanError("cannot decode symbols with an empty code (all lengths are 0)")
        sym_table, len_table, top = _decode_table(lengths)
        used_bits = int(_decode_kernel(buf, int(count), sym_table, len_table, top, out))
        if used_bits < 0:
            raise HuffmanError(f"invalid code at symbol {-used_bits - 1}: the data is corrupted")
    _check_used_bits(used_bits, buf.size)
    return out


def _check_used_bits(used_bits: int, nbytes: int) -> None:
    if used_bits > 8 * nbytes:
        raise HuffmanError(
            f"the stream is truncated: decoding needs {used_bits} bits, it holds {8 * nbytes}"
        )
    if (used_bits + 7) // 8 != nbytes:
        raise HuffmanError(
            f"the stream has {nbytes} bytes but its symbols use {(used_bits + 7) // 8}"
        )


def huffman_encode_ref(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Reference encoder: concatenate code bit strings, then pack them (slow, obvious)."""
    codes = canonical_codes(lengths)
    bits = "".join(
        format(int(codes[s]), f"0{int(lengths[s])}b") for s in np.asarray(symbols).reshape(-1)
    )
    padded = bits + "0" * (-len(bits) % 8)
    data = bytes(int(padded[i : i + 8], 2) for i in range(0, len(padded), 8))
    return data, len(bits)


def huffman_decode_ref(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """Reference decoder: read bit by bit until the bits so far are a code (slow, obvious)."""
    codes = canonical_codes(lengths)
    table = {format(int(codes[s]), f"0{int(ln)}b"): s for s, ln in enumerate(lengths) if ln > 0}
    bits = "".join(format(b, "08b") for b in data)
    out, current, used = [], "", 0
    for bit in bits:
        if len(out) == count:
            break
        current, used = current + bit, used + 1
        if current in table:
            out.append(table[current])
            current = ""
    if len(out) < count:
        raise HuffmanError("the stream is truncated or corrupted")
    _check_used_bits(used, len(data))
    return np.array(out, dtype=np.int64)


@dataclass(frozen=True)
class HuffmanStream:
    """A self-describing Huffman-coded symbol array.

    Attributes:
        lengths: ``[alphabet]`` uint8 code lengths.
        data: the packed codes.
        count: number of symbols.
        nbits: meaningful bits in ``data``.
    """

    lengths: np.ndarray
    data: bytes
    count: int
    nbits: int


def huffman_compress(
    symbols: np.ndarray, alphabet_size: int | None = None, max_length: int = DEFAULT_MAX_CODE_LENGTH
) -> HuffmanStream:
    """Build the optimal length-limited code for ``symbols`` and encode them with it.

    Args:
        symbols: non-negative integers (read flat).
        alphabet_size: number of possible symbols (default ``max(symbols) + 1``).
        max_length: longest code allowed.

    Returns:
        A :class:`HuffmanStream`; ``huffman_decompress`` inverts it.

    Example:
        >>> s = huffman_compress(np.array([3, 3, 3, 0]), alphabet_size=4)
        >>> s.lengths.tolist(), s.nbits, huffman_decompress(s).tolist()
        ([1, 0, 0, 1], 4, [3, 3, 3, 0])
    """
    flat = np.asarray(symbols).reshape(-1)
    if flat.size and (flat.min() < 0):
        raise ConfigError("symbols must be non-negative")
    size = int(flat.max()) + 1 if alphabet_size is None and flat.size else alphabet_size or 0
    counts = np.bincount(flat.astype(np.int64), minlength=size)
    if counts.size > size:
        raise ConfigError(f"symbols reach {counts.size - 1}, outside alphabet_size={size}")
    lengths = huffman_code_lengths(counts, max_length)
    data, nbits = huffman_encode(flat, lengths)
    return HuffmanStream(lengths=lengths, data=data, count=int(flat.size), nbits=nbits)


def huffman_decompress(stream: HuffmanStream) -> np.ndarray:
    """Decode a :class:`HuffmanStream` back to its ``[count]`` int64 symbols."""
    return huffman_decode(stream.data, stream.lengths, stream.count)
