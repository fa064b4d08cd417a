"""A timing taken beside CPU-burning processes is flagged noisy, and not cached as the
machine's peak. Nothing here asserts a speed: only that the contention is noticed.

The burners are ``python -c "while True: pass"`` processes, one more than this process's
cores, killed when the module's tests end; the timed work runs with one thread per core, so
no core is spare and the contention rule applies (Linux: it reads ``/proc/stat``).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from slimtorch.profile import roofline
from slimtorch.profile.noise import ACCOUNTING_MIN_WINDOW_S, usable_cpus
from slimtorch.profile.roofline import load_or_measure_machine
from slimtorch.profile.timing import measure_latency

pytestmark = [
    pytest.mark.cpu_burner,
    pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux CPU accounting"),
]
BURNERS = min(len(usable_cpus()) + 1, 3)
SETTLE_S = 0.2  # let the burners get scheduled before timing


@pytest.fixture(scope="module")
def burners() -> Iterator[int]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BURNERS)]
    try:
        time.sleep(SETTLE_S)
        yield len(procs)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def test_latency_beside_cpu_burners_is_flagged_noisy(burners: int) -> None:
    a = torch.rand(64, 64)
    stats = measure_latency(
        torch.mm, (a, a), warmup=0, runs=10**7, max_seconds=2 * ACCOUNTING_MIN_WINDOW_S,
        threads=len(usable_cpus()),
    )  # fmt: skip
    assert stats.noisy and stats.noise is not None
    assert stats.noise.reasons  # says why (contention, spread, load or probe)
    assert stats.noise.other_cores is not None  # the window was long enough to account


def test_machine_peaks_measured_under_load_are_not_cached(
    burners: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = functools.partial(roofline.measure_machine, stream_bytes=2**20, matmul_n=128)
    monkeypatch.setattr(roofline, "measure_machine", small)
    cache = tmp_path / "machine.json"
    peaks = load_or_measure_machine(cache, seconds=0.4, threads=len(usable_cpus()))
    assert peaks.noisy and peaks.noise is not None and peaks.noise.reasons
    assert peaks.bandwidth_bytes_per_s > 0  # still usable for this run
    assert not cache.exists()
