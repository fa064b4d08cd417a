"""Latency and throughput of a model or function, and per-layer latency via hooks.

All measurements run under ``torch.inference_mode()`` with modules in eval mode; each
module's own ``training`` flag is restored afterwards, and nothing else about the model is
changed. Clocks are ``time.perf_counter_ns``; CUDA inputs are synchronized around each call.
``threads`` sets torch's intra-op threads for the timed work (restored after; default: the
current setting) and is recorded with the figure, as is a :class:`~slimtorch.profile.noise.Noise`
verdict (spread, contention, load, calibration probe) saying whether the figure can be trusted.

Inputs: ``example_input`` may be a tensor (called as ``fn(x)``), a tuple (``fn(*x)``) or a
mapping (``fn(**x)``).

Example:
    >>> import torch
    >>> stats = measure_latency(torch.nn.Linear(4, 4), torch.randn(1, 4), warmup=1, runs=5)
    >>> stats.runs
    5
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from slimtorch.errors import ConfigError
from slimtorch.profile.noise import Noise, NoiseWatch, torch_threads

NS_PER_S = 1e9
MEDIAN, P90, P99 = 50.0, 90.0, 99.0
DEFAULT_BATCH_SIZES = (1, 8, 32, 128)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timed calls, in seconds; ``samples_s`` holds every timed call in order.

    ``threads`` is the torch thread count they ran with, ``cv`` their coefficient of
    variation, ``noisy`` / ``noise`` the verdict of :mod:`slimtorch.profile.noise`.
    """

    runs: int
    warmup: int
    median_s: float
    p90_s: float
    p99_s: float
    mean_s: float
    min_s: float
    max_s: float
    samples_s: tuple[float, ...]
    threads: int | None = None
    cv: float | None = None
    noisy: bool = False
    noise: Noise | None = None


@dataclass(frozen=True)
class ThroughputPoint:
    """Latency of one batch size and the samples per second it implies."""

    batch_size: int
    latency: LatencyStats
    samples_per_s: float  # batch_size / latency.median_s
    threads: int | None = None
    noisy: bool = False


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation (``numpy.percentile``'s default).

    Args:
        values: Non-empty samples, any order.
        q: Percentile in ``[0, 100]``.

    Returns:
        ``v[lo] + (v[hi] - v[lo]) * frac`` at position ``(n - 1) * q / 100`` of the sorted
        values.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    if not values:
        raise ConfigError("percentile: no values")
    if not 0 <= q <= 100:
        raise ConfigError(f"percentile: q must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * (q / 100)
    lo = math.floor(position)
    hi = min(lo + 1, len(ordered) - 1)
    a, b, t = ordered[lo], ordered[hi], position - lo
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t  # as numpy's _lerp


def _stats(samples_ns: Sequence[int], warmup: int, watch: NoiseWatch) -> LatencyStats:
    s = tuple(ns / NS_PER_S for ns in samples_ns)
    noise = watch.judge(s)
    return LatencyStats(
        runs=len(s),
        warmup=warmup,
        median_s=percentile(s, MEDIAN),
        p90_s=percentile(s, P90),
        p99_s=percentile(s, P99),
        mean_s=sum(s) / len(s),
        min_s=min(s),
        max_s=max(s),
        samples_s=s,
        threads=noise.threads,
        cv=noise.cv,
        noisy=noise.noisy,
        noise=noise,
    )


def _call(fn: Callable[..., Any], example_input: Any) -> Any:
    if isinstance(example_input, tuple):
        return fn(*example_input)
    if isinstance(example_input, Mapping):
        return fn(**example_input)
    return fn(example_input)


def _synchronizer(example_input: Any) -> Callable[[], None]:
    """A function that waits for queued CUDA work when any input lives on CUDA."""
    if isinstance(example_input, Mapping):
        tensors = list(example_input.values())
    else:
        tensors = list(example_input) if isinstance(example_input, tuple) else [example_input]
    if any(isinstance(t, Tensor) and t.is_cuda for t in tensors):
        return torch.cuda.synchronize
    return lambda: None


@contextmanager
def _eval_inference(fn: Callable[..., Any]) -> Iterator[None]:
    """Eval mode and inference mode; every module's own training flag restored after."""
    modules = list(fn.modules()) if isinstance(fn, nn.Module) else []
    flags = [m.training for m in modules]
    try:
        for m in modules:
            m.training = False
        with torch.inference_mode():
            yield
    finally:
        for m, flag in zip(modules, flags, strict=True):
            m.training = flag


def _check_counts(warmup: int, runs: int, max_seconds: float | None) -> None:
    if warmup < 0 or runs < 1:
        raise ConfigError(f"warmup must be >= 0 and runs >= 1, got {warmup}, {runs}")
    if max_seconds is not None and max_seconds <= 0:
        raise ConfigError(f"max_seconds must be > 0, got {max_seconds}")


def measure_latency(
    fn_or_model: Callable[..., Any],
    example_input: Any,
    warmup: int = 10,
    runs: int = 50,
    max_seconds: float | None = None,
    *,
    threads: int | None = None,
) -> LatencyStats:
    """Time repeated calls of a model or function.

    Args:
        fn_or_model: An ``nn.Module`` (run in eval mode, flags restored) or any callable.
        example_input: Tensor, tuple of positional arguments, or mapping of keyword arguments.
        warmup: Untimed calls first.
        runs: Timed calls.
        max_seconds: Wall-clock budget for warm-up plus timed calls; once spent, the
            remaining calls are skipped, but at least one call is always timed.
        threads: torch intra-op threads for the calls (restored after); None keeps the
            current setting.

    Returns:
        ``LatencyStats`` over the timed calls (``runs`` and ``warmup`` are the counts done),
        with the thread count and the noise verdict.

    Example:
        >>> measure_latency(lambda x: x * 2, torch.ones(3), warmup=0, runs=3).runs
        3
    """
    _check_counts(warmup, runs, max_seconds)
    sync = _synchronizer(example_input)
    warm, samples = 0, []
    with torch_threads(threads) as used, _eval_inference(fn_or_model), NoiseWatch(used) as watch:
        # the budget starts after the watch's probe
        deadline = math.inf if max_seconds is None else time.perf_counter_ns() + max_seconds * 1e9
        while warm < warmup and time.perf_counter_ns() < deadline:
            _call(fn_or_model, example_input)
            warm += 1
        sync()
        while len(samples) < runs and (not samples or time.perf_counter_ns() < deadline):
            start = time.perf_counter_ns()
            _call(fn_or_model, example_input)
            sync()
            samples.append(time.perf_counter_ns() - start)
    return _stats(samples, warm, watch)


def throughput_sweep(
    model: Callable[..., Any],
    sample_input: Tensor,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    warmup: int = 3,
    runs: int = 10,
    max_seconds_per_point: float | None = 2.0,
    *,
    threads: int | None = None,
) -> list[ThroughputPoint]:
    """Latency and samples per second at several batch sizes.

    Args:
        model: Model or callable taking one batched tensor.
        sample_input: One sample WITH a batch dim of 1, e.g. ``[1, 3, 32, 32]``; each batch
            repeats it along dim 0.
        batch_sizes: Batch sizes to time, in order.
        warmup: Untimed calls per batch size.
        runs: Timed calls per batch size.
        max_seconds_per_point: Budget per batch size (see ``measure_latency``).
        threads: torch intra-op threads (see ``measure_latency``).

    Returns:
        One ``ThroughputPoint`` per batch size, ``samples_per_s = batch / median``.

    Example:
        >>> points = throughput_sweep(torch.nn.Linear(4, 2), torch.randn(1, 4), (1, 2), 0, 2)
        >>> [p.batch_size for p in points]
        [1, 2]
    """
    if sample_input.dim() == 0 or sample_input.shape[0] != 1:
        raise ConfigError(f"sample_input: expected batch dim 1, got {tuple(sample_input.shape)}")
    if any(b < 1 for b in batch_sizes):
        raise ConfigError(f"batch_sizes: expected positive sizes, got {batch_sizes}")
    points = []
    for b in batch_sizes:
        batch = sample_input.expand(b, *sample_input.shape[1:]).contiguous()
        stats = measure_latency(model, batch, warmup, runs, max_seconds_per_point, threads=threads)
        points.append(ThroughputPoint(b, stats, b / stats.median_s, stats.threads, stats.noisy))
    return points


def _leaf_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if next(m.children(), None) is None}


def _timing_hooks(
    leaves: Mapping[str, nn.Module], totals: dict[str, int], sync: Callable[[], None]
) -> list[torch.utils.hooks.RemovableHandle]:
    """Pre/post forward hooks adding each leaf call's nanoseconds to ``totals[name]``."""
    starts: dict[str, list[int]] = defaultdict(list)
    handles = []
    for name, module in leaves.items():

        def pre(_m: nn.Module, _args: Any, name: str = name) -> None:
            sync()
            starts[name].append(time.perf_counter_ns())

        def post(_m: nn.Module, _args: Any, _out: Any, name: str = name) -> None:
            sync()
            totals[name] = totals.get(name, 0) + time.perf_counter_ns() - starts[name].pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    return handles


def layer_latencies(
    model: nn.Module,
    example_input: Any,
    warmup: int = 3,
    runs: int = 10,
    *,
    threads: int | None = None,
) -> dict[str, float]:
    """Median seconds per leaf module per forward pass, timed with forward hooks.

    A leaf called several times in one forward pass (shared modules) counts the sum of its
    calls. Leaves never called are left out. Hooks are removed afterwards, also on error. Hook
    overhead (two clock reads) is included in each figure.

    Args:
        model: The model; only read.
        example_input: Tensor, tuple or mapping, as for ``measure_latency``.
        warmup: Untimed forward passes.
        runs: Timed forward passes.
        threads: torch intra-op threads (restored after); None keeps the current setting.

    Returns:
        ``{qualified leaf name: median seconds}`` in module order.

    Example:
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
        >>> sorted(layer_latencies(m, torch.randn(1, 4), warmup=0, runs=2))
        ['0', '1']
    """
    _check_counts(warmup, runs, None)
    leaves, sync = _leaf_modules(model), _synchronizer(example_input)
    per_run: dict[str, list[int]] = defaultdict(list)
    totals: dict[str, int] = {}
    handles = _timing_hooks(leaves, totals, sync)
    try:
        with torch_threads(threads), _eval_inference(model):
            for i in range(warmup + runs):
                totals.clear()
                _call(model, example_input)
                if i >= warmup:
                    for name, ns in totals.items():
                        per_run[name].append(ns)
    finally:
        for handle in handles:
            handle.remove()
    return {n: percentile(per_run[n], MEDIAN) / NS_PER_S for n in leaves if per_run.get(n)}
