"""fit/evaluate: real learning on digits, bit-exact repeatability, hooks, config validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slimtorch.errors import ConfigError, DataError
from slimtorch.models import create_model
from slimtorch.train import EpochStats, FitConfig, evaluate, fit

N_VAL = 360  # 20% of the 1,797 digits


def digits_datasets() -> tuple[TensorDataset, TensorDataset]:
    """sklearn digits as [N, 1, 8, 8] float32 in [0, 1]; a fixed 80/20 split."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [1797, 1, 8, 8]
    y = torch.tensor(digits.target, dtype=torch.int64)  # [1797]
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    val, train = order[:N_VAL], order[N_VAL:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


def loaders(batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """Fresh loaders; the training loader shuffles with torch's global RNG (seeded by fit)."""
    train, val = digits_datasets()
    return DataLoader(train, batch_size, shuffle=True), DataLoader(val, batch_size=256)


def lenet5(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("lenet5")


def test_lenet5_learns_digits():
    train, val = loaders(batch_size=32)
    config = FitConfig(epochs=10, lr=1e-2, scheduler="cosine")
    model = lenet5()
    report = fit(model, train, val, config, progress=False)
    assert len(report.history) == 10
    assert report.best_val_accuracy is not None and report.best_val_accuracy > 0.9
    final = evaluate(model, val)
    assert final.n == N_VAL and final.accuracy > 0.9
    assert final.accuracy == report.history[-1].val_accuracy
    assert report.history[-1].train_loss < report.history[0].train_loss
    assert report.history[-1].lr < config.lr  # the cosine schedule decayed it


def test_two_runs_from_one_seed_are_bit_identical_and_leave_global_rng_alone():
    states = []
    for _ in range(2):
        model = lenet5()
        rng_before = torch.get_rng_state()
        train, _ = loaders()
        fit(model, train, config=FitConfig(epochs=2, optimizer="sgd", lr=0.05), progress=False)
        assert torch.equal(torch.get_rng_state(), rng_before)
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_another_seed_gives_other_weights():
    weights = []
    for seed in (0, 1):
        model = lenet5()
        fit(model, loaders()[0], config=FitConfig(epochs=1, seed=seed), progress=False)
        weights.append(model.classifier.weight.detach().clone())
    assert not torch.equal(weights[0], weights[1])


def test_evaluate_matches_manual_computation_and_restores_mode():
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    x, y = torch.randn(10, 3), torch.randint(0, 4, (10,))
    batches = [(x[:6], y[:6]), (x[6:], y[6:])]
    result = evaluate(model.train(), batches)
    with torch.no_grad():
        logits = model(x)
    assert model.training
    assert result.n == 10
    assert result.loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    assert result.accuracy == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    with pytest.raises(DataError):
        evaluate(model, [])


def test_hooks_see_every_step_and_masks_hold():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    calls = {"loss": 0, "backward": 0}

    def loss_fn(m, outputs, targets):
        calls["loss"] += 1
        assert outputs.shape == (8, 2) and m is model
        return F.cross_entropy(outputs, targets) + 1e-3 * m.weight.abs().sum()

    def after_backward(m):
        calls["backward"] += 1
        m.weight.grad.mul_(mask)

    def after_step(m):
        with torch.no_grad():
            m.weight.mul_(mask)

    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
    hooks = {"loss_fn": loss_fn, "after_backward": after_backward, "after_step": after_step}
    fit(model, data, config=FitConfig(epochs=2, lr=0.1), progress=False, **hooks)
    assert calls == {"loss": 6, "backward": 6}
    assert torch.all(model.weight[mask == 0] == 0)


def test_callback_returning_true_stops_training():
    seen: list[EpochStats] = []

    def stop_after_first(model, stats):
        seen.append(stats)
        return True

    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    report = fit(nn.Linear(4, 2), data, data, FitConfig(epochs=5), False, [stop_after_first])
    assert len(report.history) == 1 and seen == list(report.history)
    assert report.best_epoch == 0 and report.best_val_accuracy == seen[0].val_accuracy


def test_progress_bar_runs():
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    report = fit(nn.Linear(4, 2), data, data, FitConfig(epochs=1), progress=True)
    assert len(report.history) == 1


BAR_REMNANTS = ("\r", "\x1b", "\u2501", "\u2578", "\u257a")  # CR, ANSI escape, rich bar glyphs


def test_piped_progress_is_one_labelled_line_per_epoch(capsys, monkeypatch):
    """stdout is not a terminal (captured): no bar, one plain line per epoch, led by label."""
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # rich would treat stdout as a terminal
        monkeypatch.delenv(var, raising=False)
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))] * 3
    report = fit(nn.Linear(4, 2), data, data[:1], FitConfig(epochs=3), label="prune 2/3 finetune")
    out = capsys.readouterr().out
    assert not any(r in out for r in BAR_REMNANTS), repr(out)
    lines = out.splitlines()
    assert len(lines) == 3, lines
    for i, (line, stats) in enumerate(zip(lines, report.history, strict=True)):
        assert line == (
            f"prune 2/3 finetune epoch {i + 1}/3: loss {stats.train_loss:.4f} "
            f"acc {stats.train_accuracy:.4f}, val loss {stats.val_loss:.4f} "
            f"acc {stats.val_accuracy:.4f} ({stats.seconds:.1f} s)"
        )


def test_piped_progress_without_label_or_validation(capsys, monkeypatch):
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(var, raising=False)
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    fit(nn.Linear(4, 2), data, None, FitConfig(epochs=2))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("val" not in line for line in lines)


def test_no_output_without_progress(capsys):
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    fit(nn.Linear(4, 2), data, data, FitConfig(epochs=2), progress=False, label="x")
    assert capsys.readouterr().out == ""


def test_terminal_progress_draws_a_bar_and_the_labelled_line(capsys, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: stdout counts as a terminal
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    fit(nn.Linear(4, 2), data, data, FitConfig(epochs=1), label="finetune")
    out = capsys.readouterr().out
    assert "finetune epoch 1/1: loss " in out
    assert "\x1b" in out  # the live bar's cursor control


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"epochs": 1.5},
        {"lr": 0},
        {"lr": float("nan")},
        {"optimizer": "lion"},
        {"momentum": 1.0},
        {"weight_decay": -1},
        {"scheduler": "step"},
        {"seed": -1},
        {"label_smoothing": 1.0},
    ],
)
def test_fit_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        FitConfig(**bad)


def test_fit_config_round_trips_and_refuses_newer_versions():
    config = FitConfig(epochs=3, optimizer="sgd", scheduler="cosine", label_smoothing=0.1)
    assert FitConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="newer"):
        FitConfig.from_dict({**config.to_dict(), "version": 99})
    with pytest.raises(ConfigError, match="unknown"):
        FitConfig.from_dict({"batch_size": 32})
