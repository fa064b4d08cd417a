"""Can a timing be trusted? Spread, contention, load average and a calibration probe.

On a shared machine (a laptop running a browser, a server running other jobs) a timing says
more about the neighbours than about the code: a 0.35 ms model reads 292 ms when its threads
wait for cores. Every timed figure therefore carries a :class:`Noise` verdict, ``noisy`` when
any of these holds (each threshold is named below):

- **spread**: the coefficient of variation (population standard deviation over mean) of the
  figure's samples is above ``NOISY_CV`` (judged with at least ``MIN_SPREAD_SAMPLES``);
- **contention**: during the measurement, other processes kept more than
  ``cores - threads + SPARE_CORE_TOLERANCE`` of this process's cores busy. Linux only: busy
  time of each CPU this process may run on (``/proc/stat``: user, nice, system, irq, softirq,
  steal) less this process's own CPU time, over the wall time; judged when the window lasts
  at least ``ACCOUNTING_MIN_WINDOW_S`` (the counters tick every 10 ms);
- **load**: the 1-minute load average before the measurement, less the threads measured (at
  most this process's own share), is above ``cores - threads + LOAD_TOLERANCE``;
- **probe**: a fixed small workload (a ``PROBE_N`` x ``PROBE_N`` fp32 matmul), timed
  ``PROBE_REPEATS`` times before and after the measurement, ran (median of either side) more
  than ``PROBE_SLOWDOWN_LIMIT`` times slower than its best;
- **oversubscription**: more threads than cores.

``cores`` is the number of CPUs this process may run on (its affinity mask). The verdict's
remedy is the same in every case: fewer threads (``--threads 1``) or a quieter machine.

Example:
    >>> judge_noise([1.0, 1.0, 1.0, 1.0], threads=1, cores=4).noisy
    False
    >>> judge_noise([1.0, 3.0, 1.0, 3.0], threads=1, cores=4).reasons
    ('spread: CV 0.50 > 0.25',)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimtorch.errors import ConfigError

NOISY_CV = 0.25
MIN_SPREAD_SAMPLES = 3
SPARE_CORE_TOLERANCE = 0.5  # cores of background work tolerated beyond the spare ones
LOAD_TOLERANCE = 0.5
ACCOUNTING_MIN_WINDOW_S = 0.25
PROBE_N = 128
PROBE_REPEATS = 5
PROBE_SLOWDOWN_LIMIT = 2.0
P50, P90 = 50.0, 90.0
# /proc/stat per-CPU fields counted as busy: user nice system (idle iowait) irq softirq steal;
# guest time is already part of user.
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)
_PROC_STAT = Path("/proc/stat")
HINT = "rerun with --threads 1 or on a quieter machine"


@dataclass(frozen=True)
class MachineSample:
    """One look at the machine: clocks, CPU accounting, load average.

    Args:
        wall_s: ``time.perf_counter()``.
        self_cpu_s: this process's CPU seconds, all threads (``time.process_time()``).
        busy_cpu_s: busy seconds of the CPUs this process may run on, all processes; None
            where the platform does not say (no ``/proc/stat``).
        load1: 1-minute load average; None where unavailable.
    """

    wall_s: float
    self_cpu_s: float
    busy_cpu_s: float | None
    load1: float | None


@dataclass(frozen=True)
class Noise:
    """How far a timed figure can be trusted (see the module docstring).

    Args:
        noisy: any rule fired.
        reasons: one line per rule that fired.
        threads: torch threads the figure was measured with.
        cores: CPUs this process may run on.
        samples: number of timed samples judged for spread (0: spread not judged).
        p50_s, p90_s, cv: median, 90th percentile and coefficient of variation of the samples.
        load_before, load_after: 1-minute load average around the measurement.
        other_cores: cores other processes kept busy during the measurement (None: not
            measured, e.g. a window shorter than ``ACCOUNTING_MIN_WINDOW_S``).
        window_s: wall time between the two machine samples.
        probe_slowdown: the probe's median over its best time (None: no probe).
    """

    noisy: bool
    reasons: tuple[str, ...]
    threads: int
    cores: int
    samples: int = 0
    p50_s: float | None = None
    p90_s: float | None = None
    cv: float | None = None
    load_before: float | None = None
    load_after: float | None = None
    other_cores: float | None = None
    window_s: float | None = None
    probe_slowdown: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Noise:
        """The inverse of :meth:`to_dict`."""
        return cls(**{**d, "reasons": tuple(d["reasons"])})


def coefficient_of_variation(samples: Sequence[float]) -> float:
    """Population standard deviation over mean (0 for equal samples).

    Args:
        samples: Non-empty, non-negative values.

    Returns:
        ``sqrt(mean((x - m)^2)) / m`` with ``m = mean(x)``; 0 when ``m`` is 0.

    Example:
        >>> coefficient_of_variation([1.0, 3.0])
        0.5
    """
    if len(samples) == 0:
        raise ConfigError("coefficient_of_variation: no samples")
    x = np.asarray(samples, dtype=np.float64)
    mean = float(x.mean())
    return float(x.std()) / mean if mean > 0 else 0.0


def other_busy_cores(before: MachineSample, after: MachineSample) -> float | None:
    """Cores other processes kept busy between two samples, or None when not measurable.

    ``(busy time delta - own CPU time delta) / wall time``, at least 0; None without CPU
    accounting or when the window is shorter than ``ACCOUNTING_MIN_WINDOW_S``.

    Example:
        >>> a, b = MachineSample(0.0, 0.0, 10.0, None), MachineSample(1.0, 0.5, 12.0, None)
        >>> other_busy_cores(a, b)
        1.5
    """
    window = after.wall_s - before.wall_s
    if before.busy_cpu_s is None or after.busy_cpu_s is None:
        return None
    if window < ACCOUNTING_MIN_WINDOW_S:
        return None
    own = after.self_cpu_s - before.self_cpu_s
    return max(0.0, (after.busy_cpu_s - before.busy_cpu_s - own) / window)


def probe_slowdown(before_s: Sequence[float], after_s: Sequence[float]) -> float | None:
    """The slower side's median probe time over the best probe time of both sides.

    Example:
        >>> probe_slowdown([1.0, 1.0, 1.0], [1.0, 2.0, 2.0])
        2.0
    """
    times = [*before_s, *after_s]
    if not times or min(times) <= 0:
        return None
    medians = [float(np.median(side)) for side in (before_s, after_s) if len(side)]
    return max(medians) / min(times)


def _spread_reason(samples: Sequence[float] | None) -> tuple[dict[str, Any], list[str]]:
    if samples is None or len(samples) == 0:
        return {}, []
    cv = coefficient_of_variation(samples)
    fields = {
        "samples": len(samples),
        "p50_s": float(np.percentile(samples, P50)),
        "p90_s": float(np.percentile(samples, P90)),
        "cv": cv,
    }
    fired = len(samples) >= MIN_SPREAD_SAMPLES and cv > NOISY_CV
    return fields, [f"spread: CV {cv:.2f} > {NOISY_CV}"] if fired else []


def _machine_reasons(
    threads: int, cores: int, before: MachineSample | None, after: MachineSample | None
) -> tuple[dict[str, Any], list[str]]:
    reasons, spare = [], cores - threads
    if threads > cores:
        reasons.append(f"oversubscribed: {threads} threads on {cores} cores")
    if before is None or after is None:
        return {}, reasons
    other = other_busy_cores(before, after)
    if other is not None and other > spare + SPARE_CORE_TOLERANCE:
        reasons.append(
            f"contention: other processes kept {other:.1f} of {cores} cores busy "
            f"({threads} threads measured)"
        )
    load = before.load1
    if load is not None and load - threads > spare + LOAD_TOLERANCE:
        reasons.append(f"load: 1-minute load average {load:.2f} on {cores} cores")
    fields = {
        "load_before": before.load1,
        "load_after": after.load1,
        "other_cores": other,
        "window_s": after.wall_s - before.wall_s,
    }
    return fields, reasons


def judge_noise(
    samples: Sequence[float] | None,
    threads: int,
    cores: int,
    before: MachineSample | None = None,
    after: MachineSample | None = None,
    probe_s: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Noise:
    """Judge a measurement by the rules of the module docstring (a pure function).

    Args:
        samples: the timed samples (seconds); None judges the machine only (figures whose
            samples spread by design, such as Server latencies that include queueing).
        threads: torch threads measured with.
        cores: CPUs this process may run on.
        before, after: machine samples around the measurement (None: not judged).
        probe_s: the probe's times before and after (None: no probe).

    Returns:
        The :class:`Noise` verdict with every figure it was judged on.

    Example:
        >>> before = MachineSample(0.0, 0.0, 0.0, 3.0)
        >>> after = MachineSample(1.0, 1.0, 3.0, 3.0)   # 3 busy cores, 1 of them ours
        >>> judge_noise(None, 2, 2, before, after).reasons[0]
        'contention: other processes kept 2.0 of 2 cores busy (2 threads measured)'
    """
    if threads < 1 or cores < 1:
        raise ConfigError(f"judge_noise: threads and cores must be >= 1, got {threads}, {cores}")
    spread, reasons = _spread_reason(samples)
    machine, more = _machine_reasons(threads, cores, before, after)
    reasons += more
    slowdown = probe_slowdown(*probe_s) if probe_s is not None else None
    if slowdown is not None and slowdown > PROBE_SLOWDOWN_LIMIT:
        reasons.append(f"probe: a fixed workload ran {slowdown:.1f}x slower than its best")
    return Noise(
        bool(reasons), tuple(reasons), threads, cores, probe_slowdown=slowdown, **spread, **machine
    )


def usable_cpus() -> frozenset[int]:
    """The CPUs this process may run on (its affinity mask; all CPUs where unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return frozenset(os.sched_getaffinity(0))
    return frozenset(range(os.cpu_count() or 1))


def _busy_seconds(cpus: frozenset[int]) -> float | None:
    """Busy seconds of ``cpus`` from ``/proc/stat``; None where it cannot be read."""
    try:
        lines = _PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    ticks, seen = 0, False
    for line in lines:
        name, _, rest = line.partition(" ")
        if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cpus:
            values = rest.split()
            ticks += sum(int(values[i]) for i in BUSY_FIELDS if i < len(values))
            seen = True
    return ticks / os.sysconf("SC_CLK_TCK") if seen else None


def sample_machine(cpus: frozenset[int] | None = None) -> MachineSample:
    """Read the clocks, the CPU accounting of ``cpus`` (default: usable ones), the load."""
    try:
        load: float | None = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = None
    busy = _busy_seconds(cpus if cpus is not None else usable_cpus())
    return MachineSample(time.perf_counter(), time.process_time(), busy, load)


def run_probe(repeats: int = PROBE_REPEATS) -> list[float]:
    """Seconds of ``repeats`` timed runs of the fixed probe workload (after one untimed)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(PROBE_N, PROBE_N, generator=gen)
    b = torch.rand(PROBE_N, PROBE_N, generator=gen)
    times = []
    with torch.inference_mode():
        torch.mm(a, b)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
    return times


class NoiseWatch:
    """Watch the machine around a measurement, then judge it.

    Probe, machine sample, (the measurement), machine sample, probe.

    Args:
        threads: torch threads the measurement uses (default: the current setting).
        probe: run the calibration probe before and after.

    Example:
        >>> with NoiseWatch(probe=False) as watch:
        ...     pass
        >>> watch.judge([1.0, 1.0, 1.0]).cv
        0.0
    """

    def __init__(self, threads: int | None = None, probe: bool = True) -> None:
        self.threads = threads or torch.get_num_threads()
        self.cpus = usable_cpus()
        self.probe = probe
        self._probes: tuple[list[float], list[float]] = ([], [])
        self._before: MachineSample | None = None
        self._after: MachineSample | None = None

    def __enter__(self) -> NoiseWatch:
        if self.probe:
            self._probes[0][:] = run_probe()
        self._before = sample_machine(self.cpus)
        return self

    def __exit__(self, *exc: object) -> None:
        self._after = sample_machine(self.cpus)
        if self.probe:
            self._probes[1][:] = run_probe()

    def judge(self, samples: Sequence[float] | None = None) -> Noise:
        """The verdict on ``samples`` (seconds) measured inside the ``with`` block."""
        probes = self._probes if self.probe else None
        return judge_noise(samples, self.threads, len(self.cpus), self._before, self._after, probes)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the body with ``threads`` torch intra-op threads, restoring the setting after.

    Args:
        threads: thread count, or None to keep the current setting.

    Yields:
        The thread count in effect.

    Example:
        >>> with torch_threads(1) as n:
        ...     n
        1
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"threads: expected >= 1, got {threads}")
    before = torch.get_num_threads()
    try:
        if threads is not None and threads != before:
            torch.set_num_threads(threads)
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def noise_hint(noises: Sequence[Noise | None]) -> str | None:
    """One hint line when any verdict is noisy (None otherwise).

    Example:
        >>> print(noise_hint([judge_noise([1.0, 3.0, 1.0, 3.0], threads=1, cores=4)]))
        noisy timing (spread: CV 0.50 > 0.25): rerun with --threads 1 or on a quieter machine
    """
    noisy = [n for n in noises if n is not None and n.noisy]
    if not noisy:
        return None
    return f"noisy timing ({noisy[0].reasons[0]}): {HINT}"


def threads_text(threads: int | None) -> str:
    """``"1 thread"``, ``"4 threads"`` (``"? threads"`` when unknown), for table titles."""
    return f"{'?' if threads is None else threads} thread{'' if threads == 1 else 's'}"


def noisy_mark(noise: Noise | None) -> str:
    """``" noisy"`` to put next to a figure in a table, or ``""``."""
    return " noisy" if noise is not None and noise.noisy else ""
