"""Workers: in-process and on a local 2-worker Ray cluster, the same results in item order."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
import ray
import torch
from torch import nn

from slimtorch.errors import ConfigError
from slimtorch.search import parallel
from slimtorch.search.parallel import RAY_EXTRA, Workers

TRAIN_STEPS = 5
BATCH, FEATURES, CLASSES = 32, 16, 4


def cube_plus_threads(x: int) -> tuple[int, int]:
    """A task: x**3 computed by torch, and the torch thread count the task ran with."""
    return int(torch.tensor(x, dtype=torch.int64) ** 3), torch.get_num_threads()


def train_from_seed(seed: int) -> bytes:
    """A seeded torch computation: a tiny MLP trained a few SGD steps; its weights' bytes."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, CLASSES))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(TRAIN_STEPS):
        x = torch.randn(BATCH, FEATURES, generator=gen)
        y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return b"".join(p.detach().numpy().tobytes() for p in model.parameters())


def slow_first(item: tuple[int, float]) -> tuple[int, int]:
    """Sleep ``item[1]`` seconds (earlier items sleep longer), return the index and the pid."""
    time.sleep(item[1])
    return item[0], os.getpid()


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance with two CPUs for this module; shut down at the end."""
    # This module is imported under a pytest-made name the workers cannot import: send its
    # task functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        parallel.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_in_process_results_are_the_plain_map_with_one_thread_per_task() -> None:
    items = [3, -2, 0, 7]
    before = torch.get_num_threads()
    results = Workers().map(cube_plus_threads, items)
    assert [r for r, _ in results] == [x**3 for x in items]
    assert {threads for _, threads in results} == {1}
    assert torch.get_num_threads() == before  # restored after the tasks
    assert Workers().map(train_from_seed, [4, 5]) == [train_from_seed(4), train_from_seed(5)]


def test_ray_gives_the_in_process_results_bit_for_bit(local_ray: None) -> None:
    seeds = [0, 1, 2, 3]
    local = Workers().map(train_from_seed, seeds)
    on_ray = Workers(count=2).map(train_from_seed, seeds)
    assert on_ray == local  # identical bytes, whatever the worker count
    assert len(set(local)) == len(seeds)  # the seeds matter: not a constant
    assert all(np.isfinite(np.frombuffer(b, dtype=np.float32)).all() for b in on_ray)
    threads = Workers(count=2).map(cube_plus_threads, [1, 2, 3])
    assert threads == [(1, 1), (8, 1), (27, 1)]


def test_ray_keeps_item_order_when_later_items_finish_first(local_ray: None) -> None:
    items = [(i, 0.3 if i == 0 else 0.0) for i in range(6)]  # item 0 finishes last
    results = Workers(count=2).map(slow_first, items, label="order")
    assert [i for i, _ in results] == list(range(6))
    assert os.getpid() not in {pid for _, pid in results}  # ran in Ray's worker processes


def test_asking_for_ray_without_it_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "ray_available", lambda: False)
    for workers in (Workers(count=2), Workers(address="auto")):
        with pytest.raises(ConfigError) as err:
            workers.map(cube_plus_threads, [1, 2])
        assert RAY_EXTRA in str(err.value) and "\n" not in str(err.value)
    assert Workers().map(cube_plus_threads, [2]) == [(8, 1)]  # in-process needs no Ray


@pytest.mark.parametrize("field", ["count", "threads_per_task"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_bad_worker_settings_are_config_errors(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        Workers(**{field: value})  # type: ignore[arg-type]
