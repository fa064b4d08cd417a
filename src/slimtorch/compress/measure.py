"""Measurements after each stage of a compression run: accuracy, sparsity, size, MACs, latency.

Sizes before the encode stage are closed forms in the paper's convention (kept values at their
bit width, relative indices at their fixed width including filler entries, codebook entries at
the width the recipe's encode stage stores them: 32 bits for float32, 16 for float16); the
encode stage's size is the file's length.

Example:
    >>> from torch import Tensor, nn
    >>> estimate_bytes(nn.Linear(4, 2, bias=False), {}, {"weight": 2}, HuffmanConfig())
    18
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor, nn

from slimtorch.compress.configs import HuffmanConfig
from slimtorch.compress.state import Loaders, PipelineState, dense_model, weight_keys
from slimtorch.core.trace import trace_model
from slimtorch.encode import CompressedSummary
from slimtorch.encode.sparse_index import relative_gaps
from slimtorch.models import ModelSpec
from slimtorch.profile.noise import Noise
from slimtorch.profile.timing import measure_latency
from slimtorch.train import evaluate

LATENCY_RUNS = 30
LATENCY_WARMUP = 3
LATENCY_BUDGET_S = 0.5

CODEBOOK_ENTRY_BITS = {"float32": 32, "float16": 16}  # bits per stored centroid, by dtype


@dataclass(frozen=True)
class StageRecord:
    """Measurements after one stage (``stage == "original"`` for the uncompressed model)."""

    index: int
    stage: str
    test_accuracy: float
    val_accuracy: float
    nonzero_weights: int
    weights: int
    params: int
    size_bytes: int
    bits_per_weight: float
    ratio: float
    macs: int
    effective_macs: int
    latency_ms: float
    seconds: float
    exact_file: bool = False  # size is the real file's length (encode stage)
    threads: int | None = None  # torch threads of the latency figure
    noisy: bool = False  # the latency figure was flagged noisy (slimtorch.profile.noise)
    noise: Noise | None = None


@dataclass(frozen=True)
class PipelineResult:
    """Records (baseline first), the final dense model, masks, and the file written."""

    records: tuple[StageRecord, ...]
    model: nn.Module
    spec: ModelSpec
    masks: dict[str, Tensor]
    qbits: dict[str, int]
    file: CompressedSummary | None
    histogram: dict[str, Any]
    original_bytes: int
    codebook_dtype: str = "float32"  # how the closed-form sizes counted codebook entries


def state_bytes(model: nn.Module) -> int:
    """Bytes of every ``state_dict`` tensor as stored (fp32 = 4 bytes per value)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def estimate_bytes(model: nn.Module, masks: dict, qbits: dict, huffman: HuffmanConfig) -> int:
    """Closed-form size (paper convention) of a dense model with these masks and bit widths.

    Kept values cost their bit width (quantized: ``qbits``, else the dtype's), a pruned tensor
    adds one fixed-width relative index per stored entry (fillers included) and a quantized
    tensor a ``2**bits`` codebook of ``huffman.codebook_dtype`` entries.
    """
    entry_bits = CODEBOOK_ENTRY_BITS[huffman.codebook_dtype]
    bits = 0
    for key, t in model.state_dict().items():
        vbits = qbits.get(key, t.element_size() * 8)
        if key in qbits:
            bits += (2 ** qbits[key]) * entry_bits
        mask = masks.get(key)
        if mask is not None and not bool(mask.all()):
            ib = huffman.bits_for(tuple(t.shape))
            gaps, _ = relative_gaps(np.flatnonzero(mask.reshape(-1).numpy()), ib)
            bits += gaps.size * (vbits + ib)
        else:
            bits += t.numel() * vbits
    return math.ceil(bits / 8)


def measure(
    state: PipelineState,
    index: int,
    stage: str,
    loaders: Loaders,
    original: int,
    seconds: float,
    threads: int | None = None,
) -> StageRecord:
    """Accuracy, sparsity, size, MACs and latency (timed with ``threads``) of the model."""
    model = state.model.eval()
    dense = dense_model(model, state.spec)
    x = next(iter(loaders[2]))[0][:1]
    keys = weight_keys(dense)
    weights = dict(dense.state_dict())
    nonzero = sum(int((weights[k] != 0).sum()) for k in keys)
    total = sum(weights[k].numel() for k in keys)
    if state.file is not None:
        size = state.file.file_bytes
    else:
        size = estimate_bytes(dense, state.masks, state.qbits, state.huffman)
    trace = trace_model(dense, x)
    latency = measure_latency(
        model,
        x,
        warmup=LATENCY_WARMUP,
        runs=LATENCY_RUNS,
        max_seconds=LATENCY_BUDGET_S,
        threads=threads,
    )
    params = sum(p.numel() for p in dense.parameters())
    return StageRecord(
        index,
        stage,
        evaluate(model, loaders[2]).accuracy,
        evaluate(model, loaders[1]).accuracy,
        nonzero,
        total,
        params,
        size,
        8 * size / params,
        original / size,
        trace.total_macs,
        trace.total_effective_macs,
        latency.median_s * 1e3,
        seconds,
        state.file is not None,
        latency.threads,
        latency.noisy,
        latency.noise,
    )


def stage_labels(records: Sequence[StageRecord]) -> list[str]:
    """Short, unique labels: ``"0 prune"``, ``"1 finetune"``, ... (``original`` first)."""
    return [r.stage if r.index < 0 else f"{r.index} {r.stage}" for r in records]
