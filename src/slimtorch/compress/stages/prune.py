"""The ``prune`` stage: :func:`slimtorch.prune.prune_model` with the recipe's
:class:`~slimtorch.prune.PruneConfig`; its masks join those of earlier prune stages (a weight
pruned once stays pruned) and are kept through every later fine-tuning."""

from __future__ import annotations

from slimtorch.compress.state import StageContext
from slimtorch.prune import prune_model


def run(ctx: StageContext) -> None:
    """Prune ``ctx.state.model`` in place and merge the new masks into ``ctx.state.masks``."""
    state, (train, val, _) = ctx.state, ctx.loaders
    result = prune_model(state.model, ctx.config, train, val, None, progress=ctx.progress)
    for key, mask in result.masks.items():
        old = state.masks.get(key)
        state.masks[key] = mask if old is None else (mask & old)
