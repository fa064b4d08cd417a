"""LLMs: load Llama-family models (GGUF, Hugging Face folders), measure, generate, export.

Example:
    >>> from slimtorch.llm import LlamaConfig
    >>> LlamaConfig(vocab_size=8, dim=8, n_layers=1, n_heads=2, n_kv_heads=2, hidden_dim=8).dim
    8
"""

from __future__ import annotations

from slimtorch.llm.model import Llama, LlamaConfig
from slimtorch.llm.source import LoadedModel, default_model_path, load_model

__all__ = ["Llama", "LlamaConfig", "LoadedModel", "default_model_path", "load_model"]
