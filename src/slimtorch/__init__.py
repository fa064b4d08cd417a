"""slimtorch: make neural networks small and fast.

The public verbs, mirroring the CLI (``slimtorch train|evaluate|profile``):

>>> import torch, slimtorch
>>> model = slimtorch.create_model("lenet5")
>>> cfg = slimtorch.ProfileConfig(latency=False, roofline=False)
>>> slimtorch.profile_model(model, torch.zeros(1, 1, 8, 8), cfg).params > 0
True
"""

from __future__ import annotations

from slimtorch.bench import TestSettings, benchmark
from slimtorch.checkpoint import load_checkpoint, save_checkpoint
from slimtorch.compress.job import compress, run_pipeline
from slimtorch.compress.recipe import Recipe, load_recipe
from slimtorch.data import load_data, load_digits, make_loaders
from slimtorch.distill import DistillConfig, Distiller
from slimtorch.encode import EncodeConfig, load_compressed, save_compressed
from slimtorch.models import ModelSpec, build_model, create_model
from slimtorch.profile import ProfileConfig, profile_model
from slimtorch.prune import PruneConfig, prune_model
from slimtorch.quantize import PTQConfig, QATConfig, quantize_ptq, quantize_qat, to_integer
from slimtorch.resolve import resolve_model
from slimtorch.train import FitConfig, evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "DistillConfig",
    "Distiller",
    "EncodeConfig",
    "FitConfig",
    "ModelSpec",
    "PTQConfig",
    "ProfileConfig",
    "PruneConfig",
    "QATConfig",
    "Recipe",
    "TestSettings",
    "benchmark",
    "build_model",
    "compress",
    "create_model",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_compressed",
    "load_data",
    "load_digits",
    "load_recipe",
    "make_loaders",
    "profile_model",
    "prune_model",
    "quantize_ptq",
    "quantize_qat",
    "resolve_model",
    "run_pipeline",
    "save_checkpoint",
    "save_compressed",
    "to_integer",
]
