"""AMC on a local 2-worker Ray cluster gives the in-process result for the same seed (needs
the ``search`` extra)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray
import torch

from slimtorch.data import load_data
from slimtorch.models import build_model, make_spec
from slimtorch.search import parallel
from slimtorch.search.amc import AMCConfig, amc_search
from slimtorch.search.parallel import Workers


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        parallel.shutdown()


@pytest.mark.slow
def test_ray_workers_give_the_in_process_search(local_ray: None) -> None:
    torch.manual_seed(0)
    model = build_model(make_spec("vgg", num_classes=10, in_channels=1, image_size=8))
    splits, x = load_data("digits", seed=0), torch.zeros(1, 1, 8, 8)
    config = AMCConfig(episodes=6, warmup=2, rollouts=3, hidden1=32, hidden2=32, reconstruct=True)
    local = amc_search(model, splits, x, config, progress=False)
    on_ray = amc_search(model, splits, x, config, Workers(count=2), progress=False)
    assert [r.to_dict() for r in on_ray.history] == [r.to_dict() for r in local.history]
    assert len({r.loss for r in local.history}) > 1  # the episodes differ: not a constant
    state, other = local.model.state_dict(), on_ray.model.state_dict()
    assert all(torch.equal(state[k], other[k]) for k in state)
