"""Calibration observers: forward hooks that gather statistics for the pruning criteria.

Statistics come from small observer objects attached with forward hooks (calibrate), a solver
turns them into scores (solve), and masks are applied separately (apply). Observers here:

- :func:`execution_order`: leaf modules in the order one forward pass runs them, used to find
  the normalization or activation that follows a layer without per-model rules;
- :class:`ZeroCounter`: APoZ (average percentage of zeros) per channel of a module's output;
- :class:`InputGram`: the Gram matrix ``sum x x^T`` of a Linear/Conv2d layer's inputs
  (im2col columns for a convolution), the layer-wise Hessian of OBS;
- :class:`InputSampler`: a bounded sample of a layer's input columns (regression pruning).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimtorch.errors import ConfigError

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


class InputGram:
    """Accumulates ``G = sum_n x_n x_n^T`` over a layer's input columns (float64)."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.gram: Tensor | None = None
        self.count = 0

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...], output: object) -> None:
        cols = input_columns(self.layer, inputs[0].detach()).double()  # [d, n]
        g = cols @ cols.T
        self.gram = g if self.gram is None else self.gram + g
        self.count += cols.shape[1]

    def hessian(self) -> Tensor:
        """``2 G / n``: the Hessian of the mean squared output error in the weights of a row."""
        if self.gram is None:
            raise ConfigError("OBS: the layer never ran on the calibration data")
        return 2.0 * self.gram / self.count


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
