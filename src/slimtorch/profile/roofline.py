"""Roofline model against this machine's measured memory bandwidth and peak FLOP/s.

Attainable FLOP/s at arithmetic intensity ``I`` (FLOP per byte moved) is
``min(peak_flops, I * bandwidth)`` (Williams, Waterman & Patterson, CACM 2009). The ridge
``peak_flops / bandwidth`` separates memory-bound points (below it) from compute-bound ones
(at or above it).

Measurement: bandwidth is the best of several ``x.sum()`` over an fp32 tensor of at least four
times the last-level cache (256 MiB minimum), counting ``x.nbytes`` per call (a read-only
stream). Peak is the best of several fp32 ``a @ b`` with ``n = 2048``, counting ``2 n**3``
FLOP. Both run with ``threads`` torch threads; the figures vary between runs on shared
machines, so treat them as a rough ceiling.

Cache: ``load_or_measure_machine`` keeps the peaks in ``machine.json`` with when (ISO 8601,
UTC) and how they were measured (threads, torch version, CPU model, load average, method).
A measurement flagged noisy (:mod:`slimtorch.profile.noise`: other processes busy on our
cores, a high load average, a slowed calibration probe) is used for the run that made it but
never cached. The cache is measured again when it is older than ``CACHE_MAX_AGE_DAYS`` or its
host, CPU model, torch version or thread count differ from the run's.

Example:
    >>> peaks = MachinePeaks(20e9, 100e9, 2, "2025-01-01T00:00:00+00:00", "synthetic")
    >>> roofline_point(flops=10, bytes_moved=10, peaks=peaks).bound
    'memory'
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from matplotlib.figure import Figure

from slimtorch.errors import ConfigError
from slimtorch.io import atomic_write_bytes
from slimtorch.profile.noise import Noise, NoiseWatch, torch_threads

CACHE_ENV_VAR = "SLIMTORCH_CACHE_DIR"
CACHE_FILE_NAME = "machine.json"
CACHE_VERSION = 2  # 2: torch version, CPU model, load average and the noise verdict recorded
CACHE_MAX_AGE_DAYS = 30
MIN_STREAM_BYTES = 256 * 2**20
LLC_MULTIPLE = 4  # stream at least 4x the last-level cache so reads come from DRAM
DEFAULT_MATMUL_N = 2048
MIN_TIMED_REPEATS = 3
PLOT_DECADES_AROUND_RIDGE = 3
_SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")
_CPUINFO = Path("/proc/cpuinfo")
_CPUINFO_KEYS = ("model name", "Model", "Hardware", "cpu model")


@dataclass(frozen=True)
class MachinePeaks:
    """Measured ceilings of one machine.

    Args:
        bandwidth_bytes_per_s: Sustained DRAM read bandwidth.
        peak_flops_per_s: fp32 matmul FLOP/s.
        threads: torch threads used for both measurements.
        measured_at: ISO 8601 time of the measurement (UTC).
        how: What was measured, in words.
        torch_version: ``torch.__version__`` of the measurement.
        cpu_model: The CPU's model name (see :func:`cpu_model`).
        load_average: 1-minute load average before the measurement.
        noisy: The measurement was flagged noisy (never cached).
        noise: The full verdict (see :mod:`slimtorch.profile.noise`).
    """

    bandwidth_bytes_per_s: float
    peak_flops_per_s: float
    threads: int
    measured_at: str
    how: str
    torch_version: str = ""
    cpu_model: str = ""
    load_average: float | None = None
    noisy: bool = False
    noise: Noise | None = None


@dataclass(frozen=True)
class RooflinePoint:
    """Where one kernel or layer sits on the roofline."""

    intensity: float  # FLOP per byte
    attainable_flops_per_s: float
    bound: Literal["memory", "compute"]
    ridge_intensity: float  # FLOP per byte where the roofs meet


def _last_level_cache_bytes() -> int:
    """Largest CPU cache size from sysfs, or 0 where sysfs does not say."""
    sizes = [0]
    for entry in _SYSFS_CACHE.glob("index*/size"):
        text = entry.read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KM")) * scale)
    return max(sizes)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else ``platform.processor()`` or machine).

    Example:
        >>> isinstance(cpu_model(), str)
        True
    """
    try:
        for line in _CPUINFO.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in _CPUINFO_KEYS and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _timed_repeats(work: Callable[[], object], budget_s: float) -> list[float]:
    """Seconds of each timed call of ``work``: one warm-up, then repeats within budget."""
    work()
    times, start = [], time.perf_counter()
    while len(times) < MIN_TIMED_REPEATS or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return times


def _measure(
    seconds: float, stream_bytes: int, matmul_n: int
) -> tuple[float, float, str, list[float]]:
    x = torch.ones(stream_bytes // 4, dtype=torch.float32)
    bw_times = _timed_repeats(x.sum, seconds / 2)
    bandwidth = x.nbytes / max(min(bw_times), 1e-9)
    del x
    a, b = torch.randn(matmul_n, matmul_n), torch.randn(matmul_n, matmul_n)
    mm_times = _timed_repeats(lambda: a @ b, seconds / 2)
    flops = 2 * matmul_n**3 / max(min(mm_times), 1e-9)
    how = (
        f"bandwidth: best of {len(bw_times)} x.sum() over {stream_bytes / 2**20:.0f} MiB fp32 "
        f"(read); peak: best of {len(mm_times)} fp32 {matmul_n}x{matmul_n} matmul (2n^3 FLOP)"
    )
    return bandwidth, flops, how, mm_times


def measure_machine(
    seconds: float = 1.0,
    threads: int | None = None,
    *,
    stream_bytes: int | None = None,
    matmul_n: int = DEFAULT_MATMUL_N,
) -> MachinePeaks:
    """Measure memory bandwidth and fp32 peak FLOP/s (see the module docstring).

    Args:
        seconds: Rough time budget, split between the two probes; each runs at least
            ``MIN_TIMED_REPEATS`` timed repeats, so a tiny budget still yields figures.
        threads: torch threads to measure with (restored afterwards); None keeps the current.
        stream_bytes: Size of the streamed tensor; None uses
            ``max(256 MiB, 4 x last-level cache)``. Smaller values measure a cache.
        matmul_n: Side of the square matmul.

    Returns:
        The measured ``MachinePeaks``, with when and how, and the noise verdict (spread of
        the matmul repeats, contention, load, calibration probe).

    Example:
        >>> peaks = measure_machine(0.01, stream_bytes=2**20, matmul_n=64)
        >>> peaks.peak_flops_per_s > 0
        True
    """
    if seconds < 0 or matmul_n < 1 or (threads is not None and threads < 1):
        raise ConfigError("measure_machine: seconds >= 0, matmul_n >= 1, threads >= 1 expected")
    stream = stream_bytes or max(MIN_STREAM_BYTES, LLC_MULTIPLE * _last_level_cache_bytes())
    with torch_threads(threads) as used, NoiseWatch(used) as watch:
        bandwidth, flops, how, mm_times = _measure(seconds, max(stream, 4), matmul_n)
    noise = watch.judge(mm_times)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return MachinePeaks(
        bandwidth, flops, used, now, how, torch.__version__, cpu_model(),
        noise.load_before, noise.noisy, noise,
    )  # fmt: skip


def default_cache_path() -> Path:
    """``$SLIMTORCH_CACHE_DIR/machine.json``, else ``~/.cache/slimtorch/machine.json``.

    Returns:
        The path (it may not exist).

    Example:
        >>> default_cache_path().name
        'machine.json'
    """
    root = os.environ.get(CACHE_ENV_VAR)
    base = Path(root) if root else Path.home() / ".cache" / "slimtorch"
    return base / CACHE_FILE_NAME


def _age_days(measured_at: str) -> float:
    """Days since an ISO 8601 time (infinite when unparsable or naive)."""
    try:
        then = datetime.datetime.fromisoformat(measured_at)
        return (datetime.datetime.now(datetime.UTC) - then).total_seconds() / 86400
    except (ValueError, TypeError):
        return math.inf


def _read_cache(path: Path, threads: int) -> MachinePeaks | None:
    """Cached peaks if readable, quiet, recent, and from this host, CPU, torch and threads."""
    try:
        record = json.loads(path.read_text())
        if record.pop("version") != CACHE_VERSION or record.pop("host") != platform.node():
            return None
        noise = record.pop("noise")
        peaks = MachinePeaks(**record, noise=None if noise is None else Noise.from_dict(noise))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    current = (threads, torch.__version__, cpu_model(), False)
    if (peaks.threads, peaks.torch_version, peaks.cpu_model, peaks.noisy) != current:
        return None
    return peaks if _age_days(peaks.measured_at) <= CACHE_MAX_AGE_DAYS else None


def load_or_measure_machine(
    cache: Path | None = None,
    *,
    seconds: float = 1.0,
    threads: int | None = None,
    refresh: bool = False,
) -> MachinePeaks:
    """Cached machine peaks, measuring (and caching) them when needed.

    The cache is re-measured when it is missing, unreadable, of another version, older than
    ``CACHE_MAX_AGE_DAYS``, from another host (``platform.node()``), CPU model or torch
    version, or for another thread count, or when ``refresh`` is set. A measurement flagged
    noisy is returned (``peaks.noisy``, reasons in ``peaks.noise``) but not written.

    Args:
        cache: JSON file; None uses ``default_cache_path()``.
        seconds: Budget passed to ``measure_machine`` when measuring.
        threads: Thread count to measure with; None means ``torch.get_num_threads()``.
        refresh: Measure even if a valid cache exists.

    Returns:
        The peaks, from the cache or freshly measured (``noisy`` ones are not cached).

    Example:
        >>> peaks = load_or_measure_machine(Path("/tmp/slimtorch-doc/machine.json"))
        >>> peaks.bandwidth_bytes_per_s > 0
        True
    """
    path = cache or default_cache_path()
    want = threads or torch.get_num_threads()
    cached = None if refresh else _read_cache(path, want)
    if cached is not None:
        return cached
    peaks = measure_machine(seconds, want)
    if peaks.noisy:
        return peaks  # measured under contention: good enough for this run, never cached
    record = {"version": CACHE_VERSION, "host": platform.node(), **dataclasses.asdict(peaks)}
    atomic_write_bytes(path, json.dumps(record, indent=2).encode())
    return peaks


def roofline_point(flops: int, bytes_moved: int, peaks: MachinePeaks) -> RooflinePoint:
    """Place a kernel with ``flops`` and ``bytes_moved`` on the roofline of ``peaks``.

    Args:
        flops: Floating-point operations (a MAC counts 2).
        bytes_moved: Bytes read and written from memory. 0 means infinite intensity.
        peaks: The machine.

    Returns:
        The point; ``bound`` is ``"memory"`` strictly below the ridge, else ``"compute"``.

    Example:
        >>> peaks = MachinePeaks(10e9, 100e9, 1, "", "synthetic")
        >>> roofline_point(200, 10, peaks).attainable_flops_per_s
        100000000000.0
    """
    if flops < 0 or bytes_moved < 0:
        raise ConfigError(f"roofline_point: counts must be >= 0, got {flops}, {bytes_moved}")
    ridge = peaks.peak_flops_per_s / peaks.bandwidth_bytes_per_s
    intensity = flops / bytes_moved if bytes_moved else math.inf
    attainable = min(peaks.peak_flops_per_s, intensity * peaks.bandwidth_bytes_per_s)
    return RooflinePoint(intensity, attainable, "memory" if intensity < ridge else "compute", ridge)


def roofline_time_s(flops: int, bytes_moved: int, peaks: MachinePeaks) -> float:
    """Lower bound on run time: ``max(flops / peak, bytes / bandwidth)``.

    Args:
        flops: Floating-point operations.
        bytes_moved: Bytes moved to or from memory.
        peaks: The machine.

    Returns:
        Seconds.

    Example:
        >>> roofline_time_s(10**9, 10**9, MachinePeaks(1e9, 1e10, 1, "", ""))
        1.0
    """
    compute = flops / peaks.peak_flops_per_s
    return max(compute, bytes_moved / peaks.bandwidth_bytes_per_s)


def _x_range(intensities: Sequence[float], ridge: float) -> tuple[float, float]:
    span = 10.0**PLOT_DECADES_AROUND_RIDGE
    finite = [i for i in intensities if 0 < i < math.inf]
    return min([ridge / span, *finite]) / 2, max([ridge * span, *finite]) * 2


def plot_roofline(
    points: Sequence[tuple[str, RooflinePoint]], peaks: MachinePeaks, path: Path | str
) -> None:
    """Draw the roofline and labelled points to a PNG, written atomically.

    Points with zero intensity cannot sit on a log axis and are left out; points with
    infinite intensity are drawn at the right edge.

    Args:
        points: ``(label, point)`` pairs, e.g. one per layer.
        peaks: The machine whose roofs are drawn.
        path: Output PNG path.

    Example:
        >>> peaks = MachinePeaks(20e9, 100e9, 2, "", "synthetic")
        >>> plot_roofline([("fc", roofline_point(2000, 1000, peaks))], peaks, "/tmp/r.png")
    """
    ridge = peaks.peak_flops_per_s / peaks.bandwidth_bytes_per_s
    lo, hi = _x_range([p.intensity for _, p in points], ridge)
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    xs = [lo, ridge, hi]
    ax.plot(xs, [min(peaks.peak_flops_per_s, x * peaks.bandwidth_bytes_per_s) for x in xs], "k-")
    for label, p in points:
        if p.intensity > 0:
            ax.plot(min(p.intensity, hi), p.attainable_flops_per_s, "o")
            ax.annotate(label, (min(p.intensity, hi), p.attainable_flops_per_s), fontsize=7)
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP/byte)")
    ax.set(ylabel="attainable FLOP/s", title=f"roofline ({peaks.threads} threads)")
    ax.grid(True, which="both", alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(Path(path), buffer.getvalue())
