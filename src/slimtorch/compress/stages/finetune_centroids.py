"""The ``finetune_centroids`` stage: train the shared values of the k-means layers, their
assignments fixed (:func:`slimtorch.quantize.finetune_centroids`), optionally distilled from
the uncompressed model through its loss hook."""

from __future__ import annotations

from slimtorch.compress.state import StageContext
from slimtorch.quantize.trained import finetune_centroids

# Centroid fine-tuning updates BatchNorm running statistics (finetune_centroids' default,
# measured better than frozen statistics at low bit widths); both the plain and the
# distilled run follow this one switch.
CENTROID_FREEZE_BN = False


def run(ctx: StageContext) -> None:
    """Fine-tune the codebooks of ``ctx.state.model`` in place (a :class:`~slimtorch.compress.
    configs.CentroidConfig` in ``ctx.config``)."""
    cfg = ctx.config
    kd = ctx.distiller()
    try:
        finetune_centroids(
            ctx.state.model,
            ctx.loaders[0],
            ctx.loaders[1],
            cfg.epochs,
            cfg.lr,
            freeze_bn=CENTROID_FREEZE_BN,
            seed=ctx.seed,
            progress=ctx.progress,
            loss_fn=kd.loss_fn if kd else None,
            after_backward=kd.after_backward if kd else None,
        )
    finally:
        if kd is not None:
            kd.close()
