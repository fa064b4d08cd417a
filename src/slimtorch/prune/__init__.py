"""Pruning: granularity masks, criteria, allocation, schedules, sensitivity, mask keeping.

Pure mask functions live in :mod:`slimtorch.prune.masks`; importance criteria in
:mod:`slimtorch.prune.criteria`, :mod:`slimtorch.prune.second_order` and
:mod:`slimtorch.prune.regression`; the verb :func:`prune_model` in
:mod:`slimtorch.prune.engine`.
"""

from __future__ import annotations

from slimtorch.core.granularity import (
    NM,
    Element,
    Granularity,
    Kernel,
    PerChannel,
    Vector,
    parse_granularity,
)
from slimtorch.prune.apply import MaskKeeper, apply_masks, make_permanent
from slimtorch.prune.config import PruneConfig
from slimtorch.prune.engine import PruneResult, prune_model
from slimtorch.prune.graph import ChannelGraph, ChannelGroup, trace_channels
from slimtorch.prune.masks import global_masks, granular_mask, keep_top, nm_mask
from slimtorch.prune.sparse import SparseConv2d, SparseLinear, to_sparse
from slimtorch.prune.surgery import prune_channels, pruned_spec

__all__ = [
    "NM",
    "ChannelGraph",
    "ChannelGroup",
    "Element",
    "Granularity",
    "Kernel",
    "MaskKeeper",
    "PerChannel",
    "PruneConfig",
    "PruneResult",
    "SparseConv2d",
    "SparseLinear",
    "Vector",
    "apply_masks",
    "global_masks",
    "granular_mask",
    "keep_top",
    "make_permanent",
    "nm_mask",
    "parse_granularity",
    "prune_channels",
    "prune_model",
    "pruned_spec",
    "to_sparse",
    "trace_channels",
]
