"""The Distiller through fit's hooks: teacher use, hooks removed, adapters trained."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimtorch.distill.distill import DistillConfig, Distiller, distill, snapshot_teacher
from slimtorch.distill.losses import kd_loss
from slimtorch.errors import ConfigError
from slimtorch.train import FitConfig, fit


def _data(n: int = 64, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def _net(width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 36, 2)
    )


def test_loss_fn_equals_kd_loss_on_the_teachers_logits() -> None:
    torch.manual_seed(0)
    student, teacher = _net(2), _net(4)
    x, y = _data()[0]
    with Distiller(student, teacher, DistillConfig(temperature=3.0, alpha=0.6)) as kd:
        out = student(x)
        got = kd.loss_fn(student, out, y)
        expected = kd_loss(out, teacher(x).detach(), y, 3.0, 0.6)
    assert torch.allclose(got, expected)
    assert not student._forward_pre_hooks  # hooks removed on exit


def test_default_teacher_is_a_frozen_snapshot() -> None:
    student = _net(2)
    before = [p.detach().clone() for p in student.parameters()]
    kd = Distiller(student)
    with torch.no_grad():
        for p in student.parameters():
            p.zero_()  # "compress" the student after the snapshot
    assert all(torch.equal(a, b) for a, b in zip(before, kd.teacher.parameters(), strict=True))
    assert not any(p.requires_grad for p in kd.teacher.parameters())
    kd.close()


def test_hints_and_attention_train_adapters_and_student() -> None:
    torch.manual_seed(0)
    teacher = _net(4)
    fit(teacher, _data(), None, FitConfig(epochs=2), progress=False)
    student = _net(2)
    cfg = DistillConfig(hints=(("0", "0"),), attention=(("1", "1"),), hint_weight=1.0)
    kd = Distiller(student, teacher, cfg)
    with kd:
        fit(student, _data(), None, FitConfig(epochs=1), progress=False,
            loss_fn=kd.loss_fn, after_backward=kd.after_backward)  # fmt: skip
    assert len(kd.adapters) == 1
    assert kd.adapters[0].proj.weight.shape == (4, 2, 1, 1)
    assert kd._adapter_opt is not None and kd._adapter_opt.state  # the adapter was stepped


def test_distill_improves_over_untrained_and_leaves_teacher_untouched() -> None:
    torch.manual_seed(0)
    teacher = _net(4)
    fit(teacher, _data(), None, FitConfig(epochs=5, lr=3e-3), progress=False)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = _net(2)
    report = distill(student, teacher, _data(), _data(seed=1), FitConfig(epochs=5, lr=3e-3),
                     DistillConfig(), progress=False)  # fmt: skip
    assert report.history[-1].train_loss < report.history[0].train_loss
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_state.items())


def test_bad_config_and_layer_names() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        DistillConfig(alpha=1.5)
    with pytest.raises(ConfigError, match="temperature"):
        DistillConfig(temperature=0)
    with pytest.raises(ConfigError, match="no module 'nope'"):
        Distiller(_net(2), _net(2), DistillConfig(hints=(("nope", "0"),)))
    assert snapshot_teacher(_net(2)).training is False
