"""What the stages of a compression run share: the pipeline state and one context per stage.

:class:`PipelineState` is what the stages change (the model, pruning masks, quantized bit
widths, the file written); :class:`StageContext` is everything one stage runner reads: that
state, the stage's config and the run's data and settings. :func:`dense_model` turns a model
with codebook layers back into an ordinary one (what the compressed file decodes to).

Example:
    >>> from slimtorch.models import build_model, make_spec
    >>> spec = make_spec("lenet300", image_size=2)
    >>> dense = dense_model(build_model(spec), spec)
    >>> weight_keys(dense)
    ['fc1.0.weight', 'fc2.0.weight', 'classifier.weight']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from slimtorch.compress.configs import HuffmanConfig
from slimtorch.distill import DistillConfig, Distiller
from slimtorch.encode import CompressedSummary
from slimtorch.models import ModelSpec, create_model
from slimtorch.quantize.kmeans import quantizable_layers
from slimtorch.quantize.trained import codebook_layers

Loaders = tuple[Any, Any, Any]  # (train, val, test) batches


@dataclass
class PipelineState:
    """What the stages change: the model, pruning masks, quantized bit widths."""

    model: nn.Module
    spec: ModelSpec
    masks: dict[str, Tensor] = field(default_factory=dict)
    qbits: dict[str, int] = field(default_factory=dict)
    huffman: HuffmanConfig = field(default_factory=HuffmanConfig)
    teacher: nn.Module | None = None
    file: CompressedSummary | None = None
    histogram: dict[str, Tensor] = field(default_factory=dict)
    file_metadata: dict[str, Any] = field(default_factory=dict)  # extra keys for the file


@dataclass(frozen=True)
class StageContext:
    """Everything one stage runner reads; it changes only ``state``.

    Attributes:
        state: the pipeline state the stage updates.
        config: the stage's config (its kind's dataclass).
        loaders: ``(train, val, test)`` batches.
        seed: the recipe's seed (fine-tuning runs).
        distill: the recipe's ``[distill]`` settings (None: none).
        progress: progress lines while training.
        out_file: where an encode stage writes the compressed file.
    """

    state: PipelineState
    config: Any
    loaders: Loaders
    seed: int = 0
    distill: DistillConfig | None = None
    progress: bool = True
    out_file: Path | None = None

    def distiller(self) -> Distiller | None:
        """A :class:`~slimtorch.distill.Distiller` from the uncompressed model when the stage
        sets ``distill = true`` and the recipe has a ``[distill]`` table, else None."""
        if not getattr(self.config, "distill", False) or self.distill is None:
            return None
        return Distiller(self.state.model, self.state.teacher, self.distill)


def dense_model(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """An ordinary model of ``spec`` holding ``model``'s effective weights (codebook layers
    decoded; pruned positions +0.0), in eval mode."""
    dense = create_model(spec.name, **spec.kwargs)  # the spec of a model already built
    shells = codebook_layers(model)
    source = model.state_dict()
    state = {}
    for key in dense.state_dict():
        owner, _, leaf = key.rpartition(".")
        if owner in shells and leaf == "weight":
            state[key] = plus_zero(shells[owner].weight.detach())
        else:
            state[key] = source[key].detach().clone()
    dense.load_state_dict(state)
    return dense.eval()


def plus_zero(t: Tensor) -> Tensor:
    """A copy of ``t`` with every -0.0 made +0.0, as a decoder writes untouched positions."""
    t = t.clone()
    t[t == 0] = 0.0
    return t


def weight_keys(model: nn.Module) -> list[str]:
    """``state_dict`` keys of the weights of every linear and conv layer."""
    return [f"{n}.weight" for n in quantizable_layers(model)]


def capture_histogram(state: PipelineState, when: str) -> None:
    """Keep one layer's nonzero weights (the largest quantized layer) for the histogram."""
    dense = dense_model(state.model, state.spec).state_dict()
    name = state.histogram.get("layer") or max(
        weight_keys(state.model), key=lambda k: dense[k].numel()
    )
    w = dense[name].reshape(-1)
    state.histogram["layer"] = name
    state.histogram[when] = w[w != 0].clone()
