"""The ``finetune`` stage: train every weight with the pruning masks held
(:class:`~slimtorch.prune.MaskKeeper`), optionally distilled from the uncompressed model."""

from __future__ import annotations

from slimtorch.compress.state import StageContext
from slimtorch.distill.distill import compose_hooks
from slimtorch.prune import MaskKeeper
from slimtorch.train import FitConfig, fit


def run(ctx: StageContext) -> None:
    """Fine-tune ``ctx.state.model`` in place (a :class:`~slimtorch.compress.configs.
    FinetuneConfig` in ``ctx.config``)."""
    cfg, model = ctx.config, ctx.state.model
    fit_cfg = FitConfig(epochs=cfg.epochs, lr=cfg.lr, optimizer=cfg.optimizer, seed=ctx.seed)
    kd = ctx.distiller()
    with MaskKeeper(model, ctx.state.masks) as keeper:
        try:
            fit(
                model,
                ctx.loaders[0],
                ctx.loaders[1],
                fit_cfg,
                ctx.progress,
                label="finetune",
                loss_fn=kd.loss_fn if kd else None,
                after_backward=compose_hooks(keeper.after_backward, kd and kd.after_backward),
                after_step=keeper.after_step,
            )
        finally:
            if kd is not None:
                kd.close()
