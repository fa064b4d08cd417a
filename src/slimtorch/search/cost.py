"""What a search's budget counts: this machine's measured latency, or MACs.

The Python API of :func:`~slimtorch.search.netadapt.netadapt` and
:func:`~slimtorch.search.amc.amc_search` takes the cost as a callable ``model -> float``; the
command line and recipe stages build it here from the config's ``cost`` / ``resource`` and
``latency_batch``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> budget_cost("macs", torch.zeros(1, 4))(nn.Linear(4, 3))
    12.0
"""

from __future__ import annotations

import functools
import os
from typing import Any

from torch import nn

from slimtorch.errors import ConfigError
from slimtorch.search.latency import LatencyTable
from slimtorch.search.netadapt_config import COSTS, Latency
from slimtorch.search.netadapt_steps import macs_cost


def budget_cost(
    cost: str,
    example_input: Any,
    latency_batch: int = 1,
    table_path: str | os.PathLike[str] | None = None,
    progress: bool = False,
    calibrate_on: nn.Module | None = None,
) -> Latency:
    """``model -> cost``: predicted seconds at ``latency_batch`` from this machine's lookup
    table (``cost="latency"``, measured and cached on first use), or MACs (``"macs"``).

    Args:
        cost: ``latency`` or ``macs``.
        example_input: one input batch (batch 1; the table repeats it to ``latency_batch``).
        latency_batch: batch size of the latency.
        table_path: the lookup-table file (None: this machine's cache).
        progress: a progress bar while new layer configurations are timed.
        calibrate_on: the search's starting model: measured once whole, so the table's
            prediction meets it (:meth:`LatencyTable.calibrate`; every channel-pruned copy
            shares the correction).
    """
    if cost not in COSTS:
        raise ConfigError(f"cost: expected one of {', '.join(COSTS)}, got {cost!r}")
    if cost == "macs":
        return macs_cost(example_input)
    table = LatencyTable(table_path, batch=latency_batch, progress=progress)
    if calibrate_on is not None:
        table.calibrate(calibrate_on, example_input)
    return functools.partial(_predict, table, example_input)


def _predict(table: LatencyTable, example_input: Any, model: nn.Module) -> float:
    return table.predict(model, example_input)
