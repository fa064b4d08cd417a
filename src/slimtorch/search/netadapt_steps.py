"""NetAdapt's building blocks (see :mod:`slimtorch.search.netadapt`).

- :func:`search_data`: the tensors a search reads (every proposal task carries its own copy,
  so a task runs the same on a Ray worker as in this process);
- :func:`candidate_counts` and :func:`largest_count`: the paper's *ChooseNumFilters*, a binary
  search for the largest channel count whose pruned model meets a latency target;
- :func:`short_term_task`: one proposal's short-term fine-tune and validation accuracy, a
  module-level function for :meth:`slimtorch.search.parallel.Workers.map`;
- :func:`plot_trajectory` / :func:`write_trajectory`: the trajectory as JSON and a PNG of
  accuracy against latency, iteration by iteration;
- :func:`macs_cost`: MACs as a deterministic stand-in for latency.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from slimtorch.core.trace import trace_model
from slimtorch.data import Splits
from slimtorch.errors import ConfigError, DataError
from slimtorch.io import atomic_write_bytes, atomic_write_text
from slimtorch.search.netadapt_config import Latency, NetAdaptResult
from slimtorch.train import FitConfig, evaluate, fit


@dataclass(frozen=True)
class TaskData:
    """What a proposal task trains and scores on: ``x`` float ``[N, ...]``, ``y`` int64 ``[N]``."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor  # the validation subset that scores proposals
    val_y: Tensor


@dataclass(frozen=True)
class SearchData:
    """A search's data: the tasks' part, the whole validation split, the test split (or None)."""

    task: TaskData
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor] | None


def dataset_tensors(dataset: Dataset, name: str) -> tuple[Tensor, Tensor]:
    """``(x [N, ...], y [N])`` of a dataset of ``(x, y)`` items, in index order."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        x, y = dataset.tensors
    else:
        items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
        if not items:
            raise DataError(f"netadapt: the {name} split is empty")
        x = torch.stack([torch.as_tensor(item[0]) for item in items])
        y = torch.as_tensor([int(item[1]) for item in items])
    if len(x) == 0:
        raise DataError(f"netadapt: the {name} split is empty")
    return x.float(), y.long()


def _parts(source: Any) -> tuple[Dataset, Dataset, Dataset | None]:
    if isinstance(source, Splits):
        return source.train, source.val, source.test
    loaders = tuple(source) if isinstance(source, tuple | list) else ()
    if 2 <= len(loaders) <= 3 and all(isinstance(d, DataLoader) for d in loaders):
        test = loaders[2].dataset if len(loaders) == 3 else None
        return loaders[0].dataset, loaders[1].dataset, test
    raise ConfigError(
        "netadapt: data must be a Splits (slimtorch.data.load_data) or (train, val[, test]) "
        f"DataLoaders, got {type(source).__name__}"
    )


def search_data(source: Splits | Sequence[DataLoader], val_samples: int, seed: int) -> SearchData:
    """Read the splits (or the loaders' datasets) into tensors.

    Args:
        source: a :class:`~slimtorch.data.Splits`, or ``(train, val)`` / ``(train, val, test)``
            data loaders (only their datasets are read: batch size and order come from the
            search's config, so a task is reproducible anywhere).
        val_samples: size of the seeded validation subset that scores proposals (0: all).
        seed: picks that subset.

    Returns:
        The :class:`SearchData`.
    """
    train, val, test = _parts(source)
    train_x, train_y = dataset_tensors(train, "train")
    val_x, val_y = dataset_tensors(val, "validation")
    pick = val_subset(len(val_x), val_samples, seed)
    test_xy = dataset_tensors(test, "test") if test is not None and len(test) else None  # type: ignore[arg-type]
    task = TaskData(train_x, train_y, val_x[pick], val_y[pick])
    return SearchData(task, (val_x, val_y), test_xy)


def val_subset(n: int, k: int, seed: int) -> Tensor:
    """Ascending indices of a seeded subset of ``k`` of ``n`` samples (all when ``k`` is 0 or
    at least ``n``).

    Example:
        >>> val_subset(5, 0, seed=0)
        tensor([0, 1, 2, 3, 4])
        >>> len(val_subset(100, 10, seed=0))
        10
    """
    if k == 0 or k >= n:
        return torch.arange(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:k].sort().values


def task_seed(seed: int, iteration: int, index: int) -> int:
    """The seed of proposal ``index`` (the group's position) in ``iteration``: a function of the
    three numbers only, so it does not depend on which worker runs the task or when.

    Example:
        >>> task_seed(0, 1, 2) == task_seed(0, 1, 2) != task_seed(0, 1, 3)
        True
    """
    return int(np.random.SeedSequence([seed, iteration, index]).generate_state(1)[0])


def candidate_counts(size: int, min_channels: int, round_to: int) -> list[int]:
    """Channel counts a group of ``size`` channels may be cut to, ascending: fewer than
    ``size``, at least ``min_channels``, multiples of ``round_to``.

    Example:
        >>> candidate_counts(10, 2, 4)
        [4, 8]
    """
    return [c for c in range(max(min_channels, 1), size) if c % round_to == 0]


def largest_count(
    counts: Sequence[int], cost: Callable[[int], float], target: float
) -> tuple[int, float] | None:
    """The largest count whose cost meets ``target``, by binary search (the paper's
    *ChooseNumFilters*).

    The search assumes ``cost`` grows with the count, which measured latency does only
    approximately; whatever it returns was measured to meet the target.

    Args:
        counts: ascending candidate counts.
        cost: count -> latency of the model with that many channels in the group.
        target: the latency to meet (``cost <= target``).

    Returns:
        ``(count, cost)``, or None when even the smallest count misses the target.

    Example:
        >>> largest_count([1, 2, 3, 4, 5], lambda c: 10.0 * c, target=31.0)
        (3, 30.0)
    """
    if not counts:
        return None
    first = cost(counts[0])
    if first > target:
        return None
    best, lo, hi = (counts[0], first), 1, len(counts) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        value = cost(counts[mid])
        if value <= target:
            best, lo = (counts[mid], value), mid + 1
        else:
            hi = mid - 1
    return best


class SeededBatches:
    """``batches`` minibatches drawn from seeded permutations of the training set (a fresh
    permutation whenever one runs out), the same on every worker.

    Example:
        >>> b = SeededBatches(torch.arange(10.0)[:, None], torch.zeros(10).long(), 4, 3, seed=0)
        >>> [len(x) for x, _ in b]
        [4, 4, 4]
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, batches: int, seed: int) -> None:
        self.x, self.y = x, y
        self.batch_size, self.batches, self.seed = min(batch_size, len(x)), batches, seed

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        order, pos = torch.randperm(len(self.x), generator=generator), 0
        for _ in range(self.batches):
            if pos + self.batch_size > len(order):
                order, pos = torch.randperm(len(self.x), generator=generator), 0
            idx = order[pos : pos + self.batch_size]
            pos += self.batch_size
            yield self.x[idx], self.y[idx]


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in batches (eval mode, restored after)."""
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return evaluate(model, batches).accuracy


@dataclass(frozen=True)
class ProposalTask:
    """One proposal to fine-tune and score: everything a worker needs, seed included."""

    model: nn.Module
    data: TaskData
    batches: int
    batch_size: int
    lr: float
    optimizer: str
    seed: int


@dataclass(frozen=True)
class ProposalOutcome:
    """A proposal's validation accuracy after its short-term fine-tune, and its weights."""

    accuracy: float
    state: dict[str, Tensor]


def short_term_task(task: ProposalTask) -> ProposalOutcome:
    """Short-term fine-tune ``task.model`` (in place) and score it on the validation subset.

    Module-level so Ray can pickle it by reference; the result depends only on the task.
    """
    model, data = task.model, task.data
    if task.batches > 0:
        batches = SeededBatches(
            data.train_x, data.train_y, task.batch_size, task.batches, task.seed
        )
        fit_config = FitConfig(epochs=1, lr=task.lr, optimizer=task.optimizer, seed=task.seed)
        fit(model, batches, None, fit_config, progress=False)
    acc = accuracy(model, data.val_x, data.val_y, task.batch_size)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return ProposalOutcome(acc, state)


def plot_trajectory(summary: dict[str, Any], path: str | Path) -> Path:
    """Accuracy against latency, one point per iteration, as a PNG (written atomically).

    Args:
        summary: :meth:`NetAdaptResult.to_dict` (or the JSON file it was written to).
        path: the PNG to write.

    Returns:
        ``path``.
    """

    matplotlib.use("Agg")

    steps, l0 = summary["trajectory"], summary["original_latency"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    tried = [p for s in steps for p in s["proposals"]]
    ax.scatter([p["latency"] / l0 for p in tried], [p["accuracy"] for p in tried], s=12,
               color="lightgray", label="proposals")  # fmt: skip
    ax.plot([s["latency"] / l0 for s in steps], [s["accuracy"] for s in steps], marker="o",
            label="chosen (short-term fine-tuned)")  # fmt: skip
    for s in steps:
        ax.annotate(str(s["iteration"]), (s["latency"] / l0, s["accuracy"]), fontsize="x-small")
    if summary.get("val_accuracy") is not None and summary.get("long_term_epochs"):
        ax.scatter([steps[-1]["latency"] / l0], [summary["val_accuracy"]], marker="*", s=120,
                   color="tab:red", label="after long-term fine-tune", zorder=3)  # fmt: skip
    ax.axvline(summary["budget"] / l0, color="gray", linestyle="--", label="budget")
    ax.set_xlabel("latency / original latency")
    ax.set_ylabel("validation accuracy")
    ax.set_title("NetAdapt: accuracy against latency")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def macs_cost(example_input: Tensor | tuple[Tensor, ...]) -> Latency:
    """A latency stand-in: ``model -> MACs`` on ``example_input`` (slimtorch's op counter).

    Example:
        >>> macs_cost(torch.zeros(1, 4))(nn.Linear(4, 3))
        12.0
    """

    def cost(model: nn.Module) -> float:
        return float(trace_model(model, example_input).total_macs)

    return cost


def write_trajectory(result: NetAdaptResult, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``netadapt.json`` (:meth:`NetAdaptResult.to_dict`) and ``netadapt.png`` (accuracy
    against latency) into ``folder``, atomically.

    Returns:
        The two paths.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.to_dict()
    path = atomic_write_text(out / "netadapt.json", json.dumps(summary, indent=2) + "\n")
    return path, plot_trajectory(summary, out / "netadapt.png")
