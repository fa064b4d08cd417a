"""The pruning verb: ``prune_model(model, config, train, val, test)``.

Calibrate (criteria statistics on a few training batches), solve (per-layer masks), apply
(weights zeroed, masks kept through fine-tuning by :class:`~slimtorch.prune.apply.MaskKeeper`),
on the schedule the config names; the returned model is permanent (plain zeros, no hooks).

Example:
    >>> import torch
    >>> from slimtorch.prune.config import PruneConfig
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> data = [(torch.randn(8, 1, 2, 2), torch.randint(0, 3, (8,)))]
    >>> result = prune_model(model, PruneConfig(sparsity=0.5), data)
    >>> int((model[1].weight == 0).sum())
    6
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slimtorch.core.granularity import NM, PerChannel
from slimtorch.core.trace import trace_model
from slimtorch.prune import criteria, second_order
from slimtorch.prune.allocate import layer_sparsities, prunable_layers
from slimtorch.prune.apply import MaskKeeper, Masks, make_permanent
from slimtorch.prune.config import PruneConfig
from slimtorch.prune.masks import global_masks, granular_mask
from slimtorch.prune.obs import Batches, execution_order, first_batches
from slimtorch.prune.report import PruneReport, build_report
from slimtorch.prune.schedule import gradual_plan, iterative_sparsities, zhu_gupta_sparsity
from slimtorch.train import FitConfig, evaluate, fit

Layers = dict[str, nn.Module]


@dataclass(frozen=True)
class PruneResult:
    """The pruned model (same object, masks baked in), its masks and the report."""

    model: nn.Module
    masks: Masks
    report: PruneReport


def select_layers(model: nn.Module, config: PruneConfig, example: Tensor) -> Layers:
    """The layers to prune; at output-channel granularity the model's last layer is kept
    (its output channels are the classes)."""
    layers = prunable_layers(model, config.exclude)
    if config.granularity == PerChannel(0):
        order = [n for n in execution_order(model, example) if n in layers]
        if order and len(layers) > 1:
            layers.pop(order[-1])
    return layers


def element_scores(
    model: nn.Module, layers: Layers, config: PruneConfig, calib: list
) -> dict[str, Tensor]:
    """Element scores (higher = keep) of each layer's weight by ``config.criterion``."""
    c, n = config.criterion, config.calib_batches
    if c in ("l1", "l2", "linf"):
        p = {"l1": 1.0, "l2": 2.0, "linf": 1.0}[c]
        return {k: criteria.magnitude_scores(m.weight, p) for k, m in layers.items()}
    if c == "random":
        gen = torch.Generator().manual_seed(config.seed)
        return {k: torch.rand(m.weight.shape, generator=gen) for k, m in layers.items()}
    if c == "bn_gamma":
        return criteria.bn_gamma_scores(model, layers, calib[0][0][:1])
    if c == "apoz":
        return criteria.apoz_scores(model, layers, calib, n)
    if c == "taylor":
        return criteria.taylor_scores(model, layers, calib, n)
    estimate = second_order.fisher_diagonal if c == "obd_fisher" else None
    estimate = estimate or second_order.hutchinson_diagonal
    diag = estimate(model, layers, calib, n)
    return {k: second_order.obd_scores(m.weight, diag[k]) for k, m in layers.items()}


def compute_masks(
    model: nn.Module,
    layers: Layers,
    sparsities: dict[str, float],
    config: PruneConfig,
    calib: list,
    prior: Masks | None = None,
) -> Masks:
    """Parameter masks for ``layers`` at ``sparsities`` (OBS and regression also update the
    kept weights in place). ``prior`` masks stay pruned (iterative schedules)."""
    # deferred: regression imports sklearn.linear_model (lars_path_gram), which adds 0.65 s to
    # importing slimtorch (python -X importtime); only the regression criteria use it
    from slimtorch.prune.regression import regression_prune_layers

    g, c = config.granularity, config.criterion
    if c == "obs":
        layer_masks = second_order.obs_prune_layers(model, sparsities, calib, config.calib_batches)
    elif c.startswith("regression"):
        method = c.split("_", 1)[1]
        layer_masks = regression_prune_layers(
            model, sparsities, calib, config.calib_batches, method
        )
    else:
        scores = element_scores(model, layers, config, calib)
        for k in scores if prior else ():
            scores[k] = scores[k].masked_fill(~prior[f"{k}.weight"], -torch.inf)
        reduce = "max" if c == "linf" else ("mean" if config.allocation == "global" else "sum")
        if config.allocation == "global" and not isinstance(g, NM):
            sparsity = max(sparsities.values())
            layer_masks = dict(
                zip(layers, global_masks(list(scores.values()), g, sparsity, reduce), strict=True)
            )
        else:
            layer_masks = {k: granular_mask(scores[k], g, sparsities[k], reduce) for k in layers}
    return _param_masks(layers, layer_masks, g)


def _param_masks(layers: Layers, layer_masks: dict[str, Tensor], g: object) -> Masks:
    masks = {}
    for k, m in layer_masks.items():
        masks[f"{k}.weight"] = m
        bias = getattr(layers[k], "bias", None)
        if g == PerChannel(0) and bias is not None:
            masks[f"{k}.bias"] = m.reshape(m.shape[0], -1).any(dim=1)  # a removed filter's bias
    return masks


def _finetune(
    model: nn.Module, keeper: MaskKeeper, config: PruneConfig, train: Batches, val, epochs: int,
    after_step: Callable[[nn.Module], None] | None = None, progress: bool = False,
    label: str = "prune finetune",
) -> None:  # fmt: skip
    if epochs < 1:
        return
    fit_cfg = FitConfig(epochs=epochs, lr=config.lr, scheduler=config.scheduler, seed=config.seed)
    fit(
        model, train, val, fit_cfg, progress=progress, label=label,
        after_backward=keeper.after_backward, after_step=after_step or keeper.after_step,
    )  # fmt: skip


def _accuracy(model: nn.Module, loader: Batches | None) -> float | None:
    return None if loader is None else evaluate(model, loader).accuracy


def _gradual(model, layers, sparsities, config, calib, keeper, train, val, progress, label) -> None:
    """Zhu & Gupta: masks follow the cubic ramp while fine-tuning."""
    total = config.finetune_epochs * len(train)
    begin, freq = gradual_plan(total, config.iterations)
    step = {"t": 0, "s": -1.0}

    def after_step(m: nn.Module) -> None:
        step["t"] += 1
        frac = zhu_gupta_sparsity(step["t"], 1.0, begin, config.iterations, freq)
        if frac != step["s"]:
            step["s"] = frac
            scaled = {k: s * frac for k, s in sparsities.items()}
            keeper.update(compute_masks(model, layers, scaled, config, calib, keeper.masks))
        keeper.after_step(m)

    epochs = config.finetune_epochs
    _finetune(model, keeper, config, train, val, epochs, after_step, progress, f"{label} finetune")


def prune_model(
    model: nn.Module,
    config: PruneConfig,
    train_loader: Batches,
    val_loader: Batches | None = None,
    test_loader: Batches | None = None,
    progress: bool = False,
    sparsities: dict[str, float] | None = None,
    label: str = "prune",
) -> PruneResult:
    """Prune ``model`` in place as ``config`` says; fine-tune with masks kept; bake them in.

    Args:
        model: a trained classifier.
        config: the pruning config.
        train_loader: calibration data (first ``config.calib_batches``) and fine-tuning data.
        val_loader: validation data for fine-tuning.
        test_loader: if given, accuracy is reported before, after pruning and after fine-tuning.
        progress: progress bars while fine-tuning.
        sparsities: explicit per-layer ratios (e.g. a sensitivity proposal); default: from
            ``config.sparsity`` and ``config.layers``.
        label: leads the fine-tuning's progress lines, with the round of an iterative
            schedule (``"prune 2/3 finetune epoch 1/4: ..."``).

    Returns:
        ``PruneResult(model, masks, report)``.
    """
    calib = list(first_batches(train_loader, config.calib_batches))
    example = calib[0][0][:1]
    layers = select_layers(model, config, example)
    if sparsities is None:
        sparsities = layer_sparsities(list(layers), config.sparsity, config.layers)
    layers = {k: v for k, v in layers.items() if k in sparsities}
    before = _snapshot(model, example, test_loader)
    keeper = MaskKeeper(model, {f"{k}.weight": torch.ones_like(m.weight, dtype=torch.bool)
                                for k, m in layers.items()})  # fmt: skip
    acc_pruned = None
    with keeper:
        if config.schedule == "gradual" and not isinstance(config.granularity, NM):
            _gradual(model, layers, sparsities, config, calib, keeper, train_loader, val_loader,
                     progress, label)  # fmt: skip
        else:
            rounds = config.iterations if config.schedule == "iterative" else 1
            for k in range(rounds):
                frac = [iterative_sparsities(s, rounds)[k] for s in sparsities.values()]
                step = dict(zip(sparsities, frac, strict=True))
                keeper.update(compute_masks(model, layers, step, config, calib, keeper.masks))
                acc_pruned = _accuracy(model, test_loader)
                epochs = config.finetune_epochs
                name = f"{label} {k + 1}/{rounds} finetune" if rounds > 1 else f"{label} finetune"
                _finetune(model, keeper, config, train_loader, val_loader, epochs, None, progress,
                          name)  # fmt: skip
    make_permanent(model, keeper.masks)
    report = build_report(
        before, model, example, keeper.masks, config,
        acc_pruned=acc_pruned, acc_finetuned=_accuracy(model, test_loader)
        if config.finetune_epochs > 0 else None,
    )  # fmt: skip
    return PruneResult(model, keeper.masks, report)


def _snapshot(model: nn.Module, example: Tensor, test_loader: Batches | None) -> dict:
    trace = trace_model(model, example)
    return {"trace": trace, "accuracy": _accuracy(model, test_loader)}
