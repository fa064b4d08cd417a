"""Closed-form sizes of a compressed model in the paper's convention."""

from __future__ import annotations

import math

import torch
from torch import nn

from slimtorch.compress.configs import HuffmanConfig
from slimtorch.compress.measure import estimate_bytes


def _entries_ref(positions: list[int], bits: int) -> int:
    """Relative-index entries, fillers included, by walking the positions one by one."""
    entries, prev, span = 0, -1, 2**bits
    for p in positions:
        zeros = p - prev - 1
        while zeros >= span:  # a filler skips span - 1 zeros and takes one slot itself
            entries, zeros = entries + 1, zeros - span
        entries, prev = entries + 1, p
    return entries


def test_estimate_bytes_matches_closed_form() -> None:
    model = nn.Sequential(nn.Linear(100, 3, bias=False))
    with torch.no_grad():
        model[0].weight.zero_()
        kept = [0, 1, 70, 150, 299]
        model[0].weight.view(-1)[kept] = 1.0
    masks = {"0.weight": model[0].weight != 0}
    n = _entries_ref(kept, 5)
    assert n > len(kept)  # the long gaps need fillers
    huff = HuffmanConfig(index_bits=5)
    assert estimate_bytes(model, masks, {}, huff) == math.ceil(n * (32 + 5) / 8)
    qbits = {"0.weight": 4}
    assert estimate_bytes(model, masks, qbits, huff) == math.ceil((n * (4 + 5) + 16 * 32) / 8)
    assert estimate_bytes(model, {}, {}, huff) == 300 * 4
    half = HuffmanConfig(index_bits=5, codebook_dtype="float16")  # fp16 centroids: 16 bits each
    assert estimate_bytes(model, masks, qbits, half) == math.ceil((n * (4 + 5) + 16 * 16) / 8)
