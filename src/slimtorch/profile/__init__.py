"""Measure a model: parameters, size in bits, MACs/FLOPs, memory, latency, energy, roofline.

``profile_model(model, example_input, ProfileConfig())`` returns a ``ModelProfile``;
``slimtorch.profile.output`` renders it as a table, JSON, CSV or PNG.
"""

from __future__ import annotations

from slimtorch.profile.config import ProfileConfig
from slimtorch.profile.report import LayerProfile, ModelProfile, profile_model

__all__ = ["LayerProfile", "ModelProfile", "ProfileConfig", "profile_model"]
