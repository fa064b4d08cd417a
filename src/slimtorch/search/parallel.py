"""Evaluate independent candidates in parallel: in-process by default, on Ray when asked.

Every search (NetAdapt's per-layer proposals, AMC's roll-outs) has a step that scores many
candidates independently. :class:`Workers` runs ``fn(item)`` for each item and returns the
results in item order:

- ``Workers()`` (one worker, no address): in this process, one after another;
- ``Workers(count=2)``: a local Ray instance with two worker processes (``ray.init()``);
- ``Workers(address="ray://host:10001")`` (or ``"auto"``): an existing Ray cluster.

Results do not depend on the number of workers: each task runs with ``threads_per_task``
torch threads (reduction order, hence float rounding, depends on the thread count) and gets
everything it needs, seeds included, in its item. ``fn`` must be a module-level function
(Ray pickles it by reference) and items must pickle.

Ray is the optional ``search`` extra (``pip install 'slimtorch[search]'``); asking for more
than one worker or an address without it is a one-line error naming the extra.

Example:
    >>> Workers().map(abs, [-2, 3, -4])
    [2, 3, 4]
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rich.progress import Progress

from slimtorch.errors import ConfigError
from slimtorch.profile.noise import torch_threads

T = TypeVar("T")
R = TypeVar("R")

RAY_EXTRA = "pip install 'slimtorch[search]'"


@dataclass(frozen=True)
class Workers:
    """Where candidate evaluations run.

    Attributes:
        count: parallel workers; 1 runs in this process unless ``address`` is given.
        address: a Ray cluster address (``"auto"``, ``"ray://host:10001"``); None starts a
            local Ray instance with ``count`` workers when ``count > 1``.
        threads_per_task: torch threads inside each task (the same in every mode, so the
            results are identical whatever ``count`` is).
    """

    count: int = 1
    address: str | None = None
    threads_per_task: int = 1

    def __post_init__(self) -> None:
        for name in ("count", "threads_per_task"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Workers.{name}: expected an integer >= 1, got {value!r}")

    @property
    def uses_ray(self) -> bool:
        """True when tasks go to Ray (more than one worker, or a cluster address)."""
        return self.count > 1 or self.address is not None

    def map(self, fn: Callable[[T], R], items: Sequence[T], label: str = "") -> list[R]:
        """``[fn(item) for item in items]``, possibly in parallel, in item order.

        Args:
            fn: a module-level function of one argument.
            items: the arguments (picklable when Ray runs them).
            label: progress-bar label (no bar when empty or for fewer than two items).
        """
        if not self.uses_ray:
            with _bar(label, len(items)) as advance:
                return [advance(_run_task(fn, item, self.threads_per_task)) for item in items]
        return _ray_map(self, fn, list(items), label)


def _run_task(fn: Callable[[T], R], item: T, threads: int) -> R:
    with torch_threads(threads):
        return fn(item)


def ray_available() -> bool:
    """Whether the optional Ray dependency is installed."""
    return importlib.util.find_spec("ray") is not None


def _ray_map(workers: Workers, fn: Callable[[T], R], items: list[T], label: str) -> list[R]:
    if not ray_available():
        raise ConfigError(f"--workers/--address need Ray, which is not installed: {RAY_EXTRA}")
    import ray  # deferred: an optional extra, and 0.14 s of import after slimtorch (-X importtime)

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if workers.address is None:
            kwargs["num_cpus"] = workers.count
        ray.init(address=workers.address, ignore_reinit_error=True, **kwargs)
    remote = ray.remote(num_cpus=1)(_run_task)
    futures = [remote.remote(fn, item, workers.threads_per_task) for item in items]
    pending = list(futures)
    with _bar(label, len(futures)) as advance:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            advance(done)
    return ray.get(futures)


@contextlib.contextmanager
def _bar(label: str, total: int) -> Iterator[Callable[[Any], Any]]:
    """A transient progress bar (none without a label, for fewer than two items, or when
    stderr is not a terminal); yields ``advance(x) -> x``."""
    with Progress(transient=True, disable=not label or total < 2) as bar:
        task = bar.add_task(label, total=total)

        def advance(x: Any) -> Any:
            bar.advance(task)
            return x

        yield advance


def shutdown() -> None:
    """Stop the local Ray instance this process started (no-op without Ray)."""
    if ray_available():
        import ray  # deferred: see _ray_map

        if ray.is_initialized():
            ray.shutdown()
