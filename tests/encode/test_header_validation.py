"""A `.slim` header with a valid CRC-32 but hostile fields is refused before anything is decoded.

Every crafted file here is a real saved file whose header JSON was edited and whose header
CRC-32 was recomputed (as anyone can), stored compressed or not as its flag says. The oracle:
a :class:`FormatError` naming the file, the tensor and the field, or (for the generated
headers) weights identical to the original's; never another exception, never MemoryError.
"""

from __future__ import annotations

import functools
import json
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimtorch.cli.main import main
from slimtorch.encode import header_schema
from slimtorch.encode.codecs import DTYPES, Codec
from slimtorch.encode.container import (
    FLAG_ZLIB_HEADER,
    MAGIC,
    PREFIX,
    EncodeConfig,
    FormatError,
    load_compressed,
    read_compressed,
    save_compressed,
)
from slimtorch.encode.weights import CodebookWeight, SparseWeight
from slimtorch.errors import ConfigError
from slimtorch.models import build_model, make_spec

Header = dict[str, Any]
# Centroids that float16, bfloat16 and float64 hold exactly: a file whose header only widens or
# narrows a codebook tensor's float dtype is still a valid file of the same weights.
BOOK = torch.arange(-8, 8, dtype=torch.float32) / 32


def _model_and_codecs() -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """LeNet-300-100 using every layout: sparse codebook, sparse values, dense codebook, plain."""
    torch.manual_seed(0)
    spec = make_spec("lenet300")
    model = build_model(spec)
    sd = model.state_dict()
    with torch.no_grad():
        fc1, fc2, cls = sd["fc1.0.weight"], sd["fc2.0.weight"], sd["classifier.weight"]
        mask1 = torch.rand_like(fc1) < 0.1
        idx1 = torch.randint(0, len(BOOK), (int(mask1.sum()),))
        fc1.zero_()
        fc1[mask1] = BOOK[idx1]
        mask2 = torch.rand_like(fc2) < 0.05
        fc2.mul_(mask2)
        idx3 = torch.randint(0, len(BOOK), cls.shape)
        cls.copy_(BOOK[idx3])
    codecs = {
        "fc1.0.weight": CodebookWeight(tuple(fc1.shape), BOOK, idx1, mask=mask1, index_bits=4),
        "fc2.0.weight": SparseWeight(tuple(fc2.shape), fc2[mask2], mask=mask2),
        "classifier.weight": CodebookWeight(tuple(cls.shape), BOOK, idx3.reshape(-1)),
    }
    return model, spec, codecs


@functools.cache
def _original(compress_header: bool) -> tuple[bytes, dict[str, torch.Tensor]]:
    """A saved file's bytes and the weights it loads to (built once per header flag)."""
    model, spec, codecs = _model_and_codecs()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.slim"
        config = EncodeConfig(compress_header=compress_header)
        save_compressed(path, model, spec, codecs, config=config)
        blob = path.read_bytes()
        loaded = load_compressed(path)[0].state_dict()
    return blob, {k: v.clone() for k, v in loaded.items()}


def _split(blob: bytes) -> tuple[Header, int, bytes]:
    """(header, flags, payload) of a file."""
    _, _, flags, hlen, _ = PREFIX.unpack_from(blob)
    stored = blob[PREFIX.size : PREFIX.size + hlen]
    text = zlib.decompress(stored) if flags & FLAG_ZLIB_HEADER else stored
    return json.loads(text), flags, blob[PREFIX.size + hlen :]


def _join_text(text: bytes, flags: int, payload: bytes) -> bytes:
    """A file with this header text, stored as ``flags`` says, and a correct header CRC-32."""
    stored = zlib.compress(text, 9) if flags & FLAG_ZLIB_HEADER else text
    return PREFIX.pack(MAGIC, 1, flags, len(stored), zlib.crc32(stored)) + stored + payload


def _join(header: Header, flags: int, payload: bytes) -> bytes:
    return _join_text(json.dumps(header, separators=(",", ":")).encode(), flags, payload)


def _crafted(tmp_path: Path, edit: Callable[[Header], None], compress_header: bool = True) -> Path:
    """A real saved file whose header ``edit`` changed (in place), its CRC-32 recomputed."""
    header, flags, payload = _split(_original(compress_header)[0])
    edit(header)
    path = tmp_path / "crafted.slim"
    path.write_bytes(_join(header, flags, payload))
    return path


def _entry(header: Header, name: str) -> Header:
    return next(e for e in header["tensors"] if e["name"] == name)


def _stream(header: Header, tensor: str, stream: str) -> Header:
    return next(s for s in _entry(header, tensor)["streams"] if s["name"] == stream)


def _set(getter: Callable[[Header], Any], key: str, value: Any) -> Callable[[Header], None]:
    def edit(header: Header) -> None:
        getter(header)[key] = value

    return edit


def _top(h: Header) -> Header:
    return h


def _fc1(h: Header) -> Header:
    return _entry(h, "fc1.0.weight")


def _fc2(h: Header) -> Header:
    return _entry(h, "fc2.0.weight")


def _bias(h: Header) -> Header:
    return _entry(h, "fc1.0.bias")


def _fc1_indices(h: Header) -> Header:
    return _stream(h, "fc1.0.weight", "indices")


def _fc1_codebook(h: Header) -> Header:
    return _stream(h, "fc1.0.weight", "codebook")


def _duplicate_name(h: Header) -> None:
    _entry(h, "fc2.0.bias")["name"] = "fc1.0.bias"


def _drop_field(h: Header) -> None:
    del _bias(h)["crc32"]


# (id, edit, what the one-line message must say after "FILE: ")
CASES = [
    ("tensors-not-a-list", _set(_top, "tensors", {"fc1.0.weight": [300, 64]}),
     r"header: field 'tensors' must be a list of tensor entries, got \{"),
    ("tensors-list-of-ints", _set(_top, "tensors", [1, 2, 3]),
     r"tensor #0 must be a JSON object, got 1"),
    ("metadata-a-list", _set(_top, "metadata", ["acc", 0.9]),
     r"header: field 'metadata' must be a JSON object, got \['acc'"),
    ("negative-shape", _set(_bias, "shape", [-300]),
     r"tensor 'fc1.0.bias': field 'shape' must be a list of non-negative integers"),
    ("huge-shape", _set(_fc1, "shape", [10**6, 10**6]),
     r"tensor 'fc1.0.weight': field 'shape' must be at most 4,294,967,296 elements"),
    ("shape-not-stored", _set(_bias, "shape", [2**16, 2**16]),
     r"tensor 'fc1.0.bias': field 'shape' must be 300 elements, one per stored 'values', "
     r"got \[65536, 65536\]"),
    ("too-many-dims", _set(_bias, "shape", [1] * 33 + [300]),
     r"tensor 'fc1.0.bias': field 'shape' must be a list of at most 32 sizes"),
    ("huffman-count-1e12", _set(_fc1_indices, "count", 10**12),
     r"tensor 'fc1.0.weight' stream 'indices': field 'count' must be what its \d+ code bytes"),
    ("raw-count-1e12", _set(_fc1_codebook, "count", 10**12),
     r"tensor 'fc1.0.weight' stream 'codebook': field 'nbytes' must be 4000000000000"),
    ("index-bits-0", _set(_fc1, "index_bits", 0),
     r"tensor 'fc1.0.weight': field 'index_bits' must be in \[1, 16\], got 0"),
    ("index-bits-64", _set(_fc2, "index_bits", 64),
     r"tensor 'fc2.0.weight': field 'index_bits' must be in \[1, 16\], got 64"),
    ("index-bits-not-the-alphabet", _set(_fc1, "index_bits", 5),
     r"tensor 'fc1.0.weight' stream 'gaps': field 'alphabet' must be 32 \(2\*\*index_bits\), "
     r"got 16"),
    ("lbits-5", _set(_fc1_indices, "lbits", 5),
     r"stream 'indices': field 'lbits' must be 4 or 8, got 5"),
    ("alphabet-0", _set(_fc1_indices, "alphabet", 0),
     r"stream 'indices': field 'alphabet' must be >= 1, got 0"),
    ("alphabet-not-the-codebook", _set(_fc1_indices, "alphabet", 16),
     r"tensor 'fc1.0.weight' stream 'indices': field 'alphabet' must be 17 \(the codebook's "
     r"size \+ 1 filler\), got 16"),
    ("offset-negative", _set(_fc1_indices, "offset", -1),
     r"stream 'indices': field 'offset' must be 64 \(streams are back to back\), got -1"),
    ("nbytes-past-payload", _set(_fc1_indices, "nbytes", 2**40),
     r"stream 'indices': field 'nbytes' must be in \[0, \d+\], got 1099511627776"),
    ("crc-negative", _set(_bias, "crc32", -1),
     r"tensor 'fc1.0.bias': field 'crc32' must be in \[0, 4294967295\], got -1"),
    ("dtype-unknown", _set(_bias, "dtype", "float128"),
     r"tensor 'fc1.0.bias': field 'dtype' must be one of float32 .*, got 'float128'"),
    ("dtype-not-the-values'", _set(_bias, "dtype", "float64"),
     r"tensor 'fc1.0.bias': field 'dtype' must be 'float32' \(its values stream's dtype\), got "
     r"'float64'"),
    ("codebook-of-ints", _set(_fc1_codebook, "dtype", "int32"),
     r"tensor 'fc1.0.weight' stream 'codebook': field 'dtype' must be a floating-point dtype"),
    ("codec-a-string", _set(_bias, "codec", "1"),
     r"tensor 'fc1.0.bias': field 'codec' must be a tensor codec id \(an integer\), got '1'"),
    ("codec-a-bool", _set(_bias, "codec", True),
     r"tensor 'fc1.0.bias': field 'codec' must be a tensor codec id"),
    ("stream-codec-swapped", _set(_fc1_codebook, "codec", int(Codec.HUFFMAN)),
     r"stream 'codebook': field 'codec' must be 16 \(RAW\), got 17"),
    ("payload-bytes-a-string", _set(_top, "payload_bytes", "123"),
     r"header: field 'payload_bytes' must be an integer, got '123'"),
    ("duplicate-name", _duplicate_name,
     r"tensor #3: field 'name' must be unique, got 'fc1.0.bias'"),
    ("missing-field", _drop_field, r"tensor 'fc1.0.bias': missing field 'crc32'"),
    ("unknown-field", _set(_bias, "exec", "rm -rf /"),
     r"tensor 'fc1.0.bias': unknown field 'exec'"),
    ("unknown-header-field", _set(_top, "extra", 1), r"header: unknown field 'extra'"),
    ("name-not-a-string", _set(_bias, "name", ["fc1.0.bias"]),
     r"tensor #1: field 'name' must be a non-empty string, got \['fc1.0.bias'\]"),
]  # fmt: skip


@pytest.mark.parametrize("compress_header", [True, False], ids=["zlib", "plain"])
@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_crafted_header_is_refused_naming_file_tensor_and_field(
    tmp_path: Path, edit: Callable[[Header], None], message: str, compress_header: bool
) -> None:
    path = _crafted(tmp_path, edit, compress_header)
    with pytest.raises(FormatError) as info:
        load_compressed(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") or text.startswith(f"{path} is "), text
    assert "\n" not in text
    assert re.search(message, text), text


def test_the_original_files_load(tmp_path: Path) -> None:
    """The edits above are all that is wrong with the crafted files: the originals load."""
    for compress_header in (True, False):
        blob, weights = _original(compress_header)
        header, flags, payload = _split(blob)
        assert bool(flags & FLAG_ZLIB_HEADER) == compress_header
        codecs = {e["name"]: e["codec"] for e in header["tensors"]}
        assert set(codecs.values()) == {int(c) for c in (1, 2, 3, 4)}
        path = tmp_path / "same.slim"
        path.write_bytes(_join(header, flags, payload))  # re-serialized, CRC recomputed
        loaded = load_compressed(path)[0].state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in weights.items())


def _unreadable_cases() -> Iterator[tuple[str, bytes]]:
    nested = b'{"format":"slimtorch-compressed","metadata":' + b"[" * 100_000 + b"]" * 100_000
    yield "nesting", nested + b"}"
    yield "digits", b'{"format":"slimtorch-compressed","payload_bytes":1' + b"0" * 5000 + b"}"
    yield "bomb", b'{"format":"slimtorch-compressed"}' + b" " * (65 * 2**20)


@pytest.mark.parametrize(("case", "text"), list(_unreadable_cases()), ids=lambda c: str(c)[:8])
def test_unparseable_or_inflating_header_is_refused(tmp_path: Path, case: str, text: bytes) -> None:
    _, flags, payload = _split(_original(True)[0])
    path = tmp_path / "crafted.slim"
    path.write_bytes(_join_text(text, flags, payload))
    with pytest.raises(FormatError, match=r"is corrupted: unreadable header"):
        load_compressed(path)


@pytest.mark.parametrize("command", ["decode", "inspect"])
@pytest.mark.parametrize("case", ["huge-shape", "huffman-count-1e12", "index-bits-0"])
def test_cli_refuses_a_crafted_header_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, case: str
) -> None:
    edit = next(c[1] for c in CASES if c[0] == case)
    path = _crafted(tmp_path, edit)
    argv = [command, str(path)] + (["--out", str(tmp_path / "out")] if command == "decode" else [])
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"slimtorch {command}: error: {path}: tensor ")
    assert not (tmp_path / "out").exists()


# ---- generated hostile headers ------------------------------------------------------------


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into the header's JSON except the model spec (its tests are the trust ones)."""
    if prefix:
        yield prefix
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        if prefix == () and key == "spec":
            continue
        yield from _paths(child, (*prefix, key))


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


_ORIGINAL_HEADER = _split(_original(True)[0])[0]
_PATHS = sorted(_paths(_ORIGINAL_HEADER), key=repr)
_NODES = [_get(_ORIGINAL_HEADER, p) for p in _PATHS]  # the file's own values, to swap around
_EDGES = [-1, 0, 1, 2, 3, 4, 5, 8, 15, 16, 17, 24, 25, 32, 63, 64, 65, 2**16, 2**31, 2**32,
          2**63, 2**64, 10**12, 10**30, -(2**63)]  # fmt: skip
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(_EDGES),
    st.floats(),
    st.text(max_size=6),
    st.sampled_from([*DTYPES, "values", "codebook", "indices", "gaps", "fc1.0.bias"]),
)
HOSTILE = st.one_of(
    st.recursive(
        _LEAVES,
        lambda kids: (
            st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3)
        ),
        max_leaves=6,
    ),
    st.sampled_from(_NODES).map(lambda v: json.loads(json.dumps(v))),
)


@st.composite
def _mutation(draw: st.DrawFn) -> tuple[tuple[Any, ...], str, Any]:
    path = draw(st.sampled_from(_PATHS))
    kind = draw(st.sampled_from(["replace", "replace", "nudge", "delete", "add"]))
    value = _get(_ORIGINAL_HEADER, path)
    if kind == "nudge" and isinstance(value, int) and not isinstance(value, bool):
        return path, "replace", value + draw(st.integers(-3, 3).filter(bool))
    if kind == "add":
        return path, "add", (draw(st.text(min_size=1, max_size=5)), draw(HOSTILE))
    return path, "delete" if kind == "delete" else "replace", draw(HOSTILE)


def _apply(header: Header, path: tuple[Any, ...], kind: str, value: Any) -> None:
    try:
        parent = _get(header, path[:-1])
        if kind == "replace":
            parent[path[-1]] = value
        elif kind == "delete":
            del parent[path[-1]]
        elif isinstance(target := parent[path[-1]], dict):
            target.setdefault(*value)
    except (KeyError, IndexError, TypeError):
        pass  # an earlier mutation removed or replaced this path


def _state_or_format_error(path: Path) -> dict[str, torch.Tensor] | None:
    try:
        return load_compressed(path)[0].state_dict()
    except FormatError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc), str(exc)
        return None


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(compress_header=st.booleans(), mutations=st.lists(_mutation(), min_size=1, max_size=3))
def test_hostile_headers_give_format_error_or_identical_weights(
    compress_header: bool, mutations: list[tuple[tuple[Any, ...], str, Any]]
) -> None:
    blob, weights = _original(compress_header)
    header, flags, payload = _split(blob)
    for mutation in mutations:
        _apply(header, *mutation)
    # A sparse tensor's zeros are implicit, so a grown shape is refused only by the element
    # caps (2**32 each); lower them here so that a grown-but-legal shape decodes in megabytes.
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(header_schema, "MAX_TENSOR_ELEMENTS", 2**22),
        mock.patch.object(header_schema, "MAX_TOTAL_ELEMENTS", 2**23),
    ):
        path = Path(tmp) / "hostile.slim"
        path.write_bytes(_join(header, flags, payload))
        state = _state_or_format_error(path)
    if state is not None:
        assert list(state) == list(weights)
        for name, t in weights.items():
            assert torch.equal(state[name], t), name


# ---- payload bytes that a valid header points at ------------------------------------------


def _payload_edited(tmp_path: Path, tensor: str, stream: str, new: bytes) -> Path:
    """The original file with a stream's first bytes replaced and every CRC-32 recomputed."""
    header, flags, payload = _split(_original(False)[0])
    entry, meta = _entry(header, tensor), _stream(header, tensor, stream)
    data = bytearray(payload)
    data[meta["offset"] : meta["offset"] + len(new)] = new
    first, last = entry["streams"][0], entry["streams"][-1]
    entry["crc32"] = zlib.crc32(data[first["offset"] : last["offset"] + last["nbytes"]])
    path = tmp_path / "crafted.slim"
    path.write_bytes(_join(header, flags, bytes(data)))
    return path


def test_code_lengths_that_are_no_prefix_code_are_refused(tmp_path: Path) -> None:
    # Nibbles 1, 1, 1, 1: four 1-bit codes, which Kraft's inequality rules out.
    path = _payload_edited(tmp_path, "fc1.0.weight", "indices", b"\x11\x11")
    with pytest.raises(FormatError, match=r"'fc1.0.weight' does not decode: .*Kraft"):
        load_compressed(path)


class _Flags(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("keep", torch.tensor([True, False, True]))


def test_bool_bytes_other_than_0_or_1_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "flags.slim"
    save_compressed(
        path, _Flags(), make_spec("lenet300"), config=EncodeConfig(compress_header=False)
    )
    blob = path.read_bytes()
    header, flags, payload = _split(blob)
    payload = b"\x02" + payload[1:]
    header["tensors"][0]["crc32"] = zlib.crc32(payload)
    path.write_bytes(_join(header, flags, payload))
    with pytest.raises(FormatError, match=r"'keep' does not decode: .*bytes 0 or 1"):
        read_compressed(path)


def test_writer_keeps_the_invariants_the_reader_checks(tmp_path: Path) -> None:
    spec = make_spec("lenet300")
    model = build_model(spec)
    w = model.state_dict()["fc2.0.weight"]
    mask = w.abs() > 0.05
    with torch.no_grad():
        w.mul_(mask).copy_(w.half().float())  # values that float16 holds exactly
    half = SparseWeight(tuple(w.shape), w[mask].half(), mask=mask)  # values in another dtype
    save_compressed(tmp_path / "m.slim", model, spec, {"fc2.0.weight": half})
    values = _stream(_split((tmp_path / "m.slim").read_bytes())[0], "fc2.0.weight", "values")
    assert values["dtype"] == "float32"  # stored in the tensor's dtype
    assert torch.equal(load_compressed(tmp_path / "m.slim")[0].state_dict()["fc2.0.weight"], w)
    counts = torch.nn.Module()
    counts.register_buffer("n", torch.tensor([1, 2, 1]))
    book = CodebookWeight((3,), torch.tensor([1.0, 2.0]), torch.tensor([0, 1, 0]))
    with pytest.raises(ConfigError, match="a codebook needs a floating-point tensor"):
        save_compressed(tmp_path / "n.slim", counts, spec, {"n": book})
