"""AMC: the environment's budget clipping, state embedding and MAC model against closed forms
and slimtorch's tracer; the search end to end (budget met, checkpoint round trip,
determinism across seeds, worker counts and a resumed state file).
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import math
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtorch.checkpoint import load_checkpoint, save_checkpoint
from slimtorch.core.trace import trace_model
from slimtorch.data import load_data, make_loaders
from slimtorch.errors import ConfigError
from slimtorch.models import build_model, make_spec
from slimtorch.prune.channel_importance import l1_importance
from slimtorch.prune.graph import trace_channels
from slimtorch.search.amc import AMCConfig, amc_search, write_amc
from slimtorch.search.amc_env import AMCEnv, AMCLayer, MacModel, MacTerm
from slimtorch.search.amc_policy import apply_policy, input_grams, reconstruct, top_channels
from slimtorch.train import evaluate

X8 = torch.zeros(1, 1, 8, 8)


def _chain_env(
    sizes: list[int], units: list[int], repeats: list[int], extras: list[bool],
    lbound: float, round_to: int,
) -> AMCEnv:  # fmt: skip
    """A synthetic chain: group t is produced from group t-1 (``repeat`` features per channel,
    as after a flatten), optionally with a depthwise layer and a skip read of group t-2."""
    terms = []
    for t, size in enumerate(sizes):
        ins = ((t - 1, repeats[t]),) if t else ()
        c_in = sizes[t - 1] * repeats[t] if t else 3
        if extras[t] and t >= 2:  # a second input: a concatenated skip from group t-2
            ins, c_in = (*ins, (t - 2, 1)), c_in + sizes[t - 2]
        terms.append(MacTerm(units[t], c_in, size, ins, ((t, 1),)))
        if extras[t]:
            terms.append(MacTerm(units[t], 1, size, (), ((t, 1),)))  # depthwise
    terms.append(MacTerm(1, sizes[-1], 10, ((len(sizes) - 1, 1),), ()))  # classifier
    layers = tuple(AMCLayer(f"g{t}", "conv", 1, s, 1, 3, 0, 0) for t, s in enumerate(sizes))
    mac = MacModel(tuple(sizes), tuple(terms), fixed=7)
    return AMCEnv(layers, torch.zeros(len(sizes), 8), mac, lbound, 1.0, round_to)


def _allowed(size: int, round_to: int) -> list[int]:
    return sorted({min(size, math.ceil(j / round_to) * round_to) for j in range(1, size + 1)})


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_resource_clipping_always_meets_the_budget_and_prunes_no_more_than_needed(
    data: st.DataObject,
) -> None:
    n = data.draw(st.integers(1, 6))
    ints = functools.partial(st.lists, min_size=n, max_size=n)
    env = _chain_env(
        data.draw(ints(st.integers(1, 40))), data.draw(ints(st.integers(1, 50))),
        data.draw(ints(st.integers(1, 4))), data.draw(ints(st.booleans())),
        data.draw(st.floats(0.01, 1.0)), data.draw(st.sampled_from([1, 2, 4, 8])),
    )  # fmt: skip
    low = env.mac.macs(env.lower_counts)
    budget = low + data.draw(st.floats(0, 1)) * (env.mac.total - low)
    actions = [torch.tensor([a]) for a in data.draw(ints(st.floats(0, 1)))]
    it = iter(actions)
    counts = env.run_episode(lambda s: next(it), env.mac.macs, budget).counts
    assert env.mac.macs(counts) <= budget
    for t, size in enumerate(env.sizes):
        desired = env.count_for(t, float(actions[t]))
        assert env.lower_counts[t] <= counts[t] <= desired
        above = [k for k in _allowed(size, env.round_to) if counts[t] < k <= desired]
        if above:  # the next larger count would make the budget unreachable
            assert env.mac.macs([*counts[:t], above[0], *env.lower_counts[t + 1 :]]) > budget


def _small() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 6), nn.ReLU(), nn.Linear(6, 3),
    )  # fmt: skip


def test_state_embedding_matches_hand_computed_values() -> None:
    env = AMCEnv.build(_small(), X8, lbound=0.25)
    # MACs: conv0 64*4*9 = 2304, conv3 16*8*4*9 = 4608, fc6 128*6 = 768, fc8 18 -> 7698
    # raw static (index, kind, c_in, c_out, stride, kernel, params, flops):
    # (0, conv, 1, 4, 1, 3, 48, 2304), (1, conv, 4, 8, 2, 3, 296, 4608),
    # (2, linear, 128, 6, 0, 1, 774, 768); min-max scaled per column:
    static = [[0, 0, 0, 0, 0.5, 1, 0, 0.4], [0.5, 0, 3 / 127, 1, 1, 1, 248 / 726, 1],
              [1, 1, 1, 0.5, 0, 0, 1, 0]]  # fmt: skip
    assert env.mac.total == 7698 == trace_model(_small(), X8).total_macs
    assert torch.allclose(env.static, torch.tensor(static))
    expected = [
        (env.state(0, [], 1.0), [0, 5376 / 7698, 1.0]),
        # conv0 at 2 channels: 1152 + 2304 (conv3 inputs halved) + 768 + 18 = 4242
        (env.state(1, [2], 0.5), [3456 / 7698, 768 / 7698, 0.5]),
        # conv3 at 4: 1152 + 144*2*4 + fc6 64*6 + 18 = 2706
        (env.state(2, [2, 4], 0.5), [4992 / 7698, 0.0, 0.5]),
    ]
    for state, dynamic in expected:
        assert state[8:].tolist() == pytest.approx(dynamic)


def test_clipping_matches_a_hand_computed_walk() -> None:
    env = AMCEnv.build(_small(), X8, lbound=0.25)
    assert env.lower_counts == (1, 2, 2)  # 4*.25, 8*.25, 6*.25 = 1.5 rounded half up
    ep = env.run_episode(lambda s: torch.ones(1), env.mac.macs, budget=0.5 * 7698)
    # t0: (4, 2, 2) costs 3526 <= 3849 -> 4; t1: 2310 + 608 k <= 3849 -> 2;
    # t2: 3456 + 35 k <= 3849 -> all 6
    assert ep.counts == (4, 2, 6)
    assert env.mac.macs(ep.counts) == 3666


@functools.cache
def _zoo(name: str) -> tuple[nn.Module, Any, AMCEnv]:
    torch.manual_seed(0)
    model = build_model(make_spec(name, num_classes=10, in_channels=1, image_size=8)).eval()
    graph = trace_channels(model, X8)
    return model, graph, AMCEnv.build(model, X8, lbound=0.2, graph=graph)


@pytest.mark.parametrize("name", ["lenet5", "vgg", "mobilenetv2", "resnet"])
@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_mac_model_equals_the_tracer_on_pruned_zoo_models(name: str, data: st.DataObject) -> None:
    model, graph, env = _zoo(name)
    counts = [data.draw(st.integers(1, s)) for s in env.sizes]
    pruned = apply_policy(
        model, X8, {x.name: k for x, k in zip(env.layers, counts, strict=True)}, graph=graph
    )
    assert env.mac.macs(counts) == trace_model(pruned, X8).total_macs


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet"])
@settings(max_examples=5, deadline=None)
@given(actions=st.lists(st.floats(0, 1), min_size=11, max_size=11), ratio=st.floats(0.3, 1))
def test_states_lie_in_the_unit_cube_and_zoo_budgets_hold(
    name: str, actions: list[float], ratio: float
) -> None:
    model, _, env = _zoo(name)
    it = iter(actions)
    budget = ratio * env.mac.total
    ep = env.run_episode(lambda s: torch.tensor([next(it)]), env.mac.macs, budget)
    assert ep.states.min() >= 0 and ep.states.max() <= 1
    pruned = apply_policy(
        model, X8, {x.name: k for x, k in zip(env.layers, ep.counts, strict=True)}
    )
    assert trace_model(pruned, X8).total_macs <= budget


def test_reconstruction_is_the_least_squares_fit_of_the_consumer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(200, 6)
    graph = trace_channels(model, x[:1])
    grams = input_grams(model, graph, [(x,)])
    keep = {"0": top_channels(l1_importance(model, graph.group("0")), 4)}  # what apply_policy keeps
    dropped = [c for c in range(8) if c not in keep["0"]]
    fitted = reconstruct(model, graph, keep, grams)[2].weight.detach()
    with torch.no_grad():
        h = model[1](model[0](x)).double()  # [200, 8]: the consumer's unpruned inputs
        y = h @ model[2].weight.double().T  # [200, 3]
    oracle = torch.linalg.lstsq(h[:, keep["0"]], y).solution.T  # [3, 4]
    assert torch.allclose(fitted[:, keep["0"]].double(), oracle, atol=1e-5)
    assert fitted[:, dropped].abs().max() == 0
    pruned = apply_policy(model, x[:1], {"0": 4}, grams=grams, graph=graph)
    assert torch.allclose(pruned[2].weight, fitted[:, keep["0"]])


# --- the search end to end ------------------------------------------------------------------


@functools.cache
def _digits() -> Any:
    return load_data("digits", seed=0)


def _model(name: str) -> tuple[nn.Module, Any]:
    spec = make_spec(name, num_classes=10, in_channels=1, image_size=8)
    torch.manual_seed(0)
    return build_model(spec), spec


FAST = {"episodes": 6, "warmup": 3, "rollouts": 2, "hidden1": 32, "hidden2": 32}


def _history(result: Any) -> list[dict[str, Any]]:
    return [r.to_dict() for r in result.history]


@pytest.mark.parametrize("name", ["lenet5", "vgg"])
def test_amc_meets_the_budget_and_its_model_checkpoints(name: str, tmp_path: Any) -> None:
    model, spec = _model(name)
    result = amc_search(model, _digits(), X8, AMCConfig(**FAST), progress=False, spec=spec)
    total = trace_model(model, X8).total_macs
    assert trace_model(result.model, X8).total_macs == result.best.macs <= 0.5 * total
    assert all(r.macs == r.cost <= result.budget == 0.5 * total for r in result.history)
    _, val, _ = make_loaders(_digits(), batch_size=64)
    assert evaluate(result.model, val).accuracy == result.best.accuracy  # scored unfine-tuned
    folder = save_checkpoint(tmp_path / "ckpt", result.model, result.spec)
    loaded, _, _ = load_checkpoint(folder)
    x = next(iter(val))[0]
    assert torch.equal(loaded(x), result.model.eval()(x))
    json_path, png_path = write_amc(result, tmp_path / "out")
    summary = json.loads(json_path.read_text())
    assert summary["rewards"] == [r.reward for r in result.history]
    assert summary["best"]["ratios"] == result.ratios
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_result_and_another_seed_differs() -> None:
    model, _ = _model("lenet5")
    runs = [amc_search(model, _digits(), X8, AMCConfig(**FAST, seed=s), progress=False)
            for s in (0, 0, 1)]  # fmt: skip
    assert _history(runs[0]) == _history(runs[1])
    states = [r.model.state_dict() for r in runs[:2]]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert _history(runs[0]) != _history(runs[2])


class _ProcessWorkers:
    """Two spawned worker processes: a stand-in for Ray in the tests (same ``map`` contract)."""

    threads_per_task = 1

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], label: str = "") -> list[Any]:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            2, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)
        ) as pool:
            return list(pool.map(fn, items))


@pytest.mark.slow
def test_two_worker_processes_give_the_in_process_result() -> None:
    model, _ = _model("lenet5")
    config = AMCConfig(**{**FAST, "episodes": 4, "warmup": 2})
    local = amc_search(model, _digits(), X8, config, progress=False)
    parallel = amc_search(model, _digits(), X8, config, _ProcessWorkers(), progress=False)
    assert _history(local) == _history(parallel)


def test_a_resumed_search_equals_one_that_never_stopped(tmp_path: Any) -> None:
    model, _ = _model("lenet5")
    state = tmp_path / "amc.state"
    whole = amc_search(model, _digits(), X8, AMCConfig(**FAST), progress=False)
    first = AMCConfig(**{**FAST, "episodes": 4})  # killed after two batches
    amc_search(model, _digits(), X8, first, progress=False, state_path=state)
    resumed = amc_search(model, _digits(), X8, AMCConfig(**FAST), progress=False,
                         state_path=state)  # fmt: skip
    assert _history(resumed) == _history(whole)
    saved = torch.load(state, weights_only=True)
    steps = len(whole.sizes)
    rewards = saved["agent"]["memory"]["rewards"][: steps * 6, 0].reshape(6, steps)
    for row, record in zip(rewards, whole.history, strict=True):  # every transition: R_episode
        assert row.tolist() == pytest.approx([record.reward] * steps)
    other = AMCConfig(**{**FAST, "lbound": 0.3})
    with pytest.raises(ConfigError, match="another AMC search"):
        amc_search(model, _digits(), X8, other, progress=False, state_path=state)


def test_accuracy_mode_rewards_error_times_log_flops() -> None:
    model, _ = _model("lenet5")
    config = AMCConfig(**FAST, mode="accuracy", budget_ratio=None)
    result = amc_search(model, _digits(), X8, config, progress=False)
    assert result.budget is None
    for r in result.history:
        assert r.reward == pytest.approx(-(1 - r.accuracy) * math.log(r.flops))


def _fake_latency(model: nn.Module) -> float:
    """A deterministic stand-in for a latency table: 1 ns per parameter plus 5 us."""
    return 1e-9 * sum(p.numel() for p in model.parameters()) + 5e-6


def test_a_latency_budget_is_met_by_every_episode() -> None:
    model, _ = _model("vgg")
    config = AMCConfig(**FAST, resource="latency", budget_ratio=0.4)
    result = amc_search(model, _digits(), X8, config, latency=_fake_latency, progress=False)
    assert result.budget == pytest.approx(0.4 * _fake_latency(model))
    for r in result.history:
        pruned = apply_policy(model.eval(), X8, r.counts)
        assert _fake_latency(pruned) == r.cost <= result.budget
    assert _fake_latency(result.model) <= result.budget


def test_search_errors_name_the_problem() -> None:
    model, _ = _model("lenet5")
    with pytest.raises(ConfigError, match=r"AMCConfig\.budget"):
        amc_search(model, _digits(), X8, AMCConfig(budget_ratio=0.01), progress=False)
    with pytest.raises(ConfigError, match="latency"):
        amc_search(model, _digits(), X8, AMCConfig(resource="latency"), progress=False)
    with pytest.raises(ConfigError, match="latency"):
        amc_search(model, _digits(), X8, AMCConfig(), latency=_fake_latency, progress=False)


@pytest.mark.parametrize(
    ("fields", "name"),
    [({"mode": "accuracy"}, "budget_ratio"), ({"mode": "x"}, "mode"),
     ({"mode": "accuracy", "budget_ratio": None, "resource": "latency"}, "resource"),
     ({"lbound": 0.5, "rbound": 0.4}, "rbound"), ({"warmup": 500}, "warmup"),
     ({"importance": "taylor"}, "importance"), ({"budget_ratio": 1.5}, "budget_ratio")],
)  # fmt: skip
def test_bad_config_names_the_field(fields: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=rf"AMCConfig\.{name}"):
        AMCConfig(**fields)


def test_config_round_trips_through_a_dict() -> None:
    config = AMCConfig(mode="accuracy", budget_ratio=None, reconstruct=True, seed=3)
    assert AMCConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="unknown"):
        AMCConfig.from_dict({**config.to_dict(), "budget": 0.5})


def test_bn_samples_score_the_model_that_is_returned() -> None:
    """With BatchNorm re-estimated on training samples, the returned model is the scored one:
    its validation accuracy is the best episode's, and its running statistics are those of
    the pruned network (oracle: recalibrate_bn on the same samples, run again)."""
    model, _ = _model("vgg")
    cfg = AMCConfig(**FAST, bn_samples=128)
    result = amc_search(model, _digits(), X8, cfg, progress=False)
    _, val, _ = make_loaders(_digits(), batch_size=64)
    assert evaluate(result.model, val).accuracy == result.best.accuracy
    plain = amc_search(model, _digits(), X8, AMCConfig(**FAST), progress=False)
    assert [r.counts for r in plain.history][:3] == [r.counts for r in result.history][:3]
    bn = next(m for m in result.model.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
