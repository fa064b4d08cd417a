"""Search for efficient shapes: a latency model of this machine, NetAdapt, AMC.

- :mod:`~slimtorch.search.latency`: :class:`LatencyTable`, measured latency per layer
  configuration on this machine, cached, summed into a model's predicted latency;
- :mod:`~slimtorch.search.netadapt`: :func:`netadapt` (Yang et al. 2018);
- :mod:`~slimtorch.search.amc`: :func:`amc_search` (He et al. 2018) with a DDPG agent;
- :mod:`~slimtorch.search.parallel`: :class:`Workers`, candidate evaluations in-process or
  on Ray (the ``search`` extra).

``slimtorch search netadapt|amc`` runs them from the command line.
"""

from slimtorch.search.amc import amc_search, write_amc
from slimtorch.search.amc_config import AMCConfig, AMCResult
from slimtorch.search.latency import LatencyTable
from slimtorch.search.netadapt import netadapt
from slimtorch.search.netadapt_config import NetAdaptConfig, NetAdaptResult
from slimtorch.search.netadapt_steps import macs_cost, write_trajectory
from slimtorch.search.parallel import Workers

__all__ = [
    "AMCConfig",
    "AMCResult",
    "LatencyTable",
    "NetAdaptConfig",
    "NetAdaptResult",
    "Workers",
    "amc_search",
    "macs_cost",
    "netadapt",
    "write_amc",
    "write_trajectory",
]
