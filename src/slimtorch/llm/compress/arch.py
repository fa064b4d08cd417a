"""Per-architecture tables: where the blocks are, which linears share an input, what precedes
them. Algorithms read these tables; they never test class names.

``input_groups`` lists the block's linears grouped by shared input, in execution order (GPTQ,
SparseGPT and Wanda solve one group, then re-run the block so the next group sees the already
compressed ones). ``scale_groups`` are AWQ's: the module ``prev`` whose output feeds
``linears`` (a norm, or a linear whose output rows can absorb ``1/s``), and the module
``inspect`` whose output measures the search loss; ``inspect``'s first positional input is the
linears' input. A group whose ``prev`` output width differs from the linears' input width
(Llama's ``wv -> wo`` under grouped-query attention) is skipped, as in llm-awq.

Example:
    >>> spec = ARCHITECTURES["llama"]
    >>> spec.scale_groups[0].linears
    ('attention.wq', 'attention.wk', 'attention.wv')
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from slimtorch.errors import ModelError


@dataclass(frozen=True)
class ScaleGroup:
    """AWQ scaling group: ``prev`` feeds ``linears``; the loss is read at ``inspect``'s output."""

    prev: str
    linears: tuple[str, ...]
    inspect: str


@dataclass(frozen=True)
class ArchSpec:
    """Compression-relevant structure of one architecture (names relative to a block)."""

    name: str
    blocks: str
    input_groups: tuple[tuple[str, ...], ...]
    scale_groups: tuple[ScaleGroup, ...]
    no_clip: tuple[str, ...]

    @property
    def linears(self) -> tuple[str, ...]:
        """Every compressed linear of a block, in execution order."""
        return tuple(name for group in self.input_groups for name in group)


LLAMA = ArchSpec(
    name="llama",
    blocks="layers",
    input_groups=(
        ("attention.wq", "attention.wk", "attention.wv"),
        ("attention.wo",),
        ("feed_forward.w1", "feed_forward.w3"),
        ("feed_forward.w2",),
    ),
    scale_groups=(
        ScaleGroup("attention_norm", ("attention.wq", "attention.wk", "attention.wv"), "attention"),
        ScaleGroup("attention.wv", ("attention.wo",), "attention.wo"),
        ScaleGroup("ffn_norm", ("feed_forward.w1", "feed_forward.w3"), "feed_forward"),
        ScaleGroup("feed_forward.w3", ("feed_forward.w2",), "feed_forward.w2"),
    ),
    # llm-awq skips the clipping search for q/k: their errors are absorbed by the softmax
    # and the search is expensive there.
    no_clip=("attention.wq", "attention.wk"),
)

ARCHITECTURES: dict[str, ArchSpec] = {"llama": LLAMA}


def arch_of(model: nn.Module) -> ArchSpec:
    """The table for a model (from ``model.config.arch``, default ``"llama"``).

    Example:
        >>> arch_of(nn.Linear(1, 1)).name
        'llama'
    """
    name = getattr(getattr(model, "config", None), "arch", "llama")
    if name not in ARCHITECTURES:
        raise ModelError(
            f"architecture {name!r}: no compression table; known: {list(ARCHITECTURES)}"
        )
    return ARCHITECTURES[name]


def blocks_of(model: nn.Module, spec: ArchSpec) -> nn.ModuleList:
    """The model's list of transformer blocks."""
    blocks = model.get_submodule(spec.blocks)
    if not isinstance(blocks, nn.ModuleList):
        raise ModelError(f"{spec.name}: {spec.blocks!r} is not a ModuleList of blocks")
    return blocks


def linear(block: nn.Module, name: str) -> nn.Linear:
    """The named linear of a block (an error naming it otherwise)."""
    mod = block.get_submodule(name)
    if not isinstance(mod, nn.Linear):
        raise ModelError(f"{name}: expected an nn.Linear, found {type(mod).__name__}")
    return mod
