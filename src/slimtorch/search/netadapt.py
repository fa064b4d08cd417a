"""NetAdapt (Yang et al. 2018, Algorithm 1): shrink a trained model to a latency budget, one
channel group at a time, keeping the proposal that loses the least accuracy.

Each iteration ``i`` (from 1) sets a target ``latency_{i-1} - init_reduction * L0 *
reduction_decay ** (i - 1)`` (``L0``: the original latency). For every prunable channel group
(:func:`slimtorch.prune.graph.trace_channels`) it finds the largest channel count whose pruned
model meets the target (a binary search with the latency callable), removes the least
important channels with channel surgery (:func:`slimtorch.prune.surgery.prune_channels`,
scored by :mod:`slimtorch.prune.channel_importance`), short-term fine-tunes that proposal and
scores it on a validation subset. The proposals are independent: they run through
:class:`~slimtorch.search.parallel.Workers` (in-process, or on Ray), each seeded from
``(seed, iteration, group)``, so the result does not depend on the worker count. The most
accurate proposal becomes the next model. The search stops when the latency meets the budget;
the last model is then long-term fine-tuned.

Latency is any callable ``model -> seconds`` (the CLI passes the measured lookup table's
``predict``); :func:`macs_cost` gives MACs instead (the budget is then in MACs).

After each iteration the state (current weights and sizes, trajectory) is written atomically
to ``state_path`` (:mod:`slimtorch.search.netadapt_state`): a killed search started again with
the same config (``max_iterations`` may be raised), model and data resumes from its last
finished iteration and ends as if it had never stopped.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from slimtorch.data import Splits
from slimtorch.errors import ConfigError, ModelError
from slimtorch.models import ModelSpec
from slimtorch.prune.channel_importance import IMPORTANCE, keep_by_importance
from slimtorch.prune.graph import ChannelGraph, ChannelGroup, trace_channels
from slimtorch.prune.surgery import channel_sizes, prune_channels, pruned_spec
from slimtorch.search import netadapt_state as state_file
from slimtorch.search.netadapt_config import (
    STOPPED,
    Callback,
    IterationRecord,
    Latency,
    NetAdaptConfig,
    NetAdaptResult,
    Proposal,
)
from slimtorch.search.netadapt_steps import (
    ProposalOutcome,
    ProposalTask,
    SearchData,
    accuracy,
    candidate_counts,
    largest_count,
    macs_cost,
    search_data,
    short_term_task,
    task_seed,
    write_trajectory,
)
from slimtorch.search.parallel import Workers
from slimtorch.train import FitConfig, fit

__all__ = [
    "IterationRecord",
    "NetAdaptConfig",
    "NetAdaptResult",
    "Proposal",
    "macs_cost",
    "netadapt",
    "write_trajectory",
]


@dataclass(frozen=True)
class _Search:
    """What stays fixed during a search."""

    config: NetAdaptConfig
    data: SearchData
    example_input: Any
    latency: Latency
    workers: Workers
    groups: tuple[str, ...]
    original: nn.Module
    state_path: Path | None
    fingerprint: str
    progress: bool


@dataclass
class _Run:
    """Where a search stands: the current model and the trajectory so far."""

    model: nn.Module
    trajectory: list[IterationRecord]
    original_latency: float
    budget: float

    @property
    def iteration(self) -> int:
        return self.trajectory[-1].iteration

    @property
    def latency(self) -> float:
        return self.trajectory[-1].latency


def netadapt(
    model: nn.Module,
    splits_or_loaders: Splits | Sequence[DataLoader],
    example_input: Tensor | tuple[Tensor, ...],
    config: NetAdaptConfig | None = None,
    *,
    latency: Latency,
    workers: Workers | None = None,
    state_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    spec: ModelSpec | None = None,
    callbacks: Sequence[Callback] = (),
) -> NetAdaptResult:
    """Shrink ``model`` to a latency budget with NetAdapt (see the module docstring).

    Args:
        model: a trained classifier ``torch.fx`` can trace (not changed).
        splits_or_loaders: a :class:`~slimtorch.data.Splits`, or ``(train, val[, test])``
            data loaders (their datasets are read; batching follows ``config``).
        example_input: an input to trace channels with (batch 1 is enough).
        config: the search's settings (default: ``NetAdaptConfig()``).
        latency: ``model -> latency`` (seconds for a measured or table latency; any cost
            that grows with the channel counts works, e.g. :func:`macs_cost`).
        workers: where the proposals' short-term fine-tunes run (default: in this process).
        state_path: the resumable state file (None: none). An existing one resumes the
            search; it stays after the search, so a rerun goes straight to the long-term
            fine-tune.
        progress: progress bars and one line per iteration.
        spec: the spec ``model`` was built from; the result then carries a pruned spec.
        callbacks: ``callback(record)`` after each iteration (once its state is written);
            returning True stops the search there, without the long-term fine-tune.

    Returns:
        The :class:`NetAdaptResult`.

    Raises:
        ModelError: the model has no prunable channel group or cannot be traced.
        ConfigError: ``state_path`` holds a state of another config, model or data.

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,))))
        >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))  # 96 MACs
        >>> x = torch.zeros(1, 4)
        >>> cfg = NetAdaptConfig(budget_ratio=0.5, init_reduction=0.3, long_term_epochs=0)
        >>> result = netadapt(model, (data, data), x, cfg, latency=macs_cost(x), progress=False)
        >>> [(r.latency, r.channels["0"]) for r in result.trajectory]  # targets 67.2, 38.35
        [(96.0, 16), (66.0, 11), (36.0, 6)]
    """
    config, workers = config or NetAdaptConfig(), workers or Workers()
    search = _prepare(model, splits_or_loaders, example_input, config, latency, workers,
                      state_path, progress)  # fmt: skip
    run = _start(search)
    reason = _iterate(search, run, callbacks)
    if reason != STOPPED:
        _long_term(search, run.model)
    return _result(search, run, reason, spec)


def _prepare(
    model: nn.Module,
    source: Splits | Sequence[DataLoader],
    example_input: Any,
    config: NetAdaptConfig,
    latency: Latency,
    workers: Workers,
    state_path: str | os.PathLike[str] | None,
    progress: bool,
) -> _Search:
    """Trace the groups, read the data, fingerprint what a state file must match."""
    graph = trace_channels(model, example_input)
    groups = tuple(g.name for g in graph.prunable())
    if not groups:
        raise ModelError(f"{type(model).__name__} has no prunable channel group for NetAdapt")
    data = search_data(source, config.val_samples, config.seed)
    task = data.task
    tensors = [task.train_x, task.train_y, task.val_x, task.val_y]
    key = state_file.fingerprint(model, tensors, example_input)
    path = None if state_path is None else Path(state_path)
    original = copy.deepcopy(model)
    return _Search(config, data, example_input, latency, workers, groups, original, path,
                   key, progress)  # fmt: skip


def _channels(graph: ChannelGraph, groups: tuple[str, ...]) -> dict[str, int]:
    return {name: graph.group(name).size for name in groups}


def _start(s: _Search) -> _Run:
    """A fresh run (iteration 0: the original model), or the run a state file holds."""
    if s.state_path is not None and s.state_path.exists():
        saved = state_file.read_state(s.state_path)
        state_file.check_state(s.state_path, saved.header, s.config.to_dict(), s.fingerprint)
        model = state_file.rebuild(s.original, saved.header["channels"], saved.weights)
        records = [IterationRecord.from_dict(r) for r in saved.header["trajectory"]]
        head = saved.header
        _say(s, f"netadapt: resuming {s.state_path} after iteration {records[-1].iteration}")
        return _Run(model, records, head["original_latency"], head["budget"])
    model = copy.deepcopy(s.original)
    l0 = _measured(s, model)
    task, c = s.data.task, s.config
    acc = accuracy(model, task.val_x, task.val_y, c.batch_size)
    channels = _channels(trace_channels(model, s.example_input), s.groups)
    budget = c.budget_seconds if c.budget_seconds is not None else c.budget_ratio * l0
    return _Run(model, [IterationRecord(0, l0, acc, None, None, channels)], l0, float(budget))


def _target(config: NetAdaptConfig, run: _Run, iteration: int) -> float:
    """The schedule: ``latency_{i-1} - init_reduction * L0 * reduction_decay ** (i - 1)``."""
    step = config.init_reduction * run.original_latency * config.reduction_decay ** (iteration - 1)
    return run.latency - step


def _iterate(s: _Search, run: _Run, callbacks: Sequence[Callback]) -> str:
    """Iterations until the budget is met; returns why the search stopped."""
    while run.latency > run.budget:
        if run.iteration >= s.config.max_iterations:
            return "max_iterations reached"
        record = _one_iteration(s, run)
        if record is None:
            _say(s, "netadapt: no channel group cut alone meets this iteration's target (a "
                 "smaller init_reduction or reduction_decay takes smaller steps)")  # fmt: skip
            return "no group meets the target"
        _save(s, run)
        _say(s, _describe(record, run))
        if any([bool(cb(record)) for cb in callbacks]):
            return STOPPED
    return "budget met"


@dataclass(frozen=True)
class _Candidate:
    index: int
    group: str
    channels: int
    latency: float
    model: nn.Module


def _one_iteration(s: _Search, run: _Run) -> IterationRecord | None:
    """Propose, fine-tune and score one cut per group; move ``run`` to the most accurate."""
    iteration = run.iteration + 1
    target = _target(s.config, run, iteration)
    candidates = _candidates(s, run.model, target, iteration)
    if not candidates:
        return None
    outcomes = _evaluate(s, candidates, iteration)
    seed = s.config.seed
    proposals = tuple(
        Proposal(c.group, c.channels, c.latency, o.accuracy, task_seed(seed, iteration, c.index))
        for c, o in zip(candidates, outcomes, strict=True)
    )
    best = max(range(len(candidates)), key=lambda k: _rank(candidates[k], outcomes[k]))
    chosen = candidates[best]
    chosen.model.load_state_dict(outcomes[best].state)
    channels = {**run.trajectory[-1].channels, chosen.group: chosen.channels}
    record = IterationRecord(iteration, chosen.latency, outcomes[best].accuracy, target,
                             chosen.group, channels, proposals)  # fmt: skip
    run.model = chosen.model
    run.trajectory.append(record)
    return record


def _rank(candidate: _Candidate, outcome: ProposalOutcome) -> tuple[float, float, int]:
    """Highest accuracy first; ties go to the lower latency, then to the earlier group."""
    return outcome.accuracy, -candidate.latency, -candidate.index


def _candidates(s: _Search, model: nn.Module, target: float, iteration: int) -> list[_Candidate]:
    """Per group, the largest channel count that meets ``target``, pruned (groups that cannot
    meet it are left out)."""
    graph = trace_channels(model, s.example_input)
    found = []
    with Progress(transient=True, disable=not _bars(s)) as bar:
        task = bar.add_task(f"netadapt iteration {iteration}: channel counts", total=len(s.groups))
        for index, name in enumerate(s.groups):
            candidate = _choose(s, model, graph, graph.group(name), target, index)
            if candidate is not None:
                found.append(candidate)
            bar.advance(task)
    return found


def _choose(s: _Search, model: nn.Module, graph: ChannelGraph, group: ChannelGroup,
            target: float, index: int) -> _Candidate | None:  # fmt: skip
    """Binary search for ``group``'s count (each count pruned once), then the pruned model."""
    scores = IMPORTANCE[s.config.importance](model, group)
    built: dict[int, nn.Module] = {}

    def cost(count: int) -> float:
        keep = keep_by_importance(scores, 1 - count / group.size)
        built[count] = prune_channels(model, s.example_input, {group.name: keep}, graph=graph)
        return _measured(s, built[count])

    counts = candidate_counts(group.size, s.config.min_channels, s.config.round_to)
    found = largest_count(counts, cost, target)
    if found is None:
        return None
    return _Candidate(index, group.name, found[0], found[1], built[found[0]])


def _measured(s: _Search, model: nn.Module) -> float:
    value = float(s.latency(model))
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"netadapt: the latency callable returned {value}; expected >= 0")
    return value


def _evaluate(s: _Search, candidates: list[_Candidate], iteration: int) -> list[ProposalOutcome]:
    c = s.config

    def task(cand: _Candidate) -> ProposalTask:
        seed = task_seed(c.seed, iteration, cand.index)
        return ProposalTask(cand.model, s.data.task, c.short_term_batches, c.batch_size,
                            c.short_term_lr, c.optimizer, seed)  # fmt: skip

    items = [task(cand) for cand in candidates]
    label = f"netadapt iteration {iteration}: short-term fine-tune" if _bars(s) else ""
    return s.workers.map(short_term_task, items, label=label)


def _save(s: _Search, run: _Run) -> None:
    if s.state_path is None:
        return
    header = {
        "config": s.config.to_dict(),
        "fingerprint": s.fingerprint,
        "iteration": run.iteration,
        "channels": channel_sizes(run.model),
        "original_latency": run.original_latency,
        "budget": run.budget,
        "trajectory": [r.to_dict() for r in run.trajectory],
    }
    state_file.write_state(s.state_path, header, run.model)


def _long_term(s: _Search, model: nn.Module) -> None:
    c = s.config
    if c.long_term_epochs == 0:
        return
    task = s.data.task
    generator = torch.Generator().manual_seed(c.seed)
    train = DataLoader(TensorDataset(task.train_x, task.train_y), batch_size=c.batch_size,
                       shuffle=True, generator=generator)  # fmt: skip
    val = DataLoader(TensorDataset(*s.data.val), batch_size=c.batch_size)
    fit_config = FitConfig(epochs=c.long_term_epochs, lr=c.long_term_lr, optimizer=c.optimizer,
                           scheduler="cosine", seed=c.seed)  # fmt: skip
    fit(model, train, val, fit_config, progress=s.progress, label="netadapt long-term")


def _result(s: _Search, run: _Run, reason: str, spec: ModelSpec | None) -> NetAdaptResult:
    bs = s.config.batch_size
    val = accuracy(run.model, *s.data.val, bs)
    test = None if s.data.test is None else accuracy(run.model, *s.data.test, bs)
    small = None if spec is None else pruned_spec(spec, run.model)
    rel = run.latency / run.original_latency
    _say(s, f"netadapt: {reason}; latency {run.latency:.4g} ({rel:.1%} of the original), "
         f"val accuracy {val:.4f}")  # fmt: skip
    return NetAdaptResult(run.model.eval(), tuple(run.trajectory), run.original_latency,
                          run.budget, reason, val, test, small, s.config)  # fmt: skip


def _describe(record: IterationRecord, run: _Run) -> str:
    rel = record.latency / run.original_latency
    group = record.group or ""
    return (
        f"netadapt iteration {record.iteration}: {group} -> {record.channels[group]} channels, "
        f"latency {record.latency:.4g} ({rel:.1%}; target {record.target:.4g}, budget "
        f"{run.budget:.4g}), val accuracy {record.accuracy:.4f} "
        f"({len(record.proposals)} proposals)"
    )


def _bars(s: _Search) -> bool:
    """Progress bars only on a terminal (piped output gets the per-iteration lines alone)."""
    return s.progress and Console().is_terminal


def _say(s: _Search, line: str) -> None:
    if s.progress:
        print(line, flush=True)
