"""The stage kinds of a compression recipe, one module each, registered in :data:`STAGES`.

Every kind pairs the config dataclass its ``[[stage]]`` table parses into with a runner
``run(ctx: StageContext) -> None`` that changes ``ctx.state`` (model, masks, bit widths,
file). A new kind is a module with a ``run`` and one row in the table.

Example:
    >>> list(STAGES)[:6]
    ['netadapt', 'amc', 'prune', 'finetune', 'kmeans', 'linear']
    >>> STAGES["kmeans"].config.__name__
    'KMeansConfig'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from slimtorch.compress.configs import (
    BiasKMeansConfig,
    CentroidConfig,
    FinetuneConfig,
    HuffmanConfig,
    LinearQuantConfig,
)
from slimtorch.compress.stages import (
    bias_kmeans,
    encode,
    finetune,
    finetune_centroids,
    kmeans,
    linear,
    prune,
    search,
)
from slimtorch.compress.state import StageContext
from slimtorch.prune import PruneConfig
from slimtorch.quantize.kmeans import KMeansConfig
from slimtorch.search.amc_config import AMCConfig
from slimtorch.search.netadapt_config import NetAdaptConfig


@dataclass(frozen=True)
class StageKind:
    """A stage kind: the config its table parses into and the runner that applies it."""

    config: type
    run: Callable[[StageContext], None]


STAGES: dict[str, StageKind] = {
    "netadapt": StageKind(NetAdaptConfig, search.run_netadapt),
    "amc": StageKind(AMCConfig, search.run_amc),
    "prune": StageKind(PruneConfig, prune.run),
    "finetune": StageKind(FinetuneConfig, finetune.run),
    "kmeans": StageKind(KMeansConfig, kmeans.run),
    "linear": StageKind(LinearQuantConfig, linear.run),
    "finetune_centroids": StageKind(CentroidConfig, finetune_centroids.run),
    "bias_kmeans": StageKind(BiasKMeansConfig, bias_kmeans.run),
    "encode": StageKind(HuffmanConfig, encode.run),
}
QUANTIZE_KINDS = ("kmeans", "linear")  # a model is quantized once, by one of these
SEARCH_KINDS = ("netadapt", "amc")  # replace the model: before any mask or quantization
