"""profile_model assembles consistent figures and never mutates the model."""

from __future__ import annotations

import json

import torch
from torch import nn

from slimtorch.core.size import WeightFormat
from slimtorch.profile import ProfileConfig, profile_model
from slimtorch.profile.output import compare_rows, to_csv, to_json

FAST = ProfileConfig(latency=False, roofline=False, throughput_batch_sizes=())


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_totals_are_sums_of_layers_and_closed_form() -> None:
    p = profile_model(mlp(), torch.zeros(1, 1, 8, 8), FAST)
    assert p.params == 64 * 32 + 32 + 32 * 10 + 10
    assert p.macs == 64 * 32 + 32 * 10 == sum(lp.macs for lp in p.layers)
    assert p.size_bits == 32 * p.params
    assert p.output_shape == (1, 10)
    assert p.energy.total_pj > 0 and p.energy.total_pj == sum(
        [p.energy.compute_pj, p.energy.memory_pj]
    )


def test_model_is_not_mutated() -> None:
    model = mlp().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile_model(
        model,
        torch.rand(2, 1, 8, 8),
        ProfileConfig(runs=2, warmup=1, throughput_batch_sizes=(1, 2), roofline=False),
    )
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_sparsity_and_bit_width_shrink_size_and_effective_macs() -> None:
    dense = mlp()
    sparse = mlp()
    with torch.no_grad():
        w = sparse[1].weight
        w[w.abs() < w.abs().flatten().kthvalue(int(0.9 * w.numel())).values] = 0.0
    pd = profile_model(dense, torch.zeros(1, 1, 8, 8), FAST)
    ps = profile_model(sparse, torch.zeros(1, 1, 8, 8), FAST)
    nnz = int((sparse[1].weight != 0).sum())
    assert ps.nonzero_params == pd.nonzero_params - (64 * 32 - nnz)
    assert ps.effective_macs == nnz + 32 * 10
    assert ps.size_bits < pd.size_bits
    q = ProfileConfig(
        latency=False,
        roofline=False,
        throughput_batch_sizes=(),
        formats={r"\d+\.weight": WeightFormat(bits=8, sparse="dense")},
    )
    pq = profile_model(dense, torch.zeros(1, 1, 8, 8), q)
    assert pq.size_bits == 8 * (64 * 32 + 32 * 10) + 32 * (32 + 10)
    assert pq.energy.total_pj < pd.energy.total_pj


def test_json_csv_and_compare() -> None:
    a = profile_model(mlp(), torch.zeros(1, 1, 8, 8), FAST, name="a")
    data = json.loads(to_json(a))
    assert data["macs"] == a.macs and data["size_bytes"] == a.size_bits / 8
    assert to_csv(a).splitlines()[-1].split(",")[1] == "TOTAL"
    rows = {label: ratio for label, _, _, ratio in compare_rows(a, a)}
    assert rows["MACs"] == 1.0 and rows["parameters"] == 1.0


def test_torch_prune_hooks_count_as_the_pruned_weight() -> None:
    import torch.nn.utils.prune as prune

    model = mlp()
    dense = profile_model(model, torch.zeros(1, 1, 8, 8), FAST)
    prune.l1_unstructured(model[1], "weight", amount=0.9)
    pruned = profile_model(model, torch.zeros(1, 1, 8, 8), FAST)
    kept = 64 * 32 - round(0.9 * 64 * 32)
    assert pruned.nonzero_params == dense.nonzero_params - (64 * 32 - kept)
    assert pruned.effective_macs == kept + 32 * 10
    assert pruned.size_bits < dense.size_bits
    assert pruned.params == dense.params


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 4)
        self.b = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(y)


def test_tuple_and_dict_inputs() -> None:
    x, y = torch.zeros(2, 6), torch.zeros(2, 3)
    cfg = ProfileConfig(runs=2, warmup=0, throughput_batch_sizes=(1, 2), roofline=False)
    for example in ((x, y), {"x": x, "y": y}):
        p = profile_model(TwoInputs(), example, cfg)
        assert p.macs == 2 * (6 * 4 + 3 * 4)
        assert p.input_shape == (2, 6) and p.throughput == ()
