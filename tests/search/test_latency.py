"""Latency table: sums against a deterministic cost model, reuse, cache, keys, pruned keys."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from slimtorch.errors import ConfigError
from slimtorch.prune.surgery import prune_channels
from slimtorch.search.latency import LatencyTable, batched
from slimtorch.search.latency_cache import checksum_of
from slimtorch.search.latency_keys import module_key, walk_layers
from slimtorch.search.latency_report import errors_markdown, prediction_errors
from slimtorch.search.latency_timer import MedianTimer, Overhead, Timing, as_timing, input_variants

# Cost per input element, by module class ("function" for functional ops, "model" for a whole
# model timed by LatencyTable.measure); the overhead probes cost nothing.
WEIGHTS = {"Conv2d": 7.0, "BatchNorm2d": 3.0, "ReLU": 1.0, "MaxPool2d": 2.0, "Flatten": 0.5,
           "Linear": 5.0, "function": 1.5, "model": 100.0}  # fmt: skip
NS = 1e-9
FAULT_S = 1e-6


def cost(fn: Any, args: tuple[Any, ...]) -> float:
    """The deterministic cost model: NS * weight * input elements."""
    n = sum(a.numel() for a in args if isinstance(a, Tensor))
    if isinstance(fn, nn.Module):
        kind = type(fn).__name__
        return 0.0 if kind in ("Identity", "Sequential") else NS * WEIGHTS[kind] * n
    if getattr(fn, "func", None) is not None:  # functools.partial(call_model, model)
        return NS * WEIGHTS["model"] * n
    return NS * WEIGHTS["function"] * n if n else 0.0


class CountingTimer:
    """``cost`` that records the layer configurations it was asked to time."""

    name = "tests.counting"

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[tuple[int, ...], ...]]] = []

    def __call__(self, fn: Any, args: tuple[Any, ...]) -> float:
        shapes = tuple(tuple(a.shape) for a in args if isinstance(a, Tensor))
        self.calls.append((type(fn).__name__, shapes))
        return cost(fn, args)


class Residual(nn.Module):
    """conv -> bn, plus the input, then ReLU: one functional add between leaf modules."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.bn(self.conv(x)))


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
    )  # fmt: skip


def fresh_table(tmp_path: Path, timer: Any = None, **kw: Any) -> LatencyTable:
    table = LatencyTable(tmp_path / "table.json", timer=timer or CountingTimer(), **kw)
    _ = table.overhead  # the probes are timed now, so they do not count below
    if isinstance(table.timer, CountingTimer):
        table.timer.calls.clear()
    return table


@pytest.mark.parametrize("batch", [1, 5])
def test_prediction_is_the_exact_sum_of_the_timer_over_the_layers(
    tmp_path: Path, batch: int
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), Residual(4), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3))  # fmt: skip
    table = fresh_table(tmp_path, batch=batch)
    p = table.breakdown(model, torch.randn(1, 1, 8, 8))
    n = batch * 8 * 8  # elements per channel
    # closed form, in execution order: conv, conv, bn, x + y, relu, flatten, linear
    weights_elements = [(7, n), (7, 4 * n), (3, 4 * n), (1.5, 8 * n), (1, 4 * n), (0.5, 4 * n),
                        (5, 4 * n)]  # fmt: skip
    expected = [NS * w * elements for w, elements in weights_elements]
    assert [name for name, _, _ in p.layers] == ["0", "1.conv", "1.bn", "fn:add#1", "1.act",
                                                 "2", "3"]  # fmt: skip
    assert [s for _, _, s in p.layers] == expected
    assert p.layers_s == sum(expected)
    assert p.module_calls == 2  # the root Sequential and the Residual block
    assert (p.calls_s, p.rho) == (0.0, 0.0)  # the cost model prices no probe
    assert p.seconds == p.raw_s == p.layers_s


class FaultyTimer:
    """``cost``, with 2 page faults per call reported for every Conv2d."""

    name = "tests.faulty"

    def __call__(self, fn: Any, args: tuple[Any, ...]) -> Timing:
        faults = 2.0 if isinstance(fn, nn.Conv2d) else 0.0
        return Timing(cost(fn, args) + faults * FAULT_S, faults=faults)


def test_page_faults_are_taken_out_of_layer_and_model_figures(tmp_path: Path) -> None:
    table = fresh_table(tmp_path, timer=FaultyTimer(), overhead=Overhead(0.0, FAULT_S))
    model, x = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), torch.randn(1, 1, 6, 6)
    p = table.breakdown(model, x)
    assert [s for _, _, s in p.layers] == [NS * 7.0 * 36 + 2 * FAULT_S - 2 * FAULT_S,
                                           NS * 1.0 * 32]  # fmt: skip
    entry = table.entries[walk_layers(model, x, threads=table.threads).calls[0].key.text]
    assert entry.faults == 2.0 and entry.seconds == NS * 7.0 * 36 + 2 * FAULT_S
    timing = Timing(5e-6, faults=3.0)
    assert timing.without_faults(FAULT_S) == pytest.approx(5e-6 - 3 * FAULT_S)
    assert Timing(1e-9, faults=3.0).without_faults(FAULT_S) == 0.0  # never negative


def test_a_configuration_is_measured_once_and_reused(tmp_path: Path) -> None:
    model = nn.Sequential(nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.Linear(6, 6), nn.ReLU())
    x = torch.randn(1, 6)
    table = fresh_table(tmp_path)
    timer = table.timer
    first = table.breakdown(model, x)
    assert sorted(timer.calls) == [("Linear", ((1, 6),)), ("ReLU", ((1, 6),))]
    assert first.measured == 2 and len(table) == 2
    second = table.breakdown(model, x)
    assert (second.layers, second.measured) == (first.layers, 0) and len(timer.calls) == 2
    again = LatencyTable(table.path, timer=timer)  # a later search, same file
    assert again.predict(model, x) == first.seconds and len(timer.calls) == 2
    LatencyTable(table.path, batch=2, timer=timer).predict(model, x)
    assert len(timer.calls) == 4  # batch 2 shapes are new configurations: two more


def test_cache_round_trip(tmp_path: Path) -> None:
    model, x = small_cnn(), torch.randn(1, 1, 8, 8)
    table = fresh_table(tmp_path)
    p = table.breakdown(model, x)
    table.calibrate(model, x, measured_s=2 * p.raw_s)
    loaded = LatencyTable(table.path, timer=CountingTimer())
    assert loaded.entries == table.entries and len(loaded) == 7  # relu and bn shapes repeat
    assert loaded.overhead == table.overhead
    assert loaded.breakdown(model, x) == table.breakdown(model, x)
    assert loaded.timer.calls == []
    record = json.loads(table.path.read_text())
    checksum = record.pop("checksum")
    assert checksum == checksum_of(record) and record["format"] == "slimtorch-latency-table"


def _rewrite(path: Path, edit: Any) -> None:
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("damage", ["truncated", "flipped digit", "bad entry", "no checksum"])
def test_a_corrupt_cache_is_detected_and_rebuilt(tmp_path: Path, damage: str) -> None:
    model, x = small_cnn(), torch.randn(1, 1, 8, 8)
    table = fresh_table(tmp_path)
    before = table.breakdown(model, x)
    path = table.path
    if damage == "truncated":
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    elif damage == "flipped digit":  # valid JSON, one figure changed: the checksum catches it
        text = path.read_text()
        i = text.index('"seconds": ') + len('"seconds": ')
        path.write_text(text[:i] + ("9" if text[i] != "9" else "8") + text[i + 1 :])
    elif damage == "bad entry":  # checksum recomputed: the entry itself is refused

        def edit(r: dict) -> None:
            next(iter(r["entries"].values()))["seconds"] = "fast"
            r.pop("checksum")
            r["checksum"] = checksum_of(r)

        _rewrite(path, edit)
    else:
        _rewrite(path, lambda r: r.pop("checksum"))
    with pytest.warns(UserWarning, match="corrupt") as caught:
        rebuilt = LatencyTable(path, timer=CountingTimer())
        rebuilt.save()
    assert len(caught) == 1  # warned once, when loaded
    assert len(rebuilt) == 0  # nothing half-loaded
    assert rebuilt.breakdown(model, x).layers_s == before.layers_s
    assert rebuilt.timer.calls  # re-measured
    assert len(LatencyTable(path, timer=CountingTimer())) == len(table)  # the file is whole again


def test_a_table_of_another_setup_is_refused(tmp_path: Path) -> None:
    table = fresh_table(tmp_path, threads=1)
    table.predict(nn.ReLU(), torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="threads"):
        LatencyTable(table.path, threads=2, timer=table.timer)
    with pytest.raises(ConfigError, match="timer"):
        LatencyTable(table.path, threads=1, timer=cost)


def test_default_path_is_per_machine_under_slimtorch_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLIMTORCH_CACHE", str(tmp_path))
    one = LatencyTable(threads=1, timer=cost)
    two = LatencyTable(threads=2, timer=cost)
    assert one.path.parent == tmp_path / "latency" and one.path != two.path
    one.predict(nn.ReLU(), torch.zeros(1, 3))
    assert one.path.is_file() and not two.path.exists()


CONV = st.fixed_dictionaries({
    "c_in": st.sampled_from([1, 2, 4, 8]), "mult": st.sampled_from([1, 2, 3]),
    "kernel": st.sampled_from([1, 3, 5]), "stride": st.sampled_from([1, 2]),
    "padding": st.sampled_from([0, 1, 2]), "depthwise": st.booleans(), "bias": st.booleans(),
    "batch": st.sampled_from([1, 2, 64]), "size": st.sampled_from([8, 9, 16]),
    "threads": st.sampled_from([1, 2]),
})  # fmt: skip


def conv_key(cfg: dict[str, Any]) -> Any:
    c_in = cfg["c_in"]
    c_out = c_in * cfg["mult"]
    conv = nn.Conv2d(c_in, c_out, cfg["kernel"], cfg["stride"], cfg["padding"],
                     groups=c_in if cfg["depthwise"] else 1, bias=cfg["bias"])  # fmt: skip
    x = torch.zeros(cfg["batch"], c_in, cfg["size"], cfg["size"])
    return module_key(conv, (x,), cfg["threads"])


@settings(max_examples=200, deadline=None)
@given(CONV, CONV)
def test_keys_are_equal_exactly_when_configurations_are(a: dict, b: dict) -> None:
    same = a == b or (a["c_in"] == 1 and {**a, "depthwise": 0} == {**b, "depthwise": 0})
    assert (conv_key(a) == conv_key(b)) == same  # depthwise on 1 channel is groups=1
    assert (conv_key(a).text == conv_key(b).text) == same


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64), st.integers(1, 64), st.integers(1, 64))
def test_linear_and_pool_keys_follow_their_shapes(n1: int, f1: int, n2: int, f2: int) -> None:
    lin = [module_key(nn.Linear(f, 8), (torch.zeros(n, f),), 1) for n, f in ((n1, f1), (n2, f2))]
    assert (lin[0] == lin[1]) == ((n1, f1) == (n2, f2))
    pools = [module_key(nn.MaxPool2d(k), (torch.zeros(1, 2, 8, 8),), 1) for k in (2, 2, 4)]
    assert pools[0] == pools[1] != pools[2]
    assert module_key(nn.AvgPool2d(2), (torch.zeros(1, 2, 8, 8),), 1) != pools[0]


def test_channel_pruning_changes_the_keys_of_the_changed_layers_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = small_cnn(), torch.randn(1, 1, 8, 8)
    pruned = prune_channels(model, x, keep={"0": [0, 1, 2, 3]})  # conv 0: 8 -> 4 channels
    base = {c.name: c.key for c in walk_layers(model, x, threads=1).calls}
    after = {c.name: c.key for c in walk_layers(pruned, x, threads=1).calls}
    changed = {name for name in base if base[name] != after[name]}
    assert changed == {"0", "1", "2", "3"}  # conv out, its bn and relu, next conv's input
    table = fresh_table(tmp_path)
    table.predict(model, x)
    table.timer.calls.clear()
    table.predict(pruned, x)
    assert sorted(k for k, _ in table.timer.calls) == ["BatchNorm2d", "Conv2d", "Conv2d", "ReLU"]


def test_prediction_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    model = small_cnn().train()
    model[1].running_mean.fill_(0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    table = LatencyTable(tmp_path / "t.json", timer=MedianTimer(warmup=1, repeats=2,
                                                                min_seconds=0.0))  # fmt: skip
    table.predict(model, torch.randn(1, 1, 8, 8))
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_calibration_meets_the_measurement_and_carries_to_pruned_copies(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = small_cnn(), torch.randn(1, 1, 8, 8)
    table = fresh_table(tmp_path, batch=4)
    measured = table.measure(model, x)
    assert measured == NS * 100 * (4 * 64)  # the cost model's whole-model price
    rho = table.calibrate(model, x)
    p = table.breakdown(model, x)
    assert math.isclose(p.seconds, measured, rel_tol=1e-12) and p.rho == rho
    pruned = table.breakdown(prune_channels(model, x, ratio=0.5), x)
    assert pruned.rho == rho
    assert math.isclose(pruned.seconds, pruned.raw_s + rho * pruned.layers_s, rel_tol=1e-12)
    other = table.breakdown(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), x)
    assert other.rho == 0.0 and other.seconds == other.raw_s


def test_real_timer_gives_positive_finite_figures(tmp_path: Path) -> None:
    timer = MedianTimer(warmup=1, repeats=3, min_seconds=0.0)
    table = LatencyTable(tmp_path / "t.json", batch=2, threads=1, timer=timer)
    model, x = small_cnn(), torch.randn(1, 1, 8, 8)
    p = table.breakdown(model, x)
    assert all(0 < s < math.inf for _, _, s in p.layers) and len(p.layers) == 9
    assert 0 < p.seconds < math.inf and p.calls_s >= 0
    timing = table.measure_timing(model, x)
    assert 0 < timing.seconds < math.inf and timing.faults >= 0 and timing.samples >= 3
    assert 0 <= table.measure(model, x) < math.inf
    overhead = table.overhead
    assert 0 <= overhead.call_s < math.inf and 0 <= overhead.fault_s < math.inf


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch"):
        LatencyTable(tmp_path / "t.json", batch=0)
    with pytest.raises(ConfigError, match="clock"):
        MedianTimer(clock="tsc")
    with pytest.raises(ConfigError, match="1 torch thread"):
        LatencyTable(tmp_path / "t.json", threads=2, timer=MedianTimer(clock="cpu"))
    with pytest.raises(ConfigError, match="batch 1 or 4"):
        batched(torch.zeros(3, 2), 4)
    with pytest.raises(ConfigError, match="seconds"):
        as_timing(float("nan"))


def test_batched_samples_differ_and_variants_keep_values() -> None:
    x = batched(torch.arange(6.0).view(1, 6), 3)
    assert torch.equal(x[0], torch.arange(6.0)) and not torch.equal(x[1], x[2])
    t = torch.arange(10.0).view(2, 5)
    variants = input_variants((t, 3), 4)
    assert all(v[1] == 3 for v in variants)  # non-tensors untouched
    assert all(torch.equal(v[0].flatten().sort().values, t.flatten()) for v in variants)
    assert len({tuple(v[0].flatten().tolist()) for v in variants}) == 4  # four orders


def test_prediction_error_report(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rows = prediction_errors({"cnn": (small_cnn(), torch.randn(1, 1, 8, 8))}, batches=(1, 3),
                             path=tmp_path / "t.json", timer=cost)  # fmt: skip
    assert [(r.batch, r.variant) for r in rows] == [(1, "base"), (1, "pruned 0.5"),
                                                    (3, "base"), (3, "pruned 0.5")]  # fmt: skip
    for r in rows:
        assert r.error_pct == pytest.approx(100 * (r.predicted_s - r.measured_s) / r.measured_s)
        assert r.measured_s == NS * 100 * (r.batch * 64)  # the cost model's whole-model price
    assert rows[0].calibrated_s is None and rows[1].calibrated_s is not None
    table_text = errors_markdown(rows)
    assert table_text.count("\n") == 5 and "| cnn | pruned 0.5 | 3 |" in table_text
