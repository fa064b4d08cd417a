"""``slimtorch search netadapt|amc``: find per-layer channel counts for a latency or MAC budget.

Both start from a trained checkpoint, search on its recorded data (validation split), and write
an ordinary, smaller checkpoint into ``--out`` (``model.safetensors`` + ``model.json``, which
every other command loads) plus the search's record: ``netadapt.json`` / ``netadapt.png``
(accuracy against latency per iteration) or ``amc.json`` / ``amc_rewards.png`` (the reward
curve). Latency comes from the measured lookup table of this machine
(:class:`~slimtorch.search.latency.LatencyTable`, cached per machine) at ``--latency-batch``,
unless NetAdapt's ``--cost macs`` / AMC's ``--resource macs``.
The search options are generated from :class:`~slimtorch.search.netadapt.NetAdaptConfig` and
:class:`~slimtorch.search.amc_config.AMCConfig`; ``--workers``/``--address`` run candidate
evaluations on Ray (the ``search`` extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from slimtorch.checkpoint import load_checkpoint, save_checkpoint
from slimtorch.cli.fields import ConfigOptions, Custom
from slimtorch.cli.options import (
    add_checkpoint_out_options,
    add_recorded_data_options,
    add_threads_option,
    check_out_dir,
    checked_by_config,
    threads_from_args,
)
from slimtorch.data import load_data, recorded_split
from slimtorch.data.record import check_given_data, data_record
from slimtorch.profile.noise import torch_threads
from slimtorch.search.amc import amc_search, write_amc
from slimtorch.search.amc_config import AMCConfig
from slimtorch.search.cost import budget_cost
from slimtorch.search.netadapt import netadapt
from slimtorch.search.netadapt_config import COSTS, NetAdaptConfig
from slimtorch.search.netadapt_steps import write_trajectory
from slimtorch.search.parallel import Workers

NETADAPT_OPTIONS = ConfigOptions(
    NetAdaptConfig,
    skip=("seed",),
    custom={
        "importance": checked_by_config(("l1", "l2", "bn")),
        "cost": checked_by_config(COSTS),
    },
    group="NetAdapt (NetAdaptConfig)",
)
AMC_OPTIONS = ConfigOptions(
    AMCConfig,
    skip=("seed",),
    custom={
        "mode": checked_by_config(("resource", "accuracy")),
        "resource": checked_by_config(("macs", "latency")),
        "importance": checked_by_config(("l1", "l2", "bn")),
        "budget_ratio": Custom(
            parse=lambda t: None if t == "none" else float(t),
            text=lambda v: "none" if v is None else str(v),
        ),
    },
    group="AMC (AMCConfig)",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``slimtorch search`` with its ``netadapt`` and ``amc`` subcommands."""
    p = sub.add_parser(
        "search",
        help="search per-layer channel counts for a latency/MAC budget (NetAdapt, AMC)",
        description="Automated channel pruning driven by measured latency or MACs.",
    )
    methods = p.add_subparsers(dest="search_command", metavar="METHOD", required=True)
    net = methods.add_parser(
        "netadapt",
        help="NetAdapt: shrink one layer group per iteration to a latency schedule",
        description="NetAdapt (Yang et al. 2018): per iteration, the best-accuracy proposal "
        "among one per layer group, each cut to meet the iteration's latency target.",
    )
    _common_options(net)
    NETADAPT_OPTIONS.add(net)
    net.set_defaults(func=run_netadapt)
    amc = methods.add_parser(
        "amc",
        help="AMC: a DDPG agent chooses each layer group's preserve ratio",
        description="AMC (He et al. 2018): layer-by-layer preserve ratios from a DDPG agent, "
        "scored without fine-tuning; the best episode's model is written (fine-tune it next).",
    )
    _common_options(amc)
    AMC_OPTIONS.add(amc)
    amc.set_defaults(func=run_amc)


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="trained checkpoint folder")
    add_checkpoint_out_options(p)
    add_recorded_data_options(p, batch_size=None)
    p.add_argument("--search-seed", type=int, default=0, help="seed of the search (default 0)")
    g = p.add_argument_group("latency table and workers")
    g.add_argument(
        "--latency-table",
        type=Path,
        default=None,
        help="lookup-table file of measured layer latencies (default: this machine's cache)",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=1,
        help="parallel evaluation workers; > 1 starts a local Ray (default 1)",
    )
    g.add_argument(
        "--address",
        default=None,
        help="run evaluations on this Ray cluster (e.g. auto, ray://host:10001)",
    )
    g.add_argument(
        "--state",
        type=Path,
        default=None,
        help="resumable state file (default OUT/<method>_state.safetensors)",
    )
    add_threads_option(p, "the search (latency is measured with them too)")


def _setup(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """Checkpoint, data, example input, workers, state path and cost of one search."""

    check_out_dir(args.out, args.overwrite)
    model, spec, metrics = load_checkpoint(args.checkpoint)
    data, seed = recorded_split(metrics, str(args.checkpoint), args.data, args.seed)
    splits = load_data(data, seed=seed)
    check_given_data(args.data, splits, metrics, spec.kwargs, str(args.checkpoint))
    example = splits.train[0][0].unsqueeze(0)  # [1, C, H, W]
    state = args.state or args.out / f"{method}_state.safetensors"
    return {
        "model": model.eval(),
        "spec": spec,
        "splits": splits,
        "example": example,
        "workers": Workers(count=args.workers, address=args.address),
        "state_path": state,
        "record": {**data_record(data, seed, splits), "searched_from": str(args.checkpoint)},
    }


def _cost(args: argparse.Namespace, kind: str, s: dict[str, Any], batch: int) -> Any:
    """``model -> cost`` for the budget (this machine's lookup table, calibrated on the
    starting model, or MACs)."""

    example, model = s["example"], s["model"]
    return budget_cost(kind, example, batch, args.latency_table, True, calibrate_on=model)


def run_netadapt(args: argparse.Namespace) -> int:
    """Run ``slimtorch search netadapt``."""

    with torch_threads(threads_from_args(args)):
        s = _setup(args, "netadapt")
        config = NETADAPT_OPTIONS.build(args, seed=args.search_seed)
        cost = _cost(args, config.cost, s, config.latency_batch)
        result = netadapt(
            s["model"],
            s["splits"],
            s["example"],
            config,
            latency=cost,
            workers=s["workers"],
            state_path=s["state_path"],
            spec=s["spec"],
        )
        write_trajectory(result, args.out)
        summary = {
            "method": "netadapt",
            "cost": config.cost,
            "stop_reason": result.stop_reason,
            "latency_ratio": result.trajectory[-1].latency / result.original_latency,
            "val_accuracy": result.val_accuracy,
            "test_accuracy": result.test_accuracy,
        }
        _save(args, result.model, result.spec, {**s["record"], **summary})
    return 0


def run_amc(args: argparse.Namespace) -> int:
    """Run ``slimtorch search amc``."""

    with torch_threads(threads_from_args(args)):
        s = _setup(args, "amc")
        overrides: dict[str, Any] = {"seed": args.search_seed}
        if args.mode == "accuracy":
            overrides["budget_ratio"] = None  # accuracy-guaranteed AMC has no budget
        config = AMC_OPTIONS.build(args, **overrides)
        latency = None
        if config.resource == "latency":
            latency = _cost(args, "latency", s, config.latency_batch)
        result = amc_search(
            s["model"],
            s["splits"],
            s["example"],
            config,
            s["workers"],
            latency,
            state_path=s["state_path"],
            spec=s["spec"],
        )
        write_amc(result, args.out)
        summary = {
            "method": "amc",
            "best_episode": result.best.to_dict(),
            "original": result.original,
        }
        _save(args, result.model, result.spec, {**s["record"], **summary})
    return 0


def _save(args: argparse.Namespace, model: Any, spec: Any, metrics: dict[str, Any]) -> None:

    path = save_checkpoint(args.out, model, spec, metrics, overwrite=args.overwrite)
    print(f"wrote {path} and the search record in {args.out}")
