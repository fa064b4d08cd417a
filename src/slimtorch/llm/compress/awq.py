"""AWQ (Lin et al. 2024): protect the weights that see large activations by scaling them up
before rounding, then shrink each group's range where clipping lowers the output error.

For each group of linears sharing an input (the table in ``arch``), with ``s_X`` the mean
``|x|`` of each input channel, try ``s = s_X^alpha`` for ``alpha`` on a grid in [0, 1) (scales
normalised so ``sqrt(max * min) = 1``), quantize ``W * s`` and measure the output error of the
inspected module with the weights ``Q(W * s) / s``. The best ``s`` is folded into the preceding
norm or linear (``prev /= s``, ``W *= s``: exact in fp32). Then for every linear (but q/k) and
every output group, the clipping search tries ``max |w|`` shrunk by up to ``clip_max_shrink``
and keeps the value with the lowest error of that group's partial output.
``alpha = 0`` and no shrink are on the grids, so on the calibration data neither step can end
worse than round-to-nearest for the loss it measures.

Options (``AWQConfig``): ``scale_search="duo"`` or ``"both"`` adds AutoAWQ's candidates
``s_X^alpha / s_W^(1-alpha)``; ``clip_mode="asym"`` refines each group's maximum and minimum
separately (``awq_clip``); ``solver="gptq"`` rounds the scaled weights with GPTQ (Hessians
taken input group by input group, earlier groups already quantized) on the grid the clipping
search chose, instead of round-to-nearest. On SmolLM2-135M with in-domain calibration the last
two together are what reaches a third of llama.cpp Q4_0's loss at 4.5 bits (BENCHMARKS.md).

Example:
    >>> import torch
    >>> from slimtorch.llm.compress.config import AWQ_SEARCH_TOKENS, AWQConfig
    >>> torch.manual_seed(0) and None
    >>> x = torch.randn(64, 16) * torch.linspace(0.1, 10, 16)
    >>> w = torch.randn(8, 16)
    >>> cfg = AWQConfig(group_size=8)
    >>> s, ratio, loss = search_scale(activation_scale(x), [w], layer_loss(x, [w]), cfg)
    >>> s.shape, 0.0 <= ratio < 1.0
    (torch.Size([16]), True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import nn

from slimtorch.llm.compress.arch import ArchSpec, linear
from slimtorch.llm.compress.awq_clip import clip_grid_params, clip_searched
from slimtorch.llm.compress.calibrate import BlockInputs, observe_inputs, record_many, subsample
from slimtorch.llm.compress.config import AWQ_SEARCH_TOKENS, AWQConfig, GPTQConfig
from slimtorch.llm.compress.gptq import gptq_quantize
from slimtorch.llm.compress.rtn import rtn_quantize
from slimtorch.quantize.calibration import AbsMeanAccumulator, HessianAccumulator
from slimtorch.quantize.granularity import grouped, ungrouped

MIN_SCALE = 1e-4  # llm-awq clamps s_X^alpha from below before normalising
W_EPS = 1e-6  # AutoAWQ: |w| / (group max |w| + 1e-6) in the duo-scaling weight statistic
# The search only ranks 20 grid points; a subsample keeps its cost independent of
# --n-samples (the default of AWQConfig.search_tokens).
SEARCH_TOKENS = AWQ_SEARCH_TOKENS

LossFn = Callable[[Sequence[torch.Tensor]], float]


def activation_scale(x: torch.Tensor) -> torch.Tensor:
    """Mean ``|x|`` of each input channel over all tokens (``(..., in)`` -> ``(in,)``).

    Example:
        >>> activation_scale(torch.tensor([[1.0, -2.0], [3.0, 0.0]]))
        tensor([2., 1.])
    """
    return x.reshape(-1, x.shape[-1]).abs().float().mean(0)


def weight_scale(weights: Sequence[torch.Tensor], group_size: int | None) -> torch.Tensor:
    """AutoAWQ's ``s_W``: mean over the output rows of ``|w|`` divided by its group's max.

    Args:
        weights: the linears' weights ``(out_k, in)`` sharing one input.
        group_size: quantization group size (None: whole rows).

    Returns:
        ``(in,)``.

    Example:
        >>> weight_scale([torch.tensor([[1.0, -2.0], [4.0, 0.0]])], None)
        tensor([0.7500, 0.5000])
    """
    w = torch.cat(list(weights)).abs()
    wg = grouped(w, group_size)
    return ungrouped(wg / (wg.amax(dim=-1, keepdim=True) + W_EPS), w.shape[1]).mean(0)


def candidate_scale(
    x_mean: torch.Tensor, alpha: float, w_mean: torch.Tensor | None = None
) -> torch.Tensor:
    """``s_X^alpha`` (or AutoAWQ's ``s_X^alpha / s_W^(1-alpha)`` when ``w_mean`` is given),
    clamped and normalised so that ``sqrt(max(s) * min(s)) = 1``.

    Example:
        >>> candidate_scale(torch.tensor([1.0, 4.0]), 1.0)
        tensor([0.5000, 2.0000])
        >>> s = candidate_scale(torch.tensor([1.0, 1.0]), 0.0, torch.tensor([1.0, 4.0]))
        >>> torch.allclose(s, torch.tensor([2.0, 0.5]), atol=1e-3)
        True
    """
    s = x_mean.pow(alpha)
    if w_mean is not None:
        s = s / (w_mean.pow(1 - alpha) + MIN_SCALE)
    s = s.clamp(min=MIN_SCALE)
    return s / (s.max() * s.min()).sqrt()


def candidate_scales(
    x_mean: torch.Tensor, weights: Sequence[torch.Tensor], config: AWQConfig
) -> list[tuple[torch.Tensor, float]]:
    """Every ``(s, alpha)`` the scale search tries, as ``config.scale_search`` asks.

    Example:
        >>> w = [torch.ones(2, 4)]
        >>> len(candidate_scales(torch.ones(4), w, AWQConfig(scale_grid=5, scale_search="both")))
        10
    """
    alphas = [i / config.scale_grid for i in range(config.scale_grid)]
    out = []
    if config.scale_search in ("x", "both"):
        out += [(candidate_scale(x_mean, a), a) for a in alphas]
    if config.scale_search in ("duo", "both"):
        w_mean = weight_scale(weights, config.group_size)
        out += [(candidate_scale(x_mean, a, w_mean), a) for a in alphas]
    return out


def scaled_quantize(w: torch.Tensor, s: torch.Tensor, config: AWQConfig) -> torch.Tensor:
    """``Q(W * s) / s``: the weight the model computes with once ``s`` is folded and ``W * s``
    is quantized (``s`` scales input columns)."""
    return rtn_quantize(w * s[None, :], config.rtn()) / s[None, :]


def layer_loss(x: torch.Tensor, weights: Sequence[torch.Tensor]) -> LossFn:
    """Loss of candidate weights for plain linears on inputs ``x``: output MSE summed over them.

    Example:
        >>> layer_loss(torch.ones(1, 2), [torch.eye(2)])([torch.zeros(2, 2)])
        1.0
    """
    refs = [x @ w.T for w in weights]
    return lambda cand: sum(
        float((x @ c.T - r).pow(2).mean()) for c, r in zip(cand, refs, strict=True)
    )


def search_scale(
    x_mean: torch.Tensor, weights: Sequence[torch.Tensor], loss: LossFn, config: AWQConfig
) -> tuple[torch.Tensor, float, float]:
    """Grid search of ``alpha`` for the linears sharing one input.

    Args:
        x_mean: mean ``|x|`` per input channel.
        weights: the linears' weights ``(out_k, in)``.
        loss: output error of candidate (scaled, quantized, unscaled) weights.
        config: grid and quantization settings.

    Returns:
        ``(s, alpha, loss)`` of the best grid point.
    """
    best: tuple[torch.Tensor, float, float] | None = None
    for s, alpha in candidate_scales(x_mean, weights, config):
        err = loss([scaled_quantize(w, s, config) for w in weights])
        if best is None or err < best[2]:
            best = (s, alpha, err)
    assert best is not None
    return best


def fold_scales(prev: nn.Module, linears: Sequence[nn.Linear], s: torch.Tensor) -> None:
    """Divide ``prev``'s output channels by ``s`` and multiply the linears' inputs by it.

    ``prev`` is a norm (1-D ``weight``, optional ``bias``) or a linear (rows divided).
    """
    with torch.no_grad():
        if isinstance(prev, nn.Linear):
            prev.weight.div_(s[:, None])
        else:
            prev.weight.div_(s)
        if getattr(prev, "bias", None) is not None:
            prev.bias.div_(s)
        for lin in linears:
            lin.weight.mul_(s[None, :])


def awq_quantize_layer(w: torch.Tensor, x: torch.Tensor, config: AWQConfig) -> torch.Tensor:
    """AWQ on one linear with inputs ``x``: scale search, clipping search, rounding.

    The result is expressed in the original basis (``Q(clip(W s)) / s``), i.e. the weight the
    layer effectively computes with once ``s`` has been folded into what precedes it.

    Args:
        w: weight ``(out, in)``.
        x: calibration inputs ``(tokens, in)``.
        config: AWQ settings.

    Returns:
        The effective quantized weight.
    """
    s, _, _ = search_scale(activation_scale(x), [w], layer_loss(x, [w]), config)
    ws, xs = w * s[None, :], x / s[None, :]
    if config.clip:
        stride = max(1, x.shape[0] // config.clip_tokens)
        ws = clip_searched(ws, xs[::stride], config)
    return rtn_quantize(ws, config.rtn()) / s[None, :]


def _group_loss(inspect: nn.Module, calls: list, lins: list[nn.Linear]) -> LossFn:
    """Output MSE of ``inspect`` over recorded ``calls`` with candidate weights swapped in;
    the fp32 reference outputs are computed once."""
    refs = [inspect(*a, **k) for a, k in calls]
    originals = [lin.weight.data for lin in lins]

    def loss(cand: Sequence[torch.Tensor]) -> float:
        for lin, w in zip(lins, cand, strict=True):
            lin.weight.data = w
        try:
            total = sum(
                float((inspect(*a, **k) - r).pow(2).sum())
                for (a, k), r in zip(calls, refs, strict=True)
            )
        finally:
            for lin, w in zip(lins, originals, strict=True):
                lin.weight.data = w
        return total / sum(r.numel() for r in refs)

    return loss


def input_means(block: nn.Module, names: Sequence[str], inputs: BlockInputs) -> dict:
    """Mean ``|x|`` per input channel of each named submodule, over every calibration token,
    accumulated in one block run without keeping the activations.

    Example:
        >>> blk = nn.Sequential(nn.Linear(2, 2))
        >>> input_means(blk, ["0"], BlockInputs([torch.tensor([[[1.0, -3.0]]])], (), {}))
        {'0': tensor([1., 3.])}
    """
    accs = {n: AbsMeanAccumulator() for n in names}
    observe_inputs(block, {n: acc.add_batch for n, acc in accs.items()}, inputs)
    return {n: acc.mean() for n, acc in accs.items()}


def _out_width(prev: nn.Module) -> int:
    return prev.out_features if isinstance(prev, nn.Linear) else int(prev.weight.shape[0])


@torch.no_grad()
def awq_scale_block(
    block: nn.Module,
    spec: ArchSpec,
    inputs: BlockInputs,
    config: AWQConfig,
    search_tokens: int | None = None,
) -> dict[str, float]:
    """Search and fold the scales of every scaling group of one block; returns alpha per group.

    ``s_X`` comes from every token; the inspected modules' inputs are recorded once, before
    any folding, on a subsample of ``search_tokens`` (folding is exact in fp32 and only
    changes the folded group's own linears' inputs, so later groups see the same inputs).
    """
    groups = []
    for group in spec.scale_groups:
        prev, lins = block.get_submodule(group.prev), [linear(block, n) for n in group.linears]
        if _out_width(prev) == lins[0].in_features:  # skips e.g. wv -> wo under GQA
            groups.append((group, prev, lins))
    names = list(dict.fromkeys(g.inspect for g, _, _ in groups))
    means = input_means(block, names, inputs)
    calls = record_many(block, names, subsample(inputs, search_tokens or config.search_tokens))
    report: dict[str, float] = {}
    for group, prev, lins in groups:
        loss = _group_loss(block.get_submodule(group.inspect), calls[group.inspect], lins)
        weights = [lin.weight.data for lin in lins]
        s, alpha, _ = search_scale(means[group.inspect], weights, loss, config)
        fold_scales(prev, lins, s)
        report[group.prev] = alpha
    return report


def _clip_samples(
    block: nn.Module, names: Sequence[str], inputs: BlockInputs, config: AWQConfig
) -> dict[str, torch.Tensor]:
    """Up to ``clip_tokens`` inputs of each named linear, strided over ``inputs``."""
    if not names:
        return {}
    stride = max(1, inputs.tokens() // config.clip_tokens)
    samples: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    observers = {
        n: (lambda x, n=n: samples[n].append(x.reshape(-1, x.shape[-1])[::stride])) for n in names
    }
    observe_inputs(block, observers, inputs)
    return {n: torch.cat(v)[: config.clip_tokens] for n, v in samples.items()}


def _round_gptq(block: nn.Module, spec: ArchSpec, inputs: BlockInputs, config: AWQConfig) -> None:
    """GPTQ rounding of the (scaled) block, input group by input group: each group's
    Hessians (and clipping samples) are taken with the earlier groups already quantized."""
    gcfg = GPTQConfig(
        config.bits,
        config.group_size,
        config.symmetric,
        percdamp=config.gptq_percdamp,
        act_order=config.gptq_act_order,
    )
    sub = subsample(inputs, config.search_tokens)
    for group in spec.input_groups:
        lins = {n: linear(block, n) for n in group}
        accs = {n: HessianAccumulator(lin.in_features) for n, lin in lins.items()}
        observe_inputs(block, {n: acc.add_batch for n, acc in accs.items()}, inputs)
        clip_names = [n for n in group if n not in spec.no_clip] if config.clip else []
        xs = _clip_samples(block, clip_names, sub, config)
        for n, lin in lins.items():
            grid = clip_grid_params(lin.weight.data, xs[n], config) if n in xs else None
            lin.weight.data = gptq_quantize(lin.weight.data, accs[n].hessian(), gcfg, grid)


@torch.no_grad()
def awq_block(
    block: nn.Module,
    spec: ArchSpec,
    inputs: BlockInputs,
    config: AWQConfig,
    search_tokens: int | None = None,
) -> dict[str, float]:
    """AWQ on one block in place: scales, folding, clipping search, then rounding
    (round-to-nearest, or GPTQ on the clipped grid when ``config.solver == "gptq"``).

    Args:
        block: the transformer block.
        spec: its architecture table.
        inputs: its calibration inputs.
        config: AWQ settings.
        search_tokens: overrides ``config.search_tokens``.

    Returns:
        The chosen alpha per scaling group (keyed by the group's ``prev``).
    """
    config = replace(config, search_tokens=search_tokens or config.search_tokens)
    report = awq_scale_block(block, spec, inputs, config, config.search_tokens)
    if config.solver == "gptq":
        _round_gptq(block, spec, inputs, config)
        return report
    clip_names = [n for n in spec.linears if n not in spec.no_clip] if config.clip else []
    xs = _clip_samples(block, clip_names, subsample(inputs, config.search_tokens), config)
    for name in spec.linears:
        lin = linear(block, name)
        w = lin.weight.data
        if name in xs:
            w = clip_searched(w, xs[name], config)
        lin.weight.data = rtn_quantize(w, config.rtn())
    return report
