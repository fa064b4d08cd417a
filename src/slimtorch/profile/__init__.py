"""Measure a model: parameters, size in bits, MACs/FLOPs, memory, latency, energy, roofline.

``profile_model(model, example_input, ProfileConfig())`` returns a ``ModelProfile``;
``slimtorch.profile.output`` renders it as a table, JSON, CSV or PNG.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LayerProfile", "ModelProfile", "ProfileConfig", "profile_model"]


def __getattr__(name: str) -> Any:
    # Lazy: importing a building block (slimtorch.profile.noise) must not pull in the whole
    # profiler and its timing machinery.
    if name in __all__:
        from slimtorch.profile import report

        return getattr(report, name)
    raise AttributeError(f"module 'slimtorch.profile' has no attribute {name!r}")
