"""Calibration observers: forward hooks that gather statistics for the pruning criteria.

Statistics come from small observer objects attached with forward hooks (calibrate), a solver
turns them into scores (solve), and masks are applied separately (apply). Observers here:

- :func:`execution_order`: leaf modules in the order one forward pass runs them, used to find
  the normalization or activation that follows a layer without per-model rules;
- :class:`ZeroCounter`: APoZ (average percentage of zeros) per channel of a module's output;
- :func:`layer_hessians`: the layer-wise Hessian ``2 X X^T / n`` of Linear/Conv2d layers'
  inputs (im2col columns for a convolution), accumulated by
  ``slimtorch.quantize.calibration.HessianAccumulator`` (OBS, regression pruning);
- :class:`InputSampler`: a bounded sample of a layer's input columns (regression pruning).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimtorch.errors import ConfigError
from slimtorch.quantize.calibration import HessianAccumulator, Observer

Batches = Iterable[Sequence[Tensor]]


def first_batches(loader: Batches, limit: int | None) -> Iterator[Sequence[Tensor]]:
    """At most ``limit`` batches of ``loader`` (all of them when ``limit`` is None)."""
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            return
        yield batch


@contextmanager
def forward_hooks(hooks: dict[nn.Module, object]) -> Iterator[None]:
    """Attach ``hook(module, inputs, output)`` callables for the duration of the block."""
    handles = [m.register_forward_hook(h) for m, h in hooks.items()]  # type: ignore[arg-type]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_batches(model: nn.Module, batches: Batches, limit: int | None = None) -> int:
    """Forward passes in eval mode without gradients; returns the number of samples seen."""
    was_training, n = model.training, 0
    model.eval()
    try:
        with torch.no_grad():
            for x, *_ in first_batches(batches, limit):
                model(x)
                n += int(x.shape[0])
    finally:
        model.train(was_training)
    if n == 0:
        raise ConfigError("calibration: the loader yielded no samples")
    return n


def execution_order(model: nn.Module, example: Tensor) -> list[str]:
    """Qualified names of leaf modules in the order one forward pass on ``example`` runs them.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> execution_order(m, torch.zeros(1, 2))
        ['0', '1', '2']
    """
    order: list[str] = []
    leaves = {m: n for n, m in model.named_modules() if not list(m.children())}

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        order.append(leaves[module])

    with forward_hooks({m: hook for m in leaves}):
        run_batches(model, [(example,)])
    return order


def following_module(
    model: nn.Module,
    order: Sequence[str],
    layer: str,
    kinds: tuple[type[nn.Module], ...],
    channels: int,
) -> str | None:
    """The first module of ``kinds`` run after ``layer`` and before the next conv/linear.

    Args:
        model: the model.
        order: its :func:`execution_order`.
        layer: a conv/linear layer's qualified name.
        kinds: module types to look for (e.g. BatchNorm, or activations).
        channels: the layer's output channels; a BatchNorm must normalize that many.

    Returns:
        The module's name, or None when another conv/linear runs first.
    """
    modules = dict(model.named_modules())
    if layer not in order:
        return None
    for name in order[order.index(layer) + 1 :]:
        module = modules[name]
        if isinstance(module, kinds):
            features = getattr(module, "num_features", channels)
            return name if features == channels else None
        if isinstance(module, nn.Conv2d | nn.Linear):
            return None
    return None


class ZeroCounter:
    """APoZ of a module's output per channel (dim 1): the fraction of exact zeros."""

    def __init__(self) -> None:
        self.zeros: Tensor | None = None
        self.count = 0

    def __call__(self, module: nn.Module, inputs: object, output: Tensor) -> None:
        out = output.detach()  # [N, C, ...]
        dims = [d for d in range(out.ndim) if d != 1]
        zeros = (out == 0).sum(dim=dims).double()  # [C]
        self.zeros = zeros if self.zeros is None else self.zeros + zeros
        self.count += out.numel() // out.shape[1]

    def apoz(self) -> Tensor:
        """Fraction of zeros per channel, ``[C]`` (float64)."""
        if self.zeros is None:
            raise ConfigError("APoZ: the observed module never ran")
        return self.zeros / self.count


def input_columns(layer: nn.Module, x: Tensor) -> Tensor:
    """The layer's input as columns ``[features, samples]`` (im2col for a Conv2d).

    For ``Linear`` the features are ``in_features``; for ``Conv2d`` (groups = 1) they are
    ``in_channels * kh * kw`` in the order of ``weight.reshape(out, -1)``.
    """
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1]).T  # [in, N]
    if isinstance(layer, nn.Conv2d) and layer.groups == 1:
        cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return cols.permute(1, 0, 2).reshape(cols.shape[1], -1)  # [in*kh*kw, N*L]
    raise ConfigError(
        f"layer-wise statistics need a Linear or an ungrouped Conv2d, got {type(layer).__name__}"
    )


def observe_layer_inputs(
    model: nn.Module,
    observers: dict[str, Observer],
    batches: Batches,
    limit: int | None = None,
) -> None:
    """Run the calibration batches once, each named layer's input columns (``[samples,
    features]``, im2col for a convolution) going to its observer's ``add_batch``.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 1))
        >>> acc = HessianAccumulator(2)
        >>> observe_layer_inputs(m, {"0": acc}, [(torch.tensor([[1.0, 0.0]]),)])
        >>> acc.hessian().round(decimals=4).tolist()
        [[2.0, 0.0], [0.0, 0.0]]
    """
    modules = dict(model.named_modules())

    def feed(layer: nn.Module, observer: Observer) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: object) -> None:
            observer.add_batch(input_columns(layer, inputs[0].detach()).T)

        return hook

    with forward_hooks({modules[n]: feed(modules[n], o) for n, o in observers.items()}):
        run_batches(model, batches, limit)


def layer_hessians(
    model: nn.Module, names: Sequence[str], batches: Batches, limit: int | None = None
) -> dict[str, HessianAccumulator]:
    """Float64 :class:`~slimtorch.quantize.calibration.HessianAccumulator` of each named
    Linear/Conv2d layer's input columns, over one pass of the calibration batches.

    Raises:
        ConfigError: a layer never ran on the calibration data.
    """
    modules = dict(model.named_modules())
    accs = {n: HessianAccumulator(modules[n].weight[0].numel(), dtype=torch.float64) for n in names}
    observe_layer_inputs(model, dict(accs), batches, limit)
    for name, acc in accs.items():
        if acc.count == 0:
            raise ConfigError(f"layer {name!r} never ran on the calibration data")
    return accs


class InputSampler:
    """Keeps up to ``max_columns`` input columns of a layer (seeded random subset per batch)."""

    def __init__(self, layer: nn.Module, max_columns: int = 4096, seed: int = 0) -> None:
        self.layer, self.max_columns = layer, max_columns
        self.generator = torch.Generator().manual_seed(seed)
        self.parts: list[Tensor] = []
        self.kept = 0

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...], output: object) -> None:
        cols = input_columns(self.layer, inputs[0].detach()).double()  # [d, n]
        room = self.max_columns - self.kept
        if room <= 0:
            return
        if cols.shape[1] > room:
            pick = torch.randperm(cols.shape[1], generator=self.generator)[:room]
            cols = cols[:, pick]
        self.parts.append(cols)
        self.kept += cols.shape[1]

    def columns(self) -> Tensor:
        """The sampled columns ``[d, n]``."""
        if not self.parts:
            raise ConfigError("regression pruning: the layer never ran on the calibration data")
        return torch.cat(self.parts, dim=1)
