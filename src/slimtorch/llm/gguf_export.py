"""Write a :class:`~slimtorch.llm.model.Llama` as a GGUF file llama.cpp can load.

Weights go out as F32, F16, Q8_0, Q4_0 or Q4_1 blocks (ggml's reference rounding, see
:mod:`slimtorch.llm.gguf_quants`); 1-D tensors (norms) stay F32 as llama.cpp's converter
does. The Q/K rows are permuted back to llama.cpp's rotary layout, GGUF's shape order is
used, the head is left out when it is tied to the embeddings, and the metadata (tokenizer,
chat template, ...) is copied from the source file with the model's own hyperparameters and
``general.file_type`` written over it. Any transform already applied to the model (e.g.
AWQ scales folded into the weights) is thereby in the file. Writes are atomic.

Example:
    >>> from slimtorch.llm.gguf_export import ExportConfig, export_gguf
    >>> export_gguf(loaded.model, "out.gguf", loaded.metadata,
    ...             ExportConfig(weight_type="Q8_0"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from gguf import GGUFValueType as V

from slimtorch.errors import ConfigError
from slimtorch.io import atomic_output
from slimtorch.llm.gguf_load import param_to_gguf_name, permute_rope_rows
from slimtorch.llm.gguf_quants import QK, quantize
from slimtorch.llm.model import Llama

CONFIG_VERSION = 1
EXPORT_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")
# llama.cpp's LLAMA_FTYPE_* ids (gguf.LlamaFileType), written as general.file_type.
FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7}
# Keys we write from the model itself (never copied from the source metadata).
_OWN_KEYS = (
    "general.architecture",
    "general.file_type",
    "general.quantization_version",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
)
GGML_QUANTIZATION_VERSION = 2  # ggml's GGML_QNT_VERSION


@dataclass(frozen=True)
class ExportConfig:
    """GGUF export options.

    Args:
        weight_type: Storage of the 2-D weights: F32, F16, Q8_0, Q4_0 or Q4_1.
        embedding_type: Storage of ``token_embd`` (and an untied head): F32, F16, Q8_0, Q4_0,
            Q4_1, or ``""`` to store it as the 2-D weights.
        version: Config format version.
    """

    weight_type: str = field(default="Q8_0", metadata={"choices": EXPORT_TYPES})
    embedding_type: str = ""
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        for name in ("weight_type", "embedding_type"):
            v = getattr(self, name)
            if v and v not in EXPORT_TYPES:
                raise ConfigError(f"{name}: expected one of {', '.join(EXPORT_TYPES)}, got {v!r}")


def model_metadata(model: Llama, weight_type: str) -> dict[str, Any]:
    """The ``{arch}.*`` hyperparameters and ``general.*`` keys llama.cpp reads.

    Example:
        >>> from slimtorch.llm.model import LlamaConfig
        >>> m = Llama(LlamaConfig(vocab_size=8, dim=8, n_layers=1, n_heads=2, n_kv_heads=1,
        ...                       hidden_dim=16))
        >>> model_metadata(m, "F32")["llama.attention.head_count_kv"]
        1
    """
    c, a = model.config, model.config.arch
    meta: dict[str, Any] = {
        f"{a}.context_length": c.max_seq_len,
        f"{a}.embedding_length": c.dim,
        f"{a}.block_count": c.n_layers,
        f"{a}.feed_forward_length": c.hidden_dim,
        f"{a}.attention.head_count": c.n_heads,
        f"{a}.attention.head_count_kv": c.n_kv_heads,
        f"{a}.rope.freq_base": float(c.rope_theta),
        f"{a}.attention.layer_norm_rms_epsilon": float(c.norm_eps),
        f"{a}.rope.dimension_count": c.head_size,
        f"{a}.vocab_size": c.vocab_size,
        "general.file_type": FILE_TYPES[weight_type],
        "general.quantization_version": GGML_QUANTIZATION_VERSION,
    }
    if c.head_dim:
        meta[f"{a}.attention.key_length"] = meta[f"{a}.attention.value_length"] = c.head_dim
    if c.bos_token_id >= 0:
        meta["tokenizer.ggml.bos_token_id"] = c.bos_token_id
    if c.eos_token_id >= 0:
        meta["tokenizer.ggml.eos_token_id"] = c.eos_token_id
    return meta


def gguf_tensors(model: Llama, cfg: ExportConfig) -> list[tuple[str, np.ndarray, str]]:
    """``(gguf_name, data, type)`` per tensor: quantized data as ``uint8 [rows, row_bytes]``."""
    c = model.config
    out = []
    for name, p in model.state_dict().items():
        if name == "output.weight" and c.tie_embeddings:
            continue
        w = p.detach().float().cpu()
        if name.endswith("attention.wq.weight"):
            w = permute_rope_rows(w, c.n_heads)
        elif name.endswith("attention.wk.weight"):
            w = permute_rope_rows(w, c.n_kv_heads)
        embed = name in ("tok_embeddings.weight", "output.weight")
        t = "F32" if w.ndim == 1 else (cfg.embedding_type if embed else "") or cfg.weight_type
        out.append((param_to_gguf_name(name), _encode(w, t, name), t))
    return out


def _encode(w: torch.Tensor, type_name: str, name: str) -> np.ndarray:
    x = w.numpy()
    if type_name == "F32":
        return np.ascontiguousarray(x, dtype=np.float32)
    if type_name == "F16":
        return x.astype(np.float16)
    if x.shape[-1] % QK:
        raise ConfigError(f"{name}: rows of {x.shape[-1]} values do not split into blocks of {QK}")
    return quantize(x, type_name).reshape(x.shape[0], -1)


def export_gguf(
    model: Llama,
    path: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
    config: ExportConfig | None = None,
) -> Path:
    """Write ``model`` as GGUF.

    Args:
        model: The model (fp32 weights; whatever transforms are folded in get written).
        path: Output file (written atomically).
        metadata: Source metadata to copy (tokenizer, chat template, general.*).
        config: Storage types.

    Returns:
        The path written.
    """

    cfg = config or ExportConfig()
    target = Path(path)
    with atomic_output(target) as tmp:  # the user's umask, as for any file they write
        writer = gguf.GGUFWriter(tmp, model.config.arch)
        meta = {k: v for k, v in (metadata or {}).items() if k not in _OWN_KEYS}
        meta.update(model_metadata(model, cfg.weight_type))
        for key, value in meta.items():
            _add_kv(writer, key, value)
        for name, data, t in gguf_tensors(model, cfg):
            raw = None if t in ("F32", "F16") else gguf.GGMLQuantizationType[t]
            writer.add_tensor(name, data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return target


def _value_type(value: Any) -> Any:

    if isinstance(value, bool):
        return V.BOOL
    if isinstance(value, int):
        return V.UINT32 if value >= 0 else V.INT32
    if isinstance(value, float):
        return V.FLOAT32
    if isinstance(value, str):
        return V.STRING
    raise ConfigError(f"metadata value {value!r} has no GGUF type")


def _add_kv(writer: Any, key: str, value: Any) -> None:

    if isinstance(value, list | tuple):
        if not value:
            return
        sub = _value_type(value[0])
        if sub == V.UINT32:  # llama.cpp reads token types as INT32 arrays
            sub = V.INT32
        writer.add_key_value(key, list(value), V.ARRAY, sub)
    else:
        writer.add_key_value(key, value, _value_type(value))
