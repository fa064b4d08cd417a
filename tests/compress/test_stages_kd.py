"""Distillation inside the pipeline: the teacher is the model before compression, and a
distilled centroid fine-tune treats BatchNorm exactly as the plain one does."""

from __future__ import annotations

import pytest
import torch

from slimtorch.compress import state as compress_state
from slimtorch.compress.job import run_pipeline
from slimtorch.compress.recipe import parse_recipe
from slimtorch.compress.stages import finetune_centroids
from slimtorch.models import build_model, make_spec

RECIPE = """
[distill]
temperature = 2.0
alpha = 0.5
[[stage]]
kind = "prune"
sparsity = 0.8
[[stage]]
kind = "finetune"
epochs = 1
distill = true
[[stage]]
kind = "kmeans"
bits = 3
[[stage]]
kind = "finetune_centroids"
epochs = 2
distill = {kd}
"""


def _data(n: int = 64, size: int = 4) -> list:
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(n, 1, size, size, generator=g) + 1  # BN statistics far from 0 / 1
    y = (x.flatten(1).sum(1) > 16).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def _bn_model() -> tuple[torch.nn.Module, object]:
    spec = make_spec("lenet300", image_size=4, norm="batch")
    torch.manual_seed(0)
    return build_model(spec), spec


def _running_stats(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def test_teacher_is_the_uncompressed_model_in_eval_mode(monkeypatch) -> None:
    model, spec = _bn_model()
    model.train()  # the teacher must still run with running statistics
    original = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    real = compress_state.Distiller

    def spy(student, teacher, config):
        kd = real(student, teacher, config)
        seen.append(kd.teacher)
        return kd

    monkeypatch.setattr(compress_state, "Distiller", spy)
    data = _data()
    run_pipeline(model, spec, parse_recipe(RECIPE.format(kd="true"), "t.toml"),
                 (data, data, data), progress=False)  # fmt: skip
    assert len(seen) == 2  # the finetune and the centroid stage
    for teacher in seen:
        assert not teacher.training and not any(m.training for m in teacher.modules())
        state = teacher.state_dict()
        assert all(torch.equal(state[k], v) for k, v in original.items())  # dense, unpruned


@pytest.mark.parametrize("freeze", [True, False])
def test_distilled_centroid_finetune_treats_batchnorm_like_the_plain_one(monkeypatch, freeze):
    """Oracle: ``finetune_centroids(freeze_bn=...)`` (frozen: running statistics untouched;
    not frozen: updated). The KD path of the centroid stage must do the same as the plain
    path under the pipeline's one switch."""
    monkeypatch.setattr(finetune_centroids, "CENTROID_FREEZE_BN", freeze)
    data = _data()
    for kd in ("false", "true"):
        model, spec = _bn_model()
        before = {}

        def grab(record, model=model, before=before):
            if record.stage == "kmeans":
                before.update(_running_stats(model))

        result = run_pipeline(model, spec, parse_recipe(RECIPE.format(kd=kd), "t.toml"),
                              (data, data, data), progress=False, on_stage=grab)  # fmt: skip
        after = _running_stats(result.model)
        unchanged = all(torch.equal(after[k], v) for k, v in before.items())
        assert before and unchanged == freeze, (kd, freeze)
