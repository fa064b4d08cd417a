"""LLM compression: round-to-nearest, AWQ, GPTQ, k-means, magnitude, Wanda and SparseGPT on
every linear of a Llama-family model's blocks, calibrated block by block.

Example:
    >>> from slimtorch.llm.compress import AWQConfig
    >>> AWQConfig(bits=3, group_size=32).rtn().bits
    3
"""

from __future__ import annotations

from slimtorch.llm.compress.api import METHODS, CompressReport, compress_model
from slimtorch.llm.compress.config import (
    AWQConfig,
    CalibConfig,
    GPTQConfig,
    GroupKMeansConfig,
    MagnitudeConfig,
    RTNConfig,
    SparseGPTConfig,
    WandaConfig,
)

__all__ = [
    "METHODS",
    "AWQConfig",
    "CalibConfig",
    "CompressReport",
    "GPTQConfig",
    "GroupKMeansConfig",
    "MagnitudeConfig",
    "RTNConfig",
    "SparseGPTConfig",
    "WandaConfig",
    "compress_model",
]
