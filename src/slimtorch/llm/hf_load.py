"""Hugging Face Llama folders (``config.json`` + ``*.safetensors``): load and save.

The Hugging Face layout is ours already (rotate-half RoPE, no row permutation); only names
differ (``model.layers.N.self_attn.q_proj`` <-> ``layers.N.attention.wq``). A
``tokenizer.json`` next to the weights gives the tokenizer; its vocabulary and merges are also
put into GGUF-style ``tokenizer.ggml.*`` metadata so the model can be exported to GGUF.

Example:
    >>> hf_to_param_name("model.layers.2.mlp.up_proj.weight")
    'layers.2.feed_forward.w3.weight'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from slimtorch.errors import ModelError, first_line
from slimtorch.io import atomic_write_bytes, atomic_write_text, read_text_file
from slimtorch.llm.gguf_load import LoadedModel, _materialize
from slimtorch.llm.model import Llama, LlamaConfig

SUPPORTED_MODEL_TYPES = ("llama",)
_BLOCK = {
    "input_layernorm": "attention_norm",
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.up_proj": "feed_forward.w3",
    "mlp.down_proj": "feed_forward.w2",
}
_TOP = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}


def hf_to_param_name(name: str) -> str:
    """Our parameter name for a Hugging Face Llama tensor name."""
    if name in _TOP:
        return _TOP[name]
    parts = name.split(".")
    if len(parts) >= 5 and parts[:2] == ["model", "layers"] and parts[-1] == "weight":
        inner = ".".join(parts[3:-1])
        if inner in _BLOCK:
            return f"layers.{parts[2]}.{_BLOCK[inner]}.weight"
    raise ModelError(f"safetensors tensor {name!r} is not part of a supported Llama model")


def param_to_hf_name(name: str) -> str:
    """Inverse of :func:`hf_to_param_name`."""
    for hf, ours in _TOP.items():
        if ours == name:
            return hf
    for hf, ours in _BLOCK.items():
        prefix, _, rest = name.partition(".")
        idx, _, tail = rest.partition(".")
        if prefix == "layers" and tail == f"{ours}.weight":
            return f"model.layers.{idx}.{hf}.weight"
    raise ModelError(f"parameter {name!r} has no Hugging Face name")


def config_from_hf(cfg: dict[str, Any], path: Path) -> LlamaConfig:
    """:class:`LlamaConfig` from a ``config.json`` dict."""
    mtype = cfg.get("model_type")
    if mtype not in SUPPORTED_MODEL_TYPES:
        raise ModelError(f"{path}: model_type {mtype!r} is not supported (supported: llama)")
    if cfg.get("rope_scaling"):
        raise ModelError(f"{path}: rope_scaling {cfg['rope_scaling']!r} is not supported")
    try:
        n_heads, dim = int(cfg["num_attention_heads"]), int(cfg["hidden_size"])
        head_dim = int(cfg.get("head_dim") or dim // n_heads)
        return LlamaConfig(
            vocab_size=int(cfg["vocab_size"]),
            dim=dim,
            n_layers=int(cfg["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
            hidden_dim=int(cfg["intermediate_size"]),
            rope_theta=float(cfg.get("rope_theta", 10_000.0)),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_seq_len=int(cfg.get("max_position_embeddings", 2048)),
            head_dim=head_dim if head_dim != dim // n_heads else 0,
            bos_token_id=_first_id(cfg.get("bos_token_id")),
            eos_token_id=_first_id(cfg.get("eos_token_id")),
        )
    except KeyError as e:
        raise ModelError(f"{path}: config.json lacks {e.args[0]}") from None
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise ModelError(f"{path}: invalid model size in config.json ({e})") from None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a model folder's file; a one-line ModelError if it is not one."""
    try:
        value = json.loads(read_text_file(path, str(path), ModelError))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _first_id(v: Any) -> int:
    if isinstance(v, list):
        v = v[0] if v else None
    return -1 if v is None else int(v)


def load_hf(folder: str | Path, max_seq_len: int | None = None) -> LoadedModel:
    """Load a Hugging Face Llama folder as an fp32 :class:`Llama`.

    Args:
        folder: Holds ``config.json`` and one or more ``*.safetensors``.
        max_seq_len: Override ``max_position_embeddings``.

    Returns:
        A :class:`LoadedModel` (metadata with ``tokenizer.ggml.*`` keys if a BPE
        ``tokenizer.json`` is present).
    """
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ModelError(f"{folder}: no config.json (expected a Hugging Face model folder)")
    cfg = config_from_hf(_read_json(cfg_path), cfg_path)
    if max_seq_len is not None:
        cfg = LlamaConfig(**{**cfg.to_dict(), "max_seq_len": int(max_seq_len)})
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder}: no *.safetensors files")
    state, types = {}, {}
    for f in files:
        try:
            tensors = load_file(str(f))
        except SafetensorError as e:
            raise ModelError(f"{f}: not a valid safetensors file ({first_line(e)})") from None
        for name, w in tensors.items():
            ours = hf_to_param_name(name)
            types[ours] = str(w.dtype).removeprefix("torch.")
            state[ours] = w.float()
    with torch.device("meta"):
        model = Llama(cfg)
    meta = {"general.architecture": "llama", "general.name": folder.name}
    meta.update(_tokenizer_metadata(folder))
    return LoadedModel(_materialize(model, state), meta, types, folder)


def _tokenizer_metadata(folder: Path) -> dict[str, Any]:
    """GGUF-style tokenizer keys from ``tokenizer.json`` / ``tokenizer_config.json``."""
    try:
        return _tokenizer_keys(folder)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ModelError(f"{folder}: malformed tokenizer files ({type(e).__name__}: {e})") from None


def _tokenizer_keys(folder: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    tj = folder / "tokenizer.json"
    if tj.is_file():
        spec = _read_json(tj)
        model = spec.get("model", {})
        if model.get("type") == "BPE":
            vocab = dict(model["vocab"])
            special = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
            vocab.update(special)
            tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
            merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
            meta["tokenizer.ggml.model"] = "gpt2"
            meta["tokenizer.ggml.tokens"] = tokens
            meta["tokenizer.ggml.token_type"] = [3 if t in special else 1 for t in tokens]
            meta["tokenizer.ggml.merges"] = merges
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        tcfg = _read_json(tc)
        if isinstance(tcfg.get("chat_template"), str):
            meta["tokenizer.chat_template"] = tcfg["chat_template"]
        meta["tokenizer.ggml.add_bos_token"] = bool(tcfg.get("add_bos_token", False))
    return meta


def save_hf(model: Llama, folder: str | Path) -> Path:
    """Write ``model`` as a Hugging Face Llama folder (``config.json`` + ``model.safetensors``).

    Args:
        model: The model (plain ``nn.Linear`` layers).
        folder: Output folder (created).

    Returns:
        The folder.
    """
    folder = Path(folder)
    c = model.config
    tensors = {
        param_to_hf_name(n): p.detach().float().contiguous()
        for n, p in model.state_dict().items()
        if not (n == "output.weight" and c.tie_embeddings)
    }
    atomic_write_bytes(folder / "model.safetensors", save(tensors))
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.dim,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "intermediate_size": c.hidden_dim,
        "rope_theta": c.rope_theta,
        "rms_norm_eps": c.norm_eps,
        "tie_word_embeddings": c.tie_embeddings,
        "max_position_embeddings": c.max_seq_len,
        "head_dim": c.head_size,
        "bos_token_id": c.bos_token_id if c.bos_token_id >= 0 else None,
        "eos_token_id": c.eos_token_id if c.eos_token_id >= 0 else None,
        "torch_dtype": "float32",
    }
    atomic_write_text(folder / "config.json", json.dumps(cfg, indent=2))
    return folder
