"""Search for efficient shapes: a latency model of this machine, NetAdapt, AMC.

Candidates are evaluated through :class:`~slimtorch.search.parallel.Workers` (in-process, or
on Ray with the ``search`` extra).
"""

from slimtorch.search.parallel import Workers

__all__ = ["Workers"]
