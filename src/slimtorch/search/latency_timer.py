"""How a latency table times things on this machine: one layer, the overhead probes, the machine.

- :class:`MedianTimer` times one call ``fn(*args)``: ``warmup`` untimed calls (and at least
  ``warmup_seconds``: the first calls in a process are slow), then samples until it has at
  least ``repeats`` of them and ``min_seconds`` of timed work (at most ``max_seconds``). Each
  sample times enough back-to-back calls to last ``sample_seconds`` (the clock's own cost
  stays below 1% even for a 1 us layer); the figure is the median per-call time.

  - Calls cycle through ``variants`` copies of the inputs, each floating tensor's elements
    rotated by another offset: the same values in another order, so the branch predictor
    cannot learn one input's pattern (a max pool timed on one repeated input ran up to 2x
    faster than inside its model).
  - Each call keeps the previous call's output alive until it returns, as a ``Sequential``
    keeps a layer's input alive while the next output is allocated.
  - The minor page faults of each sample are counted (outside the timed window); the median
    per call comes with the figure, so that it can be taken without them
    (:meth:`Timing.without_faults`): how often glibc returns heap pages to the kernel and
    faults them in again depends on what the process ran before, not on the layer.
  - The spread of the samples is judged by :func:`slimtorch.profile.noise.judge_noise`
    (``noisy`` above CV 0.25).
  - ``clock="cpu"`` reads this thread's CPU time instead of the wall clock: immune to other
    processes taking the core, valid with one torch thread only (with more, work runs on
    threads it does not see).

- :func:`measure_overhead` measures the two machine constants: ``call_s``, one call of a
  non-leaf module (a ``Sequential`` around an ``Identity`` less the ``Identity``), and
  ``fault_s``, one minor page fault (writing one byte per page of a fresh anonymous mapping,
  less the same writes to pages already mapped, over the faults counted).
- :func:`machine_fingerprint` names what a table's figures depend on: CPU model, torch's CPU
  capability (the kernels it dispatches to), a hash of the CPU's ISA flags, torch version,
  threads and the timer.

Example:
    >>> timing = MedianTimer(warmup=1, repeats=3, min_seconds=0.0)(abs, (-1.0,))
    >>> timing.seconds > 0, timing.samples >= 3
    (True, True)
"""

from __future__ import annotations

import hashlib
import itertools
import math
import mmap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from slimtorch.errors import ConfigError
from slimtorch.profile.noise import judge_noise, usable_cpus
from slimtorch.profile.roofline import cpu_model

try:  # page-fault counts: Unix only
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

CLOCKS = ("wall", "cpu")
FAULT_PROBE_BYTES = 4 * 2**20  # a fresh 4 MiB mapping: 1024 faults of 4 KiB pages
FAULT_COUNT_WARMUP = 2  # the allocator's thresholds settle in the first calls
FAULT_COUNT_RUNS = 5
_CPUINFO = Path("/proc/cpuinfo")
_FLAG_KEYS = ("flags", "Features")  # x86, ARM
ISA_HASH_CHARS = 16

Timer = Callable[[Callable[..., Any], tuple[Any, ...]], "float | Timing"]


@dataclass(frozen=True)
class Timing:
    """Seconds of one call, with the verdict on how far it can be trusted.

    Attributes:
        seconds: the median per-call time.
        samples: timed samples taken (0 when the timer does not say).
        cv: coefficient of variation of the samples (None when not judged).
        noisy: the figure was flagged (see :mod:`slimtorch.profile.noise`).
        reasons: one line per rule that fired.
        faults: minor page faults per call (the median over the samples; 0 when unknown).
    """

    seconds: float
    samples: int = 0
    cv: float | None = None
    noisy: bool = False
    reasons: tuple[str, ...] = ()
    faults: float = 0.0

    def without_faults(self, fault_s: float) -> float:
        """``seconds`` less ``faults * fault_s`` (at least 0): the time without page faults.

        Example:
            >>> Timing(5.0, faults=2.0).without_faults(1.0)
            3.0
        """
        return max(0.0, self.seconds - self.faults * fault_s)


def as_timing(value: float | Timing) -> Timing:
    """A timer's answer as a :class:`Timing` (a plain float is a trusted figure).

    Example:
        >>> as_timing(2e-6).seconds
        2e-06
    """
    if isinstance(value, Timing):
        return value
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"timer: expected finite seconds >= 0, got {value!r}")
    return Timing(seconds)


@dataclass(frozen=True)
class MedianTimer:
    """Median per-call time of ``fn(*args)`` (see the module docstring).

    Attributes:
        warmup: untimed calls first (at least; see ``warmup_seconds``).
        warmup_seconds: warm up for at least this long (the first calls in a process are
            slow: lazy initialization, cold caches).
        repeats: at least this many timed samples.
        min_seconds: keep sampling until this much timed work (and ``repeats``).
        max_seconds: stop sampling after this long (``repeats`` samples are always taken).
        sample_seconds: each sample times enough calls to last about this long.
        clock: ``"wall"`` (``time.perf_counter_ns``) or ``"cpu"`` (``time.thread_time_ns``).
        variants: input copies the calls cycle through (rotated elements, same values).
        version: format version of these settings.
    """

    warmup: int = 3
    warmup_seconds: float = 0.01
    repeats: int = 15
    min_seconds: float = 0.02
    max_seconds: float = 2.0
    sample_seconds: float = 1e-4
    clock: str = "wall"
    variants: int = 4
    version: int = 1

    def __post_init__(self) -> None:
        if min(self.warmup, self.repeats, self.variants) < 1:
            raise ConfigError(f"MedianTimer: warmup, repeats, variants must be >= 1: {self}")
        if min(self.min_seconds, self.sample_seconds, self.warmup_seconds) < 0 or (
            self.max_seconds <= 0
        ):
            raise ConfigError(f"MedianTimer: seconds must be >= 0 (max_seconds > 0): {self}")
        if self.clock not in CLOCKS:
            raise ConfigError(f"MedianTimer.clock: expected one of {CLOCKS}, got {self.clock!r}")

    @property
    def name(self) -> str:
        """What the figures were measured with (part of a table's machine fingerprint)."""
        return f"median/{self.clock}/x{self.variants}/v{self.version}"

    def __call__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Timing:
        """Time ``fn(*args)``; returns the median per-call :class:`Timing`."""
        threads = torch.get_num_threads()
        if self.clock == "cpu" and threads != 1:
            raise ConfigError(f"MedianTimer: clock 'cpu' needs 1 torch thread, not {threads}")
        clock = time.thread_time_ns if self.clock == "cpu" else time.perf_counter_ns
        turn = itertools.cycle(input_variants(args, self.variants))
        calls = self._warm_up(fn, turn, clock)
        samples, faults = self._sample(fn, turn, clock, calls)
        noise = judge_noise(samples, threads, len(usable_cpus()))
        return Timing(float(np.median(samples)), len(samples), noise.cv, noise.noisy,
                      noise.reasons, float(np.median(faults)))  # fmt: skip

    def _warm_up(self, fn: Callable[..., Any], turn: Iterator, clock: Callable[[], int]) -> int:
        """Warm up; returns how many calls one sample should time."""
        done, start = 0, clock()
        out = None
        while done < self.warmup or clock() - start < self.warmup_seconds * 1e9:
            out = fn(*next(turn))  # the previous output lives until the call returns
            done += 1
        per_call = max(clock() - start, 1) / done
        del out
        return max(1, math.ceil(self.sample_seconds * 1e9 / per_call))

    def _sample(
        self, fn: Callable[..., Any], turn: Iterator, clock: Callable[[], int], calls: int
    ) -> tuple[list[float], list[float]]:
        """Per-call seconds and page faults of each sample."""
        samples: list[float] = []
        faults: list[float] = []
        spent, deadline = 0, time.perf_counter_ns() + self.max_seconds * 1e9
        out = None
        while len(samples) < self.repeats or (
            spent < self.min_seconds * 1e9 and time.perf_counter_ns() < deadline
        ):
            before = minor_faults()
            t0 = clock()
            for _ in range(calls):
                out = fn(*next(turn))
            elapsed = clock() - t0
            after = minor_faults()
            spent += elapsed
            samples.append(elapsed / calls / 1e9)
            faults.append(0.0 if before is None else (after - before) / calls)  # type: ignore[operator]
        del out
        return samples, faults


def _rotated(value: Any, k: int, count: int) -> Any:
    if not isinstance(value, Tensor) or not value.is_floating_point() or value.numel() < 2:
        return value
    shift = k * (value.numel() // count) + k
    return value.flatten().roll(shift).view_as(value)


def input_variants(args: tuple[Any, ...], count: int) -> list[tuple[Any, ...]]:
    """``args`` and ``count - 1`` copies whose floating tensors have their elements rotated
    (flattened, by ``k * numel // count + k`` for copy ``k``): same values, another order.

    Example:
        >>> [v[0].tolist() for v in input_variants((torch.tensor([1.0, 2.0, 3.0]),), 2)]
        [[1.0, 2.0, 3.0], [2.0, 3.0, 1.0]]
    """
    return [args] + [tree_map(lambda v, k=k: _rotated(v, k, count), args) for k in range(1, count)]


@dataclass(frozen=True)
class Overhead:
    """The machine constants of the per-model overhead term.

    Attributes:
        call_s: seconds of one call of a non-leaf module (its Python ``forward`` dispatch).
        fault_s: seconds of one minor page fault (0 where faults cannot be counted).
        noisy: either probe was flagged.
    """

    call_s: float
    fault_s: float
    noisy: bool = False


def minor_faults() -> int | None:
    """Minor page faults of this process so far (None where the OS does not say)."""
    if resource is None:  # pragma: no cover - Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def count_faults(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    runs: int = FAULT_COUNT_RUNS,
    warmup: int = FAULT_COUNT_WARMUP,
) -> int:
    """Minor page faults of one ``fn(*args)``: the median over ``runs`` calls after ``warmup``.

    glibc's heap thresholds move with the largest blocks freed so far, so the count depends on
    what the process ran before; after a few calls of the same function it is mostly steady,
    with an occasional call that trims and regrows the heap (the median ignores those).
    Returns 0 where faults cannot be counted.

    Example:
        >>> count_faults(abs, (-1,))
        0
    """
    if minor_faults() is None:  # pragma: no cover - Windows
        return 0
    out = None
    for _ in range(warmup):
        out = fn(*args)
    counts = []
    for _ in range(runs):
        before = minor_faults()
        out = fn(*args)
        counts.append(minor_faults() - before)  # type: ignore[operator]
    del out
    return max(0, int(np.median(counts)))


def _touch(buffer: mmap.mmap) -> None:
    np.frombuffer(buffer, dtype=np.uint8)[:: mmap.PAGESIZE] = 1


def _fresh_pages(nbytes: int) -> None:
    buffer = mmap.mmap(-1, nbytes)
    _touch(buffer)
    buffer.close()


def measure_overhead(timer: Timer) -> Overhead:
    """Measure :class:`Overhead` on this machine with ``timer`` (see the module docstring).

    Example:
        >>> measure_overhead(lambda fn, args: 1e-6)
        Overhead(call_s=0.0, fault_s=0.0, noisy=False)
    """
    x = torch.zeros(1)
    leaf, nested = nn.Identity(), nn.Sequential(nn.Identity())
    with torch.inference_mode():
        t_leaf, t_nested = as_timing(timer(leaf, (x,))), as_timing(timer(nested, (x,)))
    warm = mmap.mmap(-1, FAULT_PROBE_BYTES)
    _touch(warm)
    faults = count_faults(_fresh_pages, (FAULT_PROBE_BYTES,))
    t_fresh = as_timing(timer(_fresh_pages, (FAULT_PROBE_BYTES,)))
    t_warm = as_timing(timer(_touch, (warm,)))
    warm.close()
    call_s = max(0.0, t_nested.seconds - t_leaf.seconds)
    fault_s = max(0.0, t_fresh.seconds - t_warm.seconds) / faults if faults else 0.0
    noisy = any(t.noisy for t in (t_leaf, t_nested, t_fresh, t_warm))
    return Overhead(call_s, fault_s, noisy)


def isa_flags_hash() -> str:
    """A short hash of this CPU's ISA flags (``/proc/cpuinfo``; ``"unknown"`` elsewhere)."""
    try:
        for line in _CPUINFO.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in _FLAG_KEYS:
                flags = " ".join(sorted(value.split()))
                return hashlib.sha256(flags.encode()).hexdigest()[:ISA_HASH_CHARS]
    except OSError:
        pass
    return "unknown"


def timer_name(timer: Timer) -> str:
    """A stable name of ``timer``: its ``name`` attribute, else its qualified name."""
    name = getattr(timer, "name", None)
    if isinstance(name, str):
        return name
    target = timer if hasattr(timer, "__qualname__") else type(timer)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"


def machine_fingerprint(threads: int, timer: Timer) -> dict[str, Any]:
    """What a latency table's figures depend on (two tables share figures only if equal).

    Example:
        >>> sorted(machine_fingerprint(1, MedianTimer()))
        ['capability', 'cpu', 'isa', 'threads', 'timer', 'torch']
    """
    return {
        "cpu": cpu_model(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "isa": isa_flags_hash(),
        "torch": torch.__version__,
        "threads": threads,
        "timer": timer_name(timer),
    }
