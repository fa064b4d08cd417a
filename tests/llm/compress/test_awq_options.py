"""AWQ options: AutoAWQ's duo scaling (against a loop oracle and the RTN floor), GPTQ rounding
on a fixed grid (against the slow OBQ reference) and AWQ + GPTQ on a block (against a naive
sequential rebuild, and never worse than AWQ + RTN on the calibration data)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_compress_helpers import calib_tokens, tiny_llama
from test_gptq import _problem, gptq_reference

from slimtorch.errors import ConfigError
from slimtorch.llm.compress.arch import LLAMA, linear
from slimtorch.llm.compress.awq import (
    activation_scale,
    awq_block,
    awq_scale_block,
    candidate_scales,
    layer_loss,
    search_scale,
    weight_scale,
)
from slimtorch.llm.compress.awq_clip import clip_grid_params, clip_weight, search_clip_range
from slimtorch.llm.compress.calibrate import capture_block_inputs, observe_inputs, run_block
from slimtorch.llm.compress.config import AWQConfig, GPTQConfig, RTNConfig
from slimtorch.llm.compress.gptq import gptq_quantize
from slimtorch.llm.compress.rtn import rtn_quantize
from slimtorch.quantize.calibration import HessianAccumulator
from slimtorch.quantize.granularity import grouped
from slimtorch.quantize.primitives import choose_qparams


def test_weight_scale_matches_loop_oracle():
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(3, 10, generator=g), torch.randn(2, 10, generator=g)]
    expect = torch.zeros(10)
    rows = [r for w in ws for r in w]
    for r in rows:
        for start in range(0, 10, 4):  # groups of 4, the last one short (2 columns)
            part = r[start : start + 4].abs()
            expect[start : start + 4] += part / (part.max() + 1e-6)
    torch.testing.assert_close(weight_scale(ws, 4), expect / len(rows))


def test_duo_candidates_follow_autoawq_formula():
    g = torch.Generator().manual_seed(1)
    x_mean, w = torch.rand(8, generator=g) + 0.1, [torch.randn(4, 8, generator=g)]
    cands = candidate_scales(x_mean, w, AWQConfig(group_size=4, scale_grid=4, scale_search="duo"))
    w_mean = weight_scale(w, 4)
    for s, alpha in cands:
        raw = (x_mean**alpha / (w_mean ** (1 - alpha) + 1e-4)).clamp(min=1e-4)
        torch.testing.assert_close(s, raw / (raw.max() * raw.min()).sqrt())
    assert [a for _, a in cands] == [0.0, 0.25, 0.5, 0.75]


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([3, 4]), gs=st.sampled_from([8, None]))
def test_both_grids_never_worse_than_either(seed, bits, gs):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 32, generator=g) * (1 + 20 * torch.rand(32, generator=g))
    w = [torch.randn(8, 32, generator=g)]
    loss = layer_loss(x, w)
    best = {
        mode: search_scale(activation_scale(x), w, loss, AWQConfig(bits, gs, scale_search=mode))[2]
        for mode in ("x", "duo", "both")
    }
    assert best["both"] <= min(best["x"], best["duo"])
    assert best["both"] <= loss([rtn_quantize(wi, RTNConfig(bits, gs)) for wi in w])


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_on_a_fixed_grid_matches_reference(act_order):
    _, w, h = _problem(2)
    grid = choose_qparams(w.double() * 0.8, RTNConfig(3, 8).spec())  # a narrower (clipped) grid
    cfg = GPTQConfig(bits=3, group_size=8, block_size=12, act_order=act_order)
    fast = gptq_quantize(w.double(), h.double(), cfg, grid)
    ref = gptq_reference(w, h, 3, 8, cfg.percdamp, act_order, static=grid)
    torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-9)


def test_clip_grid_params_never_wider_than_the_weight():
    _, w, _ = _problem(5)
    x = torch.randn(128, 32, generator=torch.Generator().manual_seed(0))
    grid = clip_grid_params(w, x, AWQConfig(4, 8))
    full = choose_qparams(w, RTNConfig(4, 8).spec())
    assert (grid.scale <= full.scale + 1e-7).all()
    assert (grid.zero_point >= full.zero_point - 1e-7).all()


@torch.no_grad()
def _naive_awq_gptq(block, inputs, config):
    """Scales as AWQ folds them, then each input group's Hessian from a fresh block run with
    the earlier groups already quantized, GPTQ without clipping."""
    awq_scale_block(block, LLAMA, inputs, config)
    gcfg = GPTQConfig(
        config.bits,
        config.group_size,
        percdamp=config.gptq_percdamp,
        act_order=config.gptq_act_order,
    )
    for group in LLAMA.input_groups:
        xs = {n: [] for n in group}
        observe_inputs(block, {n: xs[n].append for n in group}, inputs)
        for n in group:
            acc = HessianAccumulator(linear(block, n).in_features)
            for x in xs[n]:
                acc.add_batch(x)
            lin = linear(block, n)
            lin.weight.data = gptq_quantize(lin.weight.data, acc.hessian(), gcfg)


@pytest.mark.parametrize("act_order", [False, True])
def test_awq_gptq_block_matches_naive_sequential_rebuild(act_order):
    config = AWQConfig(
        3, 16, clip=False, solver="gptq", gptq_percdamp=0.05, gptq_act_order=act_order
    )
    model = tiny_llama(seed=6)
    inputs = capture_block_inputs(model, model.layers, calib_tokens(6), 3)
    fast, ref = model.layers[0], copy.deepcopy(model.layers[0])
    awq_block(fast, LLAMA, inputs, config)
    _naive_awq_gptq(ref, inputs, config)
    for (name, p), q in zip(fast.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("clip", [False, True])
def test_awq_gptq_block_error_at_most_awq_rtn(clip):
    model = tiny_llama(seed=7)
    inputs = capture_block_inputs(model, model.layers, calib_tokens(8), 4)
    errs = {}
    for solver in ("rtn", "gptq"):
        block = copy.deepcopy(model.layers[0])
        ref = torch.cat(run_block(block, inputs))
        awq_block(block, LLAMA, inputs, AWQConfig(3, 16, clip=clip, solver=solver))
        errs[solver] = float((torch.cat(run_block(block, inputs)) - ref).pow(2).mean())
    assert errs["gptq"] <= errs["rtn"]


@pytest.mark.parametrize(
    "kw",
    [
        {"scale_search": "w"},
        {"solver": "obq"},
        {"gptq_percdamp": 0.0},
        {"search_tokens": 0},
        {"clip_mode": "x"},
    ],
)
def test_awq_config_rejects_bad_options(kw):
    with pytest.raises(ConfigError):
        AWQConfig(**kw)


def _group_errors(w, q, x, gs):
    """Partial-output MSE of each (row, group): ``x_g @ (w_g - q_g)``, by plain loops."""
    out = torch.zeros(w.shape[0], w.shape[1] // gs)
    for r in range(w.shape[0]):
        for g in range(w.shape[1] // gs):
            cols = slice(g * gs, (g + 1) * gs)
            out[r, g] = (x[:, cols] @ (w[r, cols] - q[r, cols])).pow(2).mean()
    return out


def _brute_force_sym(w, x, c):
    """llm-awq's search by loops: every row and group, every shrink step, first minimum."""
    best = torch.zeros(w.shape[0], w.shape[1] // c.group_size)
    for step in range(int(c.clip_max_shrink * c.clip_grid)):
        mx = grouped(w, c.group_size).abs().amax(-1, keepdim=True) * (1 - step / c.clip_grid)
        q = rtn_quantize(clip_weight(w, mx, c.group_size), RTNConfig(c.bits, c.group_size))
        err = _group_errors(w, q, x, c.group_size)
        best = err if step == 0 else torch.minimum(best, err)
    return best


@pytest.mark.parametrize("seed", range(3))
def test_clip_search_reaches_brute_force_minimum_and_asym_never_worse(seed):
    g = torch.Generator().manual_seed(seed)
    w, x = torch.randn(6, 32, generator=g) + 0.3, outlier_x(g)
    errs = {}
    for mode in ("sym", "asym"):
        c = AWQConfig(3, 8, clip_mode=mode)
        lo, hi = search_clip_range(w, x, c)
        q = rtn_quantize(clip_weight(w, hi, 8, lo), RTNConfig(3, 8))
        errs[mode] = _group_errors(w, q, x, 8)
    torch.testing.assert_close(errs["sym"], _brute_force_sym(w, x, AWQConfig(3, 8)))
    assert (errs["asym"] <= errs["sym"] * (1 + 1e-5)).all()
    assert errs["asym"].sum() < errs["sym"].sum()  # the refinement does find something here


def outlier_x(g):
    x = torch.randn(128, 32, generator=g)
    x[:, :3] *= 10
    return x


def test_return_freed_memory_gives_large_frees_back() -> None:
    """After the call, memory freed in 2 MiB pieces leaves the resident set (Linux/glibc)."""
    import platform

    from slimtorch.llm.compress.api import return_freed_memory

    if platform.system() != "Linux" or not return_freed_memory():
        pytest.skip("glibc only")

    def rss_kib() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

    before = rss_kib()
    chunks = [torch.ones(512 * 1024) for _ in range(64)]  # 64 x 2 MiB, touched
    grown = rss_kib()
    del chunks
    assert grown - before > 100_000  # the allocation was resident
    assert rss_kib() - before < 20_000  # and it is gone again
