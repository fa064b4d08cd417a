"""Clocks for the load generator: real time, or a virtual clock for exact, machine-free tests.

The load generator only asks a clock for ``now()`` and to ``sleep_until(t)``. With
:class:`RealClock` that is ``time.perf_counter``; with :class:`VirtualClock` time moves only
when someone advances it, typically a :class:`SimulatedSUT` whose service time is known, so a
Server search on a simulated 2 ms system gives the same answer on any machine.

Example:
    >>> clock = VirtualClock()
    >>> sut = SimulatedSUT(clock, service_s=0.002)
    >>> _ = sut([0, 1, 2]); clock.now()
    0.002
"""

from __future__ import annotations

import time
from collections.abc import Sized
from typing import Any, Protocol

from slimtorch.errors import ConfigError

SPIN_S = 2e-4  # sleep until this close to the target, then spin (OS sleeps overshoot)


class Clock(Protocol):
    """What the load generator needs from a clock (seconds, monotonic)."""

    def now(self) -> float:
        """Current time in seconds."""
        ...

    def sleep_until(self, t: float) -> None:
        """Return at time ``t`` or later (at once when ``t`` has passed)."""
        ...


class RealClock:
    """``time.perf_counter`` with a sleep that spins for the last fraction of a millisecond.

    Example:
        >>> c = RealClock(); t = c.now(); c.sleep_until(t + 0.001); c.now() >= t + 0.001
        True
    """

    def now(self) -> float:
        """Current time in seconds."""
        return time.perf_counter()

    def sleep_until(self, t: float) -> None:
        """Block until ``time.perf_counter() >= t``."""
        remaining = t - time.perf_counter()
        if remaining > SPIN_S:
            time.sleep(remaining - SPIN_S)
        while time.perf_counter() < t:
            pass


class VirtualClock:
    """Time that moves only by :meth:`advance` and :meth:`sleep_until`.

    Example:
        >>> c = VirtualClock(); c.sleep_until(1.5); c.advance(0.5); c.now()
        2.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)

    def now(self) -> float:
        """Current virtual time in seconds."""
        return self._t

    def sleep_until(self, t: float) -> None:
        """Jump to ``t`` when it lies ahead."""
        self._t = max(self._t, float(t))

    def advance(self, dt: float) -> None:
        """Move time forward by ``dt >= 0`` seconds."""
        if dt < 0:
            raise ConfigError(f"VirtualClock.advance: dt must be >= 0, got {dt}")
        self._t += dt


class SimulatedSUT:
    """A system under test that takes ``service_s + per_sample_s * len(batch)`` virtual seconds.

    Its capacity at batch 1 is ``1 / (service_s + per_sample_s)`` queries per second.

    Args:
        clock: the virtual clock it advances.
        service_s: fixed time per call.
        per_sample_s: extra time per sample in the call.

    Example:
        >>> c = VirtualClock(); sut = SimulatedSUT(c, 0.001, per_sample_s=0.0005)
        >>> sut([7, 8]) == [7, 8], c.now()
        (True, 0.002)
    """

    def __init__(self, clock: VirtualClock, service_s: float, per_sample_s: float = 0.0) -> None:
        if service_s < 0 or per_sample_s < 0 or service_s + per_sample_s <= 0:
            raise ConfigError(
                f"SimulatedSUT: service times must be >= 0 and not both 0, "
                f"got {service_s}, {per_sample_s}"
            )
        self.clock, self.service_s, self.per_sample_s = clock, service_s, per_sample_s
        self.calls = 0

    def __call__(self, batch: Sized) -> Any:
        self.calls += 1
        self.clock.advance(self.service_s + self.per_sample_s * len(batch))
        return batch
