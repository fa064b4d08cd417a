"""The fast AWQ search (statistics in one pass, inspected inputs recorded once before folding,
loss on a subsample of whole sequences) against the slow sequential reference, and the
calibration helpers it uses against direct computations."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_compress_helpers import calib_tokens, tiny_llama

from slimtorch.llm.compress.arch import LLAMA, linear
from slimtorch.llm.compress.awq import (
    _group_loss,
    activation_scale,
    awq_scale_block,
    fold_scales,
    input_means,
    search_scale,
)
from slimtorch.llm.compress.calibrate import (
    BlockInputs,
    capture_block_inputs,
    record_calls,
    record_many,
    subsample,
)
from slimtorch.llm.compress.config import AWQConfig


@settings(max_examples=40, deadline=None)
@given(
    chunks=st.lists(st.integers(1, 5), min_size=1, max_size=5),
    seq=st.integers(1, 8),
    budget=st.integers(0, 200),
)
def test_subsample_keeps_whole_sequences_within_budget(chunks, seq, budget):
    hidden, start = [], 0
    for b in chunks:  # every sequence is filled with its own global index
        idx = torch.arange(start, start + b, dtype=torch.float32)
        hidden.append(idx[:, None, None].expand(b, seq, 2).clone())
        start += b
    sub = subsample(BlockInputs(hidden, (), {}), budget)
    kept = [float(v) for h in sub.hidden for v in h[:, 0, 0]]
    assert all(bool((h == h[:, :1, :1]).all()) for h in sub.hidden)  # whole sequences
    assert kept == sorted(set(kept))  # distinct, in calibration order
    assert len(kept) == min(start, max(1, budget // seq))
    if len(kept) > 1:
        assert kept[0] == 0 and kept[-1] == start - 1  # spread over the whole set


def test_record_many_equals_record_calls_and_input_means_equals_activation_scale():
    model = tiny_llama(seed=3)
    block = model.layers[0]
    inputs = capture_block_inputs(model, model.layers, calib_tokens(6), 4)
    names = ["attention", "feed_forward", "feed_forward.w2"]
    many = record_many(block, names, inputs)
    means = input_means(block, names, inputs)
    for name in names:
        one = record_calls(block, name, inputs)
        assert len(one) == len(many[name])
        for (a1, _), (a2, _) in zip(one, many[name], strict=True):
            torch.testing.assert_close(a1[0], a2[0])
        x = torch.cat([a[0].reshape(-1, a[0].shape[-1]) for a, _ in one])
        torch.testing.assert_close(means[name], activation_scale(x))


@torch.no_grad()
def _reference_scale_block(block, inputs, config):
    """The slow sequential search: re-record every group's inputs after the previous folds."""
    alphas = {}
    for group in LLAMA.scale_groups:
        prev, lins = block.get_submodule(group.prev), [linear(block, n) for n in group.linears]
        if getattr(prev, "out_features", lins[0].in_features) != lins[0].in_features:
            continue
        calls = record_calls(block, group.inspect, inputs)
        x_mean = activation_scale(torch.cat([a[0].reshape(-1, a[0].shape[-1]) for a, _ in calls]))
        loss = _group_loss(block.get_submodule(group.inspect), calls, lins)
        s, alpha, _ = search_scale(x_mean, [lin.weight.data for lin in lins], loss, config)
        fold_scales(prev, lins, s)
        alphas[group.prev] = alpha
    return alphas


def test_fast_scale_search_matches_sequential_reference_on_all_tokens():
    config = AWQConfig(3, 16)
    fast_model, ref_model = tiny_llama(seed=4), tiny_llama(seed=4)
    inputs = capture_block_inputs(fast_model, fast_model.layers, calib_tokens(8), 4)
    fast = awq_scale_block(fast_model.layers[0], LLAMA, inputs, config, search_tokens=10**9)
    ref = _reference_scale_block(ref_model.layers[0], inputs, config)
    assert fast == ref
    for (name, p), q in zip(
        fast_model.layers[0].named_parameters(), ref_model.layers[0].parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, msg=name)
