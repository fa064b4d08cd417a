"""AMC: AutoML for model compression (He et al. 2018), a DDPG agent choosing per-layer ratios.

An episode walks the model's prunable channel groups in order
(:class:`~slimtorch.search.amc_env.AMCEnv`): at each the agent sees the layer embedding and
answers a preserve ratio; in the resource-constrained mode the environment clips it so the
budget (a fraction of the model's MACs, or of its latency) is always met. At the end of the
episode the model is pruned to the policy with channel surgery and scored on a validation
subset *without fine-tuning* (:func:`~slimtorch.search.amc_policy.evaluate_episode`); the
reward (``-error``, or ``-error * log(FLOPs)`` in the accuracy-guaranteed mode) is given to
every transition of the episode, as the reference implementation does, and the agent
(:class:`~slimtorch.search.ddpg.DDPG`) learns once per transition after the warm-up.

Parallel roll-outs: ``config.rollouts`` episodes are chosen with the same policy, evaluated
together through ``workers.map`` and learnt from in episode order. Episode walks and agent
updates run in this process with the workers' thread count, evaluations are deterministic,
and every random draw comes from the agent's seeded generator: the result is the same with 1
or N workers, and a search resumed from its state file (written after each batch) gives the
same result as one that never stopped.

Example:
    >>> from torch import nn
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,))))
    >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))  # 96 MACs
    >>> cfg = AMCConfig(budget_ratio=0.5, episodes=4, warmup=2, hidden1=8, hidden2=8)
    >>> result = amc_search(model, (data, data), torch.zeros(1, 4), cfg, progress=False)
    >>> result.best.macs <= 48, len(result.history)
    (True, 4)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import torch
from rich.progress import Progress
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from slimtorch.data import Splits
from slimtorch.errors import ConfigError, DataError
from slimtorch.io import atomic_output, atomic_write_bytes, atomic_write_text
from slimtorch.models import ModelSpec
from slimtorch.profile.noise import torch_threads
from slimtorch.prune.graph import ChannelGraph, trace_channels
from slimtorch.prune.surgery import prune_channels, pruned_spec
from slimtorch.quantize.trained import recalibrate_bn
from slimtorch.search.amc_config import AMCConfig, AMCResult, EpisodeRecord
from slimtorch.search.amc_env import STATE_FEATURES, AMCEnv, Cost, Episode
from slimtorch.search.amc_policy import (
    EpisodeScore,
    EpisodeTask,
    apply_policy,
    evaluate_episode,
    input_grams,
    score_model,
)
from slimtorch.search.ddpg import DDPG
from slimtorch.search.parallel import Workers

__all__ = ["AMCConfig", "AMCResult", "EpisodeRecord", "amc_search", "plot_rewards", "write_amc"]

Latency = Callable[[nn.Module], float]
STATE_FORMAT, STATE_VERSION = "slimtorch-amc-state", 1
RESUMABLE_CHANGES = ("episodes",)  # config fields a resumed search may change


@dataclass
class _Search:
    """What stays fixed during a search."""

    model: nn.Module
    example_input: Tensor | tuple[Tensor, ...]
    config: AMCConfig
    graph: ChannelGraph
    env: AMCEnv
    val: tuple[Tensor, Tensor]
    grams: dict[str, Tensor] | None
    bn_x: Tensor | None
    cost: Cost
    budget: float | None
    workers: Any
    names: tuple[str, ...] = field(default=())

    def policy(self, counts: Sequence[int]) -> dict[str, int]:
        """Group name -> channel count."""
        return dict(zip(self.names, counts, strict=True))


def amc_search(
    model: nn.Module,
    splits_or_loaders: Splits | Sequence[DataLoader],
    example_input: Tensor | tuple[Tensor, ...],
    config: AMCConfig | None = None,
    workers: Workers | None = None,
    latency: Latency | None = None,
    progress: bool = True,
    *,
    state_path: str | os.PathLike[str] | None = None,
    spec: ModelSpec | None = None,
) -> AMCResult:
    """Search per-layer preserve ratios of ``model`` with AMC (see the module docstring).

    Args:
        model: a trained classifier ``torch.fx`` can trace (not changed).
        splits_or_loaders: a :class:`~slimtorch.data.Splits` or ``(train, val[, test])``
            loaders (their datasets are read): validation scores episodes, training samples
            feed the reconstruction's statistics.
        example_input: an input to trace channels and count MACs with (batch 1 is enough).
        config: the search's settings (default: ``AMCConfig()``).
        workers: where episode evaluations run (default: in this process).
        latency: ``model -> seconds`` (e.g. a latency table's prediction); required when
            ``config.resource`` is ``latency``.
        progress: a progress bar over the episodes.
        state_path: the resumable state file, written after each batch of episodes (None:
            no state); an existing one from the same config, model and data resumes.
        spec: the spec ``model`` was built from; the result then carries a pruned spec for
            :func:`~slimtorch.checkpoint.save_checkpoint`.

    Returns:
        The :class:`AMCResult`.

    Raises:
        ConfigError: the budget cannot be met even at ``lbound``, ``latency`` is missing or
            unused, or ``state_path`` holds another search's state.
        ModelError: the model cannot be traced or has no prunable channel group.
    """
    config = config or AMCConfig()
    workers = workers or Workers()
    with torch_threads(getattr(workers, "threads_per_task", 1)):
        s, original = _prepare(model, splits_or_loaders, example_input, config, workers, latency)
        agent = DDPG(len(STATE_FEATURES), 1, config.agent_config(len(s.names)), config.seed)
        fingerprint = _fingerprint(s)
        history = _resume(state_path, s, agent, fingerprint) if state_path else []
        with _bar(progress, config.episodes, len(history)) as advance:
            for start in range(len(history), config.episodes, config.rollouts):
                batch = range(start, min(start + config.rollouts, config.episodes))
                history += _run_batch(s, agent, batch)
                if state_path:
                    _save_state(state_path, s, agent, history, fingerprint)
                advance(len(batch), max(history, key=lambda r: r.reward))
        best = max(history, key=lambda r: r.reward)  # the first of equal rewards
        pruned = _best_model(s, best)
    return AMCResult(
        model=pruned.eval(), best=best, history=tuple(history), sizes=s.policy(s.env.sizes),
        original=original, budget=s.budget, config=config,
        spec=None if spec is None else pruned_spec(spec, pruned),
    )  # fmt: skip


def _best_model(s: _Search, best: EpisodeRecord) -> nn.Module:
    """The best episode's pruned model, as it was scored (BatchNorm re-estimated if asked)."""
    c = s.config
    pruned = apply_policy(s.model, s.example_input, best.counts, importance=c.importance,
                          grams=s.grams, graph=s.graph)  # fmt: skip
    if s.bn_x is not None:
        recalibrate_bn(pruned, [(x, None) for x in s.bn_x.split(c.batch_size)])
    return pruned


def _prepare(
    model: nn.Module,
    data: Splits | Sequence[DataLoader],
    example_input: Tensor | tuple[Tensor, ...],
    config: AMCConfig,
    workers: Any,
    latency: Latency | None,
) -> tuple[_Search, dict[str, float]]:
    if (config.resource == "latency") != (latency is not None):
        need = "needs" if latency is None else "is only used with"
        raise ConfigError(f"amc_search: a latency callable {need} AMCConfig.resource='latency'")
    graph = trace_channels(model, example_input)
    env = AMCEnv.build(model, example_input, config.lbound, config.rbound, config.round_to, graph)
    names = tuple(x.name for x in env.layers)
    train, val = _datasets(data)
    val_x, val_y = _tensors(val, "validation", config.val_samples, config.seed)
    grams = None
    if config.reconstruct:
        calib_x, _ = _tensors(train, "train", config.calib_samples, config.seed)
        grams = input_grams(model, graph, [(calib_x,)])
    bn_x = None
    if config.bn_samples:
        bn_x, _ = _tensors(train, "train", config.bn_samples, config.seed + 1)
    cost = env.mac.macs if latency is None else _latency_cost(model, example_input, graph, latency)
    base = score_model(model, example_input, val_x, val_y, config.batch_size)
    original_cost = float(cost(env.sizes))
    budget = None if config.budget_ratio is None else config.budget_ratio * original_cost
    s = _Search(model, example_input, config, graph, env, (val_x, val_y), grams, bn_x, cost,
                budget, workers, names)  # fmt: skip
    if budget is not None:
        env.check_feasible(cost, budget)
    original = {"accuracy": base.accuracy, "loss": base.loss, "macs": base.macs,
                "flops": base.flops, "cost": original_cost}  # fmt: skip
    return s, original


def _latency_cost(
    model: nn.Module, example_input: Any, graph: ChannelGraph, latency: Latency
) -> Cost:
    """``counts -> latency`` of the architecture pruned to ``counts`` (memoized: the weights do
    not matter, so the first channels are kept)."""
    groups, cache = graph.prunable(), {}

    def cost(counts: Sequence[int]) -> float:
        key = tuple(int(k) for k in counts)
        if key not in cache:
            keep = {g.name: torch.arange(k) for g, k in zip(groups, key, strict=True)}
            pruned = prune_channels(model, example_input, keep=keep, graph=graph)
            cache[key] = float(latency(pruned))
        return cache[key]

    return cost


def _datasets(data: Splits | Sequence[DataLoader]) -> tuple[Dataset, Dataset]:
    if isinstance(data, Splits):
        return data.train, data.val
    loaders = tuple(data) if isinstance(data, tuple | list) else ()
    if 2 <= len(loaders) <= 3 and all(isinstance(d, DataLoader) for d in loaders):
        return loaders[0].dataset, loaders[1].dataset
    raise ConfigError(
        "amc_search: data must be a Splits (slimtorch.data.load_data) or (train, val[, test]) "
        f"DataLoaders, got {type(data).__name__}"
    )


def _tensors(dataset: Dataset, name: str, samples: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of a seeded subset of ``samples`` items (all when 0 or more than there are),
    in index order."""
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(f"amc_search: the {name} split is empty")
    pick = torch.arange(n)
    if 0 < samples < n:
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples].sort()[0]
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        x, y = (t[pick] for t in dataset.tensors)
    else:
        items = [dataset[int(i)] for i in pick]
        x = torch.stack([torch.as_tensor(item[0]) for item in items])
        y = torch.as_tensor([int(item[1]) for item in items])
    return x.float(), y.long()


def _chooser(agent: DDPG, episode: int, config: AMCConfig) -> Callable[[Tensor], Tensor]:
    if episode < config.warmup:
        return lambda state: agent.random_action()
    sigma = agent.sigma(episode, config.warmup)
    return lambda state: agent.act(state, sigma)


def _reward(config: AMCConfig, score: EpisodeScore) -> float:
    error = 1.0 - score.accuracy
    return -error if config.mode == "resource" else -error * math.log(max(score.flops, 1))


def _run_batch(s: _Search, agent: DDPG, batch: range) -> list[EpisodeRecord]:
    """Walk the batch's episodes with the current policy, evaluate them through the workers,
    then learn from them in order (one update per transition after the warm-up)."""
    c = s.config
    episodes: list[Episode] = [
        s.env.run_episode(_chooser(agent, e, c), s.cost, s.budget) for e in batch
    ]
    tasks = [
        EpisodeTask(s.model, s.example_input, s.graph, s.policy(ep.counts), c.importance,
                    s.grams, *s.val, c.batch_size, s.bn_x)
        for ep in episodes
    ]  # fmt: skip
    scores = s.workers.map(evaluate_episode, tasks, label="")
    records = []
    for e, ep, score in zip(batch, episodes, scores, strict=True):
        reward = _reward(c, score)
        for state, action, next_state, done in ep.transitions():
            agent.remember(state, action, reward, next_state, done)
            if e >= c.warmup:
                agent.update()
        sigma = None if e < c.warmup else agent.sigma(e, c.warmup)
        cost = float(s.cost(ep.counts))
        records.append(EpisodeRecord(e, reward, score.accuracy, score.loss, score.macs,
                                     score.flops, cost, s.policy(ep.counts), sigma))  # fmt: skip
    return records


@contextlib.contextmanager
def _bar(enabled: bool, total: int, done: int) -> Iterator[Callable[[int, EpisodeRecord], None]]:
    with Progress(transient=True, disable=not enabled) as bar:
        task = bar.add_task("AMC", total=total, completed=done)

        def advance(n: int, best: EpisodeRecord) -> None:
            text = f"AMC best reward {best.reward:.4f} (acc {best.accuracy:.4f}, ep {best.episode})"
            bar.update(task, advance=n, description=text)

        yield advance


def _fingerprint(s: _Search) -> str:
    """SHA-256 of the model's weights, the groups, the validation data and the config: what a
    state file must have been written for."""
    fixed = {k: v for k, v in s.config.to_dict().items() if k not in RESUMABLE_CHANGES}
    h = hashlib.sha256(repr((fixed, s.names, s.env.sizes)).encode())
    tensors = [*s.model.state_dict().values(), *s.val]
    tensors += [t for t in (s.example_input if isinstance(s.example_input, tuple)
                            else (s.example_input,))]  # fmt: skip
    for t in tensors:
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _save_state(
    path: str | os.PathLike[str], s: _Search, agent: DDPG, history: list[EpisodeRecord],
    fingerprint: str,
) -> None:  # fmt: skip
    state = {"format": STATE_FORMAT, "version": STATE_VERSION, "fingerprint": fingerprint,
             "budget": s.budget, "history": [r.to_dict() for r in history],
             "agent": agent.state_dict()}  # fmt: skip
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def _resume(
    path: str | os.PathLike[str], s: _Search, agent: DDPG, fingerprint: str
) -> list[EpisodeRecord]:
    """The history of the state at ``path`` (the agent restored), or ``[]`` without one."""
    if not Path(path).exists():
        return []
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(f"{path}: not a readable AMC state file ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ConfigError(f"{path}: not an AMC state file")
    if state.get("version") != STATE_VERSION or state.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"{path}: the state of another AMC search (config, model or data differ); "
            "remove it or choose another state path"
        )
    agent.load_state_dict(state["agent"])
    s.budget = state["budget"]  # measured latencies may drift: keep the budget it started with
    history = [EpisodeRecord.from_dict(r) for r in state["history"]]
    return history[: s.config.episodes]


def plot_rewards(result: AMCResult, path: str | os.PathLike[str]) -> Path:
    """The reward of every episode and the best so far, as a PNG (written atomically)."""

    matplotlib.use("Agg")

    episodes = [r.episode for r in result.history]
    rewards = [r.reward for r in result.history]
    best = [max(rewards[: i + 1]) for i in range(len(rewards))]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if result.config.warmup:
        ax.axvspan(-0.5, result.config.warmup - 0.5, color="gray", alpha=0.15, label="warm-up")
    ax.plot(episodes, rewards, ".", alpha=0.6, label="episode reward")
    ax.plot(episodes, best, "-", label="best so far")
    ax.set_xlabel("episode")
    ax.set_ylabel("reward" + (" (-error)" if result.config.mode == "resource" else ""))
    ax.set_title(f"AMC reward curve ({result.config.mode} mode)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def write_amc(result: AMCResult, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``amc.json`` (:meth:`AMCResult.to_dict`) and ``amc_rewards.png`` into ``folder``.

    Returns:
        The two paths.
    """

    folder = Path(folder)
    text = json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"
    json_path = atomic_write_text(folder / "amc.json", text)
    return json_path, plot_rewards(result, folder / "amc_rewards.png")
