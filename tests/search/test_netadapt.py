"""NetAdapt (Algorithm 1 of Yang et al. 2018) on VGG over 8x8 digits.

Oracles: the latency is the model's exact conv/linear MACs (counted from the modules' shapes
by forward hooks), and the test recomputes it independently in closed form from the
trajectory's channel counts (``_vgg_macs``). With it the test checks the schedule's target
formula, that every iteration meets its target and the latency falls, that every proposal's
count is the largest meeting the target (brute force over all counts), that the chosen
proposal is the most accurate one, and that the returned model's real sizes are the
trajectory's. Repeatability and resumption are checked as bit-identical weights.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import pickle
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtorch.checkpoint import load_checkpoint, save_checkpoint
from slimtorch.data import load_data, make_loaders
from slimtorch.errors import ConfigError, ModelError
from slimtorch.models import build_model, make_spec
from slimtorch.profile.noise import torch_threads
from slimtorch.prune.surgery import channel_sizes, prune_channels
from slimtorch.search.netadapt import (
    NetAdaptConfig,
    NetAdaptResult,
    macs_cost,
    netadapt,
    write_trajectory,
)
from slimtorch.search.netadapt_config import STOPPED
from slimtorch.search.netadapt_state import rebuild
from slimtorch.search.netadapt_steps import candidate_counts, largest_count

X = torch.zeros(1, 1, 8, 8)
GROUPS = ("features.0.0", "features.1.0", "features.3.0", "features.4.0")  # VGG's conv outputs
CONFIG = NetAdaptConfig(
    budget_ratio=0.7,
    init_reduction=0.2,
    reduction_decay=0.9,
    short_term_batches=2,
    long_term_epochs=1,
    batch_size=32,
    val_samples=64,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with torch_threads(1):  # fast small convs on a shared machine; results do not depend on it
        yield


def _vgg_macs(channels: dict[str, int]) -> float:
    """Closed-form MACs of the 8x8 VGG: two 3x3 convs at 8x8, pool, two at 4x4, a linear."""
    c0, c1, c2, c3 = (channels[g] for g in GROUPS)
    return float(9 * 64 * (1 * c0 + c0 * c1) + 9 * 16 * (c1 * c2 + c2 * c3) + c3 * 10)


def _hook_macs(model: nn.Module) -> float:
    """MACs of every conv and linear, from the weight shapes and the output sizes."""
    total = [0]

    def hook(module: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        spatial = math.prod(out.shape[2:]) if isinstance(module, nn.Conv2d) else 1
        total[0] += module.weight.numel() * spatial

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]  # fmt: skip
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(X)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return float(total[0])


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", seed=0)


def _vgg() -> nn.Module:
    torch.manual_seed(0)
    return build_model(make_spec("vgg"))


def _run(digits, config: NetAdaptConfig = CONFIG, **kwargs) -> NetAdaptResult:
    with torch_threads(1):
        return netadapt(_vgg(), digits, X, config, latency=_hook_macs, progress=False, **kwargs)


@pytest.fixture(scope="module")
def result(digits) -> NetAdaptResult:
    return _run(digits, spec=make_spec("vgg"))


def _with(**changes: object) -> NetAdaptConfig:
    return dataclasses.replace(CONFIG, **changes)


def _same(a: NetAdaptResult, b: NetAdaptResult) -> None:
    assert a.trajectory == b.trajectory
    assert (a.stop_reason, a.val_accuracy, a.test_accuracy) == (
        b.stop_reason,
        b.val_accuracy,
        b.test_accuracy,
    )
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_hook_macs_is_the_closed_form() -> None:
    full = dict.fromkeys(GROUPS[:2], 16) | dict.fromkeys(GROUPS[2:], 32)
    assert _hook_macs(_vgg()) == _vgg_macs(full) == macs_cost(X)(_vgg())


def test_every_iteration_meets_the_schedule_and_latency_falls(result: NetAdaptResult) -> None:
    steps = result.trajectory
    l0, c = result.original_latency, CONFIG
    assert l0 == _vgg_macs(steps[0].channels) and result.budget == pytest.approx(0.7 * l0)
    assert len(steps) >= 3  # at least two iterations before the budget
    for i, (prev, now) in enumerate(itertools.pairwise(steps), start=1):
        assert now.iteration == i
        expected = prev.latency - c.init_reduction * l0 * c.reduction_decay ** (i - 1)
        assert now.target == pytest.approx(expected)
        assert now.latency <= now.target < prev.latency
        assert now.latency == _vgg_macs(now.channels)
    assert steps[-2].latency > result.budget >= result.latency  # stopped as soon as met
    assert result.stop_reason == "budget met"


def test_every_proposal_is_the_largest_count_meeting_the_target(result: NetAdaptResult) -> None:
    for prev, now in itertools.pairwise(result.trajectory):
        proposed = {p.group: p for p in now.proposals}
        for group in GROUPS:
            fits = [n for n in range(1, prev.channels[group])
                    if _vgg_macs({**prev.channels, group: n}) <= now.target]  # fmt: skip
            if not fits:
                assert group not in proposed
                continue
            p = proposed[group]
            assert p.channels == max(fits)
            assert p.latency == _vgg_macs({**prev.channels, group: p.channels})


def test_the_most_accurate_proposal_is_kept(result: NetAdaptResult) -> None:
    for now in result.trajectory[1:]:
        best = max(p.accuracy for p in now.proposals)
        assert now.accuracy == best
        chosen = next(p for p in now.proposals if p.group == now.group)
        assert (chosen.accuracy, chosen.latency) == (now.accuracy, now.latency)
        assert chosen.latency == min(p.latency for p in now.proposals if p.accuracy == best)


def test_the_result_is_a_real_smaller_model_that_round_trips(result, tmp_path) -> None:
    sizes = channel_sizes(result.model)
    final = result.trajectory[-1].channels
    assert {g: sizes[g]["out"] for g in GROUPS} == final
    assert _hook_macs(result.model) == result.latency == _vgg_macs(final)
    params = sum(p.numel() for p in result.model.parameters())
    assert params < sum(p.numel() for p in _vgg().parameters())
    save_checkpoint(tmp_path / "ck", result.model, result.spec, {"acc": result.val_accuracy})
    loaded, spec, metrics = load_checkpoint(tmp_path / "ck")
    assert spec == result.spec and metrics == {"acc": result.val_accuracy}
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), result.model.eval()(x))


def test_the_same_seed_gives_the_same_result(digits, result: NetAdaptResult) -> None:
    _same(result, _run(digits, spec=make_spec("vgg")))


class _PicklingWorkers:
    """What a Ray worker sees: each task gets an unpickled copy of its item (the model is not
    the search's own object) and the search gets an unpickled copy of the result."""

    def map(self, fn, items, label: str = "") -> list:
        assert pickle.loads(pickle.dumps(fn)) is fn  # module-level: pickled by reference
        out = []
        for item in items:
            with torch_threads(1):
                out.append(pickle.loads(pickle.dumps(fn(pickle.loads(pickle.dumps(item))))))
        return out


def test_tasks_run_on_pickled_copies_give_the_same_result(digits, result) -> None:
    _same(result, _run(digits, workers=_PicklingWorkers()))


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet", "lenet5"])
def test_a_state_rebuilds_the_pruned_model(name: str) -> None:
    original = build_model(make_spec(name)).eval()
    small = prune_channels(original, X, ratio=0.4).eval()
    rebuilt = rebuild(original, channel_sizes(small), small.state_dict()).eval()
    assert channel_sizes(rebuilt) == channel_sizes(small)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), small(x))


def test_data_loaders_give_what_the_splits_give(digits, result: NetAdaptResult) -> None:
    loaders = make_loaders(digits, batch_size=7, seed=3)  # their batching is not used
    _same(result, _run(loaders))


def test_a_stopped_search_resumes_to_the_uninterrupted_result(digits, result, tmp_path) -> None:
    path = tmp_path / "state.safetensors"
    stopped = _run(digits, state_path=path, callbacks=[lambda record: record.iteration == 1])
    assert stopped.stop_reason == STOPPED and len(stopped.trajectory) == 2
    assert stopped.trajectory == result.trajectory[:2]
    _same(result, _run(digits, state_path=path))


@pytest.mark.parametrize("killed_after", [1, 2])  # 2: killed once the budget was met
def test_a_killed_search_resumes_to_the_uninterrupted_result(
    digits, result, tmp_path, killed_after: int
) -> None:
    path = tmp_path / "state.safetensors"

    def kill(record) -> None:
        if record.iteration == killed_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(digits, state_path=path, callbacks=[kill])
    _same(result, _run(digits, state_path=path))


def test_max_iterations_stops_and_a_higher_cap_continues(digits, result, tmp_path) -> None:
    path = tmp_path / "state.safetensors"
    capped = _with(max_iterations=1)
    first = _run(digits, capped, state_path=path)
    assert first.stop_reason == "max_iterations reached" and len(first.trajectory) == 2
    _same(result, _run(digits, state_path=path))


def test_a_state_of_another_config_or_model_is_refused(digits, tmp_path) -> None:
    path = tmp_path / "state.safetensors"
    _run(digits, state_path=path, callbacks=[lambda record: True])
    other = _with(init_reduction=0.25)
    with pytest.raises(ConfigError, match=r"init_reduction=0\.2, this run has 0\.25") as err:
        _run(digits, other, state_path=path)
    assert "\n" not in str(err.value)
    with torch_threads(1), pytest.raises(ConfigError, match="another model, data"):
        netadapt(build_model(make_spec("vgg")), digits, X, CONFIG, latency=_hook_macs,
                 state_path=path, progress=False)  # fmt: skip


def test_a_corrupt_state_file_is_a_clear_error(digits, tmp_path) -> None:
    path = tmp_path / "state.safetensors"
    _run(digits, state_path=path, callbacks=[lambda record: True])
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelError, match="not a readable NetAdapt state file"):
        _run(digits, state_path=path)


def test_no_group_meeting_the_target_stops_the_search(digits) -> None:
    steep = _with(init_reduction=0.95, long_term_epochs=0)
    out = _run(digits, steep)  # no single group cut to 1 channel removes 95% of the MACs
    assert out.stop_reason == "no group meets the target" and len(out.trajectory) == 1
    assert channel_sizes(out.model) == channel_sizes(_vgg())


def test_round_to_keeps_multiples(digits) -> None:
    out = _run(digits, _with(round_to=4))
    for record in out.trajectory[1:]:
        assert all(p.channels % 4 == 0 for p in record.proposals)


def test_write_trajectory(result: NetAdaptResult, tmp_path) -> None:
    json_path, png_path = write_trajectory(result, tmp_path)
    summary = json.loads(json_path.read_text())
    assert summary == json.loads(json.dumps(result.to_dict()))
    assert [r["latency"] for r in summary["trajectory"]] == [r.latency for r in result.trajectory]
    assert summary["met_budget"] is True and summary["config"]["version"] == 1
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=40),
    target=st.floats(-1, 200, allow_nan=False),
)
def test_largest_count_is_the_brute_force_answer(steps: list[float], target: float) -> None:
    costs = [sum(steps[: i + 1]) for i in range(len(steps))]  # non-decreasing in the count
    counts = list(range(1, len(costs) + 1))
    fits = [c for c in counts if costs[c - 1] <= target]
    found = largest_count(counts, lambda c: costs[c - 1], target)
    assert found == (None if not fits else (max(fits), costs[max(fits) - 1]))


@settings(max_examples=200, deadline=None)
@given(costs=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=40),
       target=st.floats(0, 10, allow_nan=False))  # fmt: skip
def test_largest_count_only_returns_measured_fits(costs: list[float], target: float) -> None:
    found = largest_count(list(range(len(costs))), lambda c: costs[c], target)  # not monotone
    assert found is None or (found[1] == costs[found[0]] <= target)
    assert (found is None) == (costs[0] > target)


def test_candidate_counts() -> None:
    assert candidate_counts(6, 1, 1) == [1, 2, 3, 4, 5]
    assert candidate_counts(16, 3, 4) == [4, 8, 12]
    assert candidate_counts(4, 4, 1) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("budget_ratio", 1.0), ("budget_seconds", 0.0), ("init_reduction", 0),
     ("reduction_decay", 1.5), ("short_term_batches", -1), ("optimizer", "lbfgs"),
     ("importance", "taylor"),
     ("min_channels", 0), ("round_to", 0), ("max_iterations", 0), ("seed", True)],
)  # fmt: skip
def test_config_rejects_bad_fields(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"NetAdaptConfig.{field}"):
        NetAdaptConfig(**{field: value})


def test_config_round_trips_and_refuses_unknown_fields() -> None:
    config = NetAdaptConfig(budget_seconds=0.002, importance="bn", round_to=8)
    assert NetAdaptConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="unknown field"):
        NetAdaptConfig.from_dict({"budget": 0.5})
    with pytest.raises(ConfigError, match="newer"):
        NetAdaptConfig.from_dict({"version": 99})


def test_loaders_must_be_data_loaders(digits) -> None:
    with pytest.raises(ConfigError, match="Splits"):
        netadapt(_vgg(), [digits.train], X, CONFIG, latency=_hook_macs, progress=False)
