"""Config validation, allocation, schedules, mask keeping, sensitivity allocation, the verb."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from slimtorch.checkpoint import load_checkpoint, save_checkpoint
from slimtorch.errors import ConfigError
from slimtorch.models import ModelSpec, build_model
from slimtorch.prune.allocate import layer_sparsities, prunable_layers
from slimtorch.prune.apply import MaskKeeper
from slimtorch.prune.config import PruneConfig
from slimtorch.prune.engine import prune_model
from slimtorch.prune.schedule import iterative_sparsities, zhu_gupta_sparsity
from slimtorch.prune.sensitivity import propose_ratios
from slimtorch.train import FitConfig, fit


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sparsity": 1.0}, r"\[0, 1\)"),
        ({"sparsity": -0.2}, r"\[0, 1\)"),
        ({"granularity": "4:4"}, "0 < N < M"),
        ({"criterion": "nope"}, "criterion"),
        ({"criterion": "bn_gamma"}, "granularity channel"),
        ({"criterion": "obs", "granularity": "channel"}, "granularity element"),
        ({"schedule": "gradual"}, "finetune_epochs"),
        ({"layers": {"fc1": 1.5}}, r"\[0, 1\)"),
    ],
)
def test_bad_config_is_a_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PruneConfig(**kwargs)


def test_config_round_trips_through_dict():
    cfg = PruneConfig(granularity="2:4", layers={"fc.*": 0.3}, exclude=("classifier",))
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg


def test_layer_patterns_that_match_nothing_are_errors():
    with pytest.raises(ConfigError, match="matches no prunable layer"):
        layer_sparsities(["fc1", "fc2"], 0.5, {"conv.*": 0.2})
    with pytest.raises(ConfigError, match="matches no layer"):
        prunable_layers(nn.Sequential(nn.Linear(2, 2)), exclude=["fc9"])


def test_iterative_schedule_removes_a_constant_fraction_of_what_is_left():
    s = iterative_sparsities(0.9, 4)
    left = [1 - x for x in [0.0, *s]]
    ratios = [b / a for a, b in itertools.pairwise(left)]
    assert ratios == pytest.approx([0.1 ** (1 / 4)] * 4)
    assert s[-1] == pytest.approx(0.9)


def test_zhu_gupta_matches_the_paper_formula():
    s_f, n, dt = 0.8, 10, 5
    for t in range(0, 60):
        k = min(n, t // dt)
        assert zhu_gupta_sparsity(t, s_f, 0, n, dt) == pytest.approx(s_f * (1 - (1 - k / n) ** 3))


def test_propose_ratios_is_optimal_against_brute_force():
    gen = torch.Generator().manual_seed(0)
    ratios = [0.2, 0.5, 0.8]
    sizes = {"a": 100, "b": 300, "c": 600}
    curves = {}
    for n in sizes:  # accuracy falls with ratio, at a random rate per layer
        drops = torch.rand(3, generator=gen).sort().values.tolist()
        curves[n] = [(r, 0.99 - d) for r, d in zip(ratios, drops, strict=True)]
    for target in (0.3, 0.5, 0.7):
        got = propose_ratios(curves, sizes, 1000, target)
        options = {n: [(0.0, 0.0)] + [(r, 0.99 - a) for r, a in curves[n]] for n in sizes}
        feasible = [
            c
            for c in itertools.product(*options.values())
            if sum(r * s for (r, _), s in zip(c, sizes.values(), strict=True)) >= target * 1000
        ]
        best = min(sum(d for _, d in c) for c in feasible)
        drop = sum(dict(options[n])[got[n]] for n in sizes)
        assert drop == pytest.approx(best)
        assert sum(got[n] * sizes[n] for n in sizes) >= target * 1000 - 1e-9


def test_mask_keeper_masks_weights_grads_and_adam_state_when_masks_change():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    data = [(torch.randn(16, 6), torch.randint(0, 3, (16,)))]
    first = {"weight": torch.rand(3, 6) > 0.3}
    second = {"weight": first["weight"] & (torch.rand(3, 6) > 0.5)}
    seen = {}

    def after_step(m):
        keeper.after_step(m)
        if "opt" not in seen:
            keeper.update(second)  # the mask shrinks mid-training
            seen["opt"] = True

    def grab(opt, *_):
        seen["state"] = opt.state[model.weight]
        seen["grad"] = model.weight.grad.clone()

    handle = register_optimizer_step_post_hook(grab)
    try:
        with MaskKeeper(model, first) as keeper:
            fit(model, data, config=FitConfig(epochs=3), progress=False,
                after_backward=keeper.after_backward, after_step=after_step)  # fmt: skip
    finally:
        handle.remove()
    off = ~second["weight"]
    assert torch.all(model.weight[off] == 0)
    assert torch.all(seen["grad"][off] == 0)
    assert torch.all(seen["state"]["exp_avg"][off] == 0)
    assert torch.all(seen["state"]["exp_avg_sq"][off] == 0)


def digits_batches(n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(32, 1, 8, 8, generator=gen), torch.randint(0, 10, (32,), generator=gen))
            for _ in range(n)]  # fmt: skip


@pytest.mark.parametrize("schedule", ["oneshot", "iterative", "gradual"])
def test_prune_model_reaches_exact_sparsity_and_reloads(tmp_path, schedule):
    spec = ModelSpec(name="lenet300", kwargs={})
    torch.manual_seed(0)
    model = build_model(spec)
    data = digits_batches()
    cfg = PruneConfig(sparsity=0.75, schedule=schedule, iterations=2, finetune_epochs=1,
                      layers={"classifier": 0.5})  # fmt: skip
    result = prune_model(model, cfg, data, data, data)
    rows = {r.name: r for r in result.report.layers}
    assert rows["fc1.0"].sparsity == pytest.approx(0.75, abs=1 / 19200)
    assert rows["classifier"].sparsity == pytest.approx(0.5)
    assert rows["fc2.0"].macs_after == rows["fc2.0"].params_after - 100  # bias adds no MACs
    save_checkpoint(tmp_path / "ck", model, spec)
    loaded, _, _ = load_checkpoint(tmp_path / "ck")
    assert float((loaded.fc1[0].weight == 0).float().mean()) == pytest.approx(0.75, abs=1e-3)


def test_channel_pruning_masks_filters_and_biases_and_spares_the_output_layer():
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="lenet300", kwargs={}))
    result = prune_model(model, PruneConfig(granularity="channel", sparsity=0.5), digits_batches())
    w, b = model.fc1[0].weight, model.fc1[0].bias
    dead = (w == 0).all(dim=1)
    assert int(dead.sum()) == 150 and torch.all(b[dead] == 0)
    assert "classifier" not in {r.name for r in result.report.layers}


def _reference_iterative_global(model, data, sparsity, rounds, epochs, lr):
    """A hand-written Han-style loop: global |w| threshold over all weights, then Adam with a
    cosine lr restarted every round, gradients and weights masked (the engine's oracle)."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    masks = [torch.ones_like(w, dtype=torch.bool) for w in weights]
    total = sum(w.numel() for w in weights)
    for k in range(rounds):
        s = 1 - (1 - sparsity) ** ((k + 1) / rounds)
        flat = torch.cat([w.detach().abs().masked_fill(~m, -1).reshape(-1)
                          for w, m in zip(weights, masks, strict=True)])  # fmt: skip
        n_keep = total - int(s * total + 0.5)
        threshold = torch.topk(flat, n_keep).values[-1]
        masks = [(w.detach().abs() >= threshold) & m for w, m in zip(weights, masks, strict=True)]
        with torch.no_grad():
            for w, m in zip(weights, masks, strict=True):
                w.mul_(m)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        for _ in range(epochs):
            for x, y in data:
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                for w, m in zip(weights, masks, strict=True):
                    w.grad.mul_(m)
                opt.step()
                with torch.no_grad():
                    for w, m in zip(weights, masks, strict=True):
                        w.mul_(m)
            sched.step()
    return masks


def test_iterative_global_cosine_matches_a_hand_written_loop():
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="lenet300", kwargs={}))
    reference = build_model(ModelSpec(name="lenet300", kwargs={}))
    reference.load_state_dict(model.state_dict())
    data = digits_batches()
    cfg = PruneConfig(sparsity=0.9, allocation="global", schedule="iterative", iterations=3,
                      finetune_epochs=2, lr=1e-3, scheduler="cosine")  # fmt: skip
    result = prune_model(model, cfg, data)
    masks = _reference_iterative_global(reference, data, 0.9, 3, 2, 1e-3)
    names = ["fc1.0.weight", "fc2.0.weight", "classifier.weight"]
    for name, mask in zip(names, masks, strict=True):
        assert torch.equal(result.masks[name], mask), name
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    kept = sum(int(m.sum()) for m in masks)
    assert kept == 50200 - int(0.9 * 50200 + 0.5)


def test_unknown_lr_scheduler_is_a_config_error():
    with pytest.raises(ConfigError, match="scheduler"):
        PruneConfig(scheduler="step")
