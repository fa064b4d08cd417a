"""The ``netadapt`` and ``amc`` stages: channel counts searched for a latency or MAC budget.

Each replaces the pipeline's model with the smaller model its search found (an ordinary model
whose spec rebuilds it, so the file and its decoded checkpoint load like any other) and must
come before pruning masks or quantization exist. The budget is measured on this machine's
latency lookup table at the config's ``latency_batch`` (or counts MACs: NetAdapt's
``cost = "macs"``, AMC's ``resource = "macs"``). AMC's model is not fine-tuned: follow it with a
``finetune`` stage; NetAdapt ends with its own long-term fine-tune.
"""

from __future__ import annotations

from typing import Any

from slimtorch.compress.state import StageContext
from slimtorch.errors import ConfigError
from slimtorch.search.amc import amc_search
from slimtorch.search.cost import budget_cost
from slimtorch.search.netadapt import netadapt as netadapt_search


def _example(ctx: StageContext) -> Any:
    """One training sample as a batch of 1 (the shape latency and MACs are counted on)."""
    if ctx.state.masks:
        raise ConfigError("a search stage must come before any prune stage (masks exist)")
    return next(iter(ctx.loaders[0]))[0][:1]


def run_netadapt(ctx: StageContext) -> None:
    """Replace the model with the one NetAdapt finds for ``ctx.config``'s budget."""
    cfg, example = ctx.config, _example(ctx)
    cost = budget_cost(
        cfg.cost, example, cfg.latency_batch, progress=ctx.progress, calibrate_on=ctx.state.model
    )
    result = netadapt_search(
        ctx.state.model,
        ctx.loaders,
        example,
        cfg,
        latency=cost,
        progress=ctx.progress,
        spec=ctx.state.spec,
    )
    ctx.state.model, ctx.state.spec = result.model, result.spec


def run_amc(ctx: StageContext) -> None:
    """Replace the model with AMC's best episode for ``ctx.config``'s budget (not fine-tuned)."""
    cfg, example = ctx.config, _example(ctx)
    latency = None
    if cfg.resource == "latency":
        latency = budget_cost(
            "latency",
            example,
            cfg.latency_batch,
            progress=ctx.progress,
            calibrate_on=ctx.state.model,
        )
    result = amc_search(
        ctx.state.model,
        ctx.loaders,
        example,
        cfg,
        latency=latency,
        progress=ctx.progress,
        spec=ctx.state.spec,
    )
    ctx.state.model, ctx.state.spec = result.model, result.spec
