"""Load a Llama-family GGUF file (llama.cpp's format) into :class:`~slimtorch.llm.model.Llama`.

The ``gguf`` package parses the file (memory-mapped); tensors are dequantized to fp32 with
:mod:`slimtorch.llm.gguf_quants`. Conventions undone here:

- llama.cpp's converter permutes the rows of ``attn_q`` / ``attn_k`` so that its rotary
  embedding can rotate adjacent pairs; :func:`unpermute_rope_rows` restores the Hugging Face
  "rotate half" row order our model uses (:func:`permute_rope_rows` is the converter's).
- GGUF lists shapes innermost first (``ne0`` = input features); we reverse them.
- Rope theta, RMSNorm epsilon, head counts (grouped-query attention) and the context length
  come from ``{arch}.*`` metadata; the head is tied to the embeddings when the file has no
  ``output.weight``.

Example:
    >>> from slimtorch.llm.gguf_load import load_gguf
    >>> loaded = load_gguf("model.gguf")  # doctest: +SKIP
    >>> loaded.model.config.n_kv_heads  # doctest: +SKIP
    3
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from slimtorch.errors import ModelError
from slimtorch.llm.gguf_quants import BLOCK_DTYPES, BLOCK_ELEMS, check_type, dequantize
from slimtorch.llm.model import Llama, LlamaConfig, rope_tables

GGUF_MAGIC = b"GGUF"
SUPPORTED_ARCHS = ("llama",)
DEFAULT_CONTEXT = 2048
DEQUANT_CHUNK = 1 << 20  # values dequantized per slice while loading
FLOAT_BYTES = {"F32": 4, "F16": 2, "BF16": 2}

# GGUF tensor name -> our parameter name ({} is the block index).
_BLOCK_NAMES = {
    "attn_norm": "attention_norm",
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_norm": "ffn_norm",
    "ffn_gate": "feed_forward.w1",
    "ffn_up": "feed_forward.w3",
    "ffn_down": "feed_forward.w2",
}
_TOP_NAMES = {
    "token_embd.weight": "tok_embeddings.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "output.weight",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


@dataclass
class LoadedModel:
    """A model plus what its file said about it.

    Attributes:
        model: The fp32 model in eval mode.
        metadata: GGUF key/values (tokenizer, chat template, ...); for Hugging Face folders,
            the equivalent keys built from ``config.json`` / ``tokenizer.json``.
        tensor_types: Original storage type per our parameter name (``"Q4_1"``, ``"F32"``...).
        path: Where it came from.
    """

    model: Llama
    metadata: dict[str, Any]
    tensor_types: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    @property
    def config(self) -> LlamaConfig:
        """The model's config."""
        return self.model.config


def gguf_to_param_name(name: str) -> str:
    """Our parameter name for a GGUF tensor name.

    Example:
        >>> gguf_to_param_name("blk.3.ffn_gate.weight")
        'layers.3.feed_forward.w1.weight'
    """
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    m = _BLOCK_RE.fullmatch(name)
    if m is None or m.group(2) not in _BLOCK_NAMES:
        raise ModelError(f"GGUF tensor {name!r} is not part of a supported Llama model")
    return f"layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}.weight"


def param_to_gguf_name(name: str) -> str:
    """The GGUF tensor name for one of our parameter names (inverse of the above).

    Example:
        >>> param_to_gguf_name("layers.0.attention.wq.weight")
        'blk.0.attn_q.weight'
    """
    for g, ours in _TOP_NAMES.items():
        if name == ours:
            return g
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name)
    inverse = {v: k for k, v in _BLOCK_NAMES.items()}
    if m is None or m.group(2) not in inverse:
        raise ModelError(f"parameter {name!r} has no GGUF name")
    return f"blk.{m.group(1)}.{inverse[m.group(2)]}.weight"


def permute_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp converter's Q/K row permutation (Hugging Face layout -> GGUF layout).

    Example:
        >>> w = torch.arange(8.0)[:, None]
        >>> permute_rope_rows(w, 1).flatten().tolist()
        [0.0, 4.0, 1.0, 5.0, 2.0, 6.0, 3.0, 7.0]
    """
    out = w.shape[0]
    return w.reshape(n_heads, 2, out // n_heads // 2, -1).transpose(1, 2).reshape(w.shape)


def unpermute_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of :func:`permute_rope_rows` (GGUF layout -> Hugging Face layout).

    Example:
        >>> w = torch.randn(16, 3)
        >>> torch.equal(unpermute_rope_rows(permute_rope_rows(w, 2), 2), w)
        True
    """
    out = w.shape[0]
    return w.reshape(n_heads, out // n_heads // 2, 2, -1).transpose(1, 2).reshape(w.shape)


def _open_reader(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: no such GGUF file")
    with open(p, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelError(f"{p}: not a GGUF file (it does not start with the GGUF magic)")
    try:
        return gguf.GGUFReader(p, "r")
    except Exception as e:  # the gguf package raises bare ValueError/struct errors
        raise ModelError(f"{p}: unreadable GGUF file ({e})") from None


def read_metadata(reader: Any) -> dict[str, Any]:
    """All key/values of a ``gguf.GGUFReader`` as Python values (``GGUF.*`` header omitted)."""
    out: dict[str, Any] = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        out[key] = f.contents()
    return out


def config_from_metadata(meta: dict[str, Any], tensor_names: set[str]) -> LlamaConfig:
    """Build a :class:`LlamaConfig` from GGUF metadata.

    Example:
        >>> meta = {"general.architecture": "llama", "llama.embedding_length": 8,
        ...         "llama.block_count": 1, "llama.attention.head_count": 2,
        ...         "llama.feed_forward_length": 16, "tokenizer.ggml.tokens": ["a"] * 10}
        >>> config_from_metadata(meta, set()).tie_embeddings
        True
    """
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise ModelError(
            f"GGUF architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})"
        )

    def need(key: str) -> Any:
        if f"{arch}.{key}" not in meta:
            raise ModelError(f"GGUF metadata lacks {arch}.{key}")
        return meta[f"{arch}.{key}"]

    n_heads = int(need("attention.head_count"))
    dim = int(need("embedding_length"))
    vocab = meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", ()))
    head_dim = int(meta.get(f"{arch}.attention.key_length", dim // n_heads))
    return LlamaConfig(
        vocab_size=int(vocab),
        dim=dim,
        n_layers=int(need("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", n_heads)),
        hidden_dim=int(need("feed_forward_length")),
        rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10_000.0)),
        norm_eps=float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings="output.weight" not in tensor_names,
        max_seq_len=int(meta.get(f"{arch}.context_length", DEFAULT_CONTEXT)),
        head_dim=head_dim if head_dim != dim // n_heads else 0,
        bos_token_id=int(meta.get("tokenizer.ggml.bos_token_id", -1)),
        eos_token_id=int(meta.get("tokenizer.ggml.eos_token_id", -1)),
        add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        arch=str(arch),
    )


def tensor_to_torch(t: Any) -> torch.Tensor:
    """Dequantize one ``gguf.ReaderTensor`` to an fp32 tensor in PyTorch's shape order.

    Works through the (memory-mapped) data in slices of about ``DEQUANT_CHUNK`` values written
    into the output, so the transient memory is a few slices, not several copies of the tensor
    (the tied embedding of a small model is a fifth of its weights).
    """
    shape = tuple(int(d) for d in reversed(t.shape))
    n, kind = int(np.prod(shape)), t.tensor_type.name
    raw = np.ascontiguousarray(t.data).reshape(-1).view(np.uint8)
    per_block, block_bytes = _geometry(kind, raw.size, n)
    out = torch.empty(n)
    dest = out.numpy()  # shares memory with out
    step = max(1, DEQUANT_CHUNK // per_block)  # blocks per slice
    for b in range(0, n // per_block, step):
        e = min(b + step, n // per_block)
        vals = dequantize(raw[b * block_bytes : e * block_bytes], kind, (e - b) * per_block)
        dest[b * per_block : e * per_block] = vals
    return out.reshape(shape)


def _geometry(kind: str, nbytes: int, n: int) -> tuple[int, int]:
    """Values and bytes per block of a GGML type (1 value for the float types)."""
    check_type(kind)
    if kind in BLOCK_DTYPES:
        per_block, block_bytes = BLOCK_ELEMS[kind], BLOCK_DTYPES[kind].itemsize
    else:
        per_block, block_bytes = 1, FLOAT_BYTES[kind]
    if n % per_block or nbytes != n // per_block * block_bytes:
        raise ModelError(f"GGUF tensor of type {kind}: {nbytes} bytes do not hold {n} values")
    return per_block, block_bytes


def load_gguf(path: str | Path, max_seq_len: int | None = None) -> LoadedModel:
    """Load a Llama-family GGUF file as an fp32 :class:`Llama`.

    Args:
        path: The ``.gguf`` file.
        max_seq_len: Override the context length from the metadata (smaller rope tables).

    Returns:
        A :class:`LoadedModel` (model in eval mode, metadata, original tensor types).

    Raises:
        ModelError: Not a GGUF file, unsupported architecture or tensor type, missing tensors.
    """
    reader = _open_reader(path)
    meta = read_metadata(reader)
    tensors = list(reader.tensors)  # their data are views of the file's memory map
    del reader  # its parsed metadata fields (one array per token string) are large
    gc.collect()
    names = {t.name for t in tensors}
    cfg = config_from_metadata(meta, names)
    if max_seq_len is not None:
        cfg = LlamaConfig(**{**cfg.to_dict(), "max_seq_len": int(max_seq_len)})
    with torch.device("meta"):
        model = Llama(cfg)
    state, types = {}, {}
    for t in tensors:
        ours = gguf_to_param_name(t.name)
        w = tensor_to_torch(t)
        if ours.endswith("attention.wq.weight"):
            w = unpermute_rope_rows(w, cfg.n_heads)
        elif ours.endswith("attention.wk.weight"):
            w = unpermute_rope_rows(w, cfg.n_kv_heads)
        state[ours], types[ours] = w, t.tensor_type.name
    return LoadedModel(_materialize(model, state), meta, types, Path(path))


def _materialize(model: Llama, state: dict[str, torch.Tensor]) -> Llama:
    """Fill a meta-device model with ``state`` (checking names and shapes), re-tie the head."""
    expected = dict(model.named_parameters())
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ModelError(f"model file lacks tensors: {', '.join(missing[:4])}")
    for name, w in state.items():
        if name in expected and tuple(expected[name].shape) != tuple(w.shape):
            raise ModelError(
                f"tensor {name}: shape {tuple(w.shape)}, expected {tuple(expected[name].shape)}"
            )
    # Assign straight into the meta-device model: no empty copy of every weight is allocated
    # first, so loading peaks at one model's size (plus the tensor being dequantized).
    model.load_state_dict(state, strict=False, assign=True)
    if model.config.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    cfg = model.config
    model.rope_cos, model.rope_sin = rope_tables(cfg.head_size, cfg.max_seq_len, cfg.rope_theta)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ModelError(f"model file lacks tensors: {', '.join(left[:4])}")
    return model.eval()
