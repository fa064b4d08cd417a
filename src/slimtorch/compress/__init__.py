"""The main job, ``slimtorch compress``: Deep Compression of a trained model by a recipe.

- :mod:`~slimtorch.compress.recipe`: a TOML recipe parsed and validated into stages;
- :mod:`~slimtorch.compress.stages`: one module per stage kind, registered in ``STAGES``
  (prune, finetune, kmeans, linear, finetune_centroids, bias_kmeans, encode);
- :mod:`~slimtorch.compress.job`: the baseline, :func:`run_pipeline` (the stages, measured
  after each), decoding and re-evaluating the file, and :func:`compress`, the whole job;
- :mod:`~slimtorch.compress.report`: ``report.json``, ``report.md`` and the plots;
- :mod:`~slimtorch.cli.compress`: the subcommand's options.

Example:
    >>> [s.kind for s in load_recipe("default").stages][:3]
    ['prune', 'finetune', 'kmeans']
"""

from __future__ import annotations

from slimtorch.compress.configs import (
    BiasKMeansConfig,
    CentroidConfig,
    FinetuneConfig,
    HuffmanConfig,
    LinearQuantConfig,
    ModelSection,
)
from slimtorch.compress.job import CompressOutcome, compress, run_pipeline
from slimtorch.compress.measure import PipelineResult, StageRecord
from slimtorch.compress.recipe import Recipe, Stage, load_recipe, parse_recipe, shipped_recipes
from slimtorch.compress.stages import STAGES

__all__ = [
    "STAGES",
    "BiasKMeansConfig",
    "CentroidConfig",
    "CompressOutcome",
    "FinetuneConfig",
    "HuffmanConfig",
    "LinearQuantConfig",
    "ModelSection",
    "PipelineResult",
    "Recipe",
    "Stage",
    "StageRecord",
    "compress",
    "load_recipe",
    "parse_recipe",
    "run_pipeline",
    "shipped_recipes",
]
