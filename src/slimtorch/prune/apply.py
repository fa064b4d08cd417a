"""Keep pruning masks through training, and make them permanent.

Masks are bool tensors keyed by **parameter** name (``"fc1.0.weight"``), ``True`` = kept.
:class:`MaskKeeper` keeps masked entries at exactly zero while ``fit`` trains:

- ``after_backward``: gradients are masked before the optimizer sees them;
- ``after_step``: weights are re-masked after the step;
- while the keeper is entered, an optimizer step post-hook (``torch.optim``'s public global
  hook, removed on exit) also masks the optimizer state of every masked parameter (momentum,
  Adam's moments), so a mask that changes mid-training (gradual pruning) leaves no stale
  momentum behind.

Example:
    >>> import torch
    >>> from slimtorch.train import FitConfig, fit
    >>> model = torch.nn.Linear(2, 2)
    >>> masks = {"weight": torch.tensor([[True, False], [False, True]])}
    >>> data = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
    >>> with MaskKeeper(model, masks) as keeper:
    ...     _ = fit(model, data, config=FitConfig(epochs=2), progress=False,
    ...             after_backward=keeper.after_backward, after_step=keeper.after_step)
    >>> (model.weight.detach() == 0).tolist()
    [[False, True], [True, False]]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from slimtorch.errors import ConfigError

Masks = dict[str, Tensor]


def _params(model: nn.Module, masks: Masks) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    missing = sorted(set(masks) - set(params))
    if missing:
        raise ConfigError(f"masks name parameters the model lacks: {', '.join(missing)}")
    for name, mask in masks.items():
        if mask.shape != params[name].shape:
            raise ConfigError(
                f"mask for {name} has shape {list(mask.shape)}, "
                f"the parameter {list(params[name].shape)}"
            )
    return {name: params[name] for name in masks}


def apply_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """Zero the masked entries of the model's parameters (in place); returns the model."""
    for name, p in _params(model, masks).items():
        with torch.no_grad():
            p.mul_(masks[name].to(p.dtype))
    return model


def make_permanent(model: nn.Module, masks: Masks) -> nn.Module:
    """Bake the masks into the weights: afterwards the model is an ordinary dense model whose
    pruned weights are zeros (saved and reloaded like any other)."""
    return apply_masks(model, masks)


class MaskKeeper:
    """Holds masks and keeps them applied to weights, gradients and optimizer state."""

    def __init__(self, model: nn.Module, masks: Masks) -> None:
        self.model = model
        self.masks: Masks = {}
        self.params: dict[str, nn.Parameter] = {}
        self._handle: Any = None
        self.update(masks)

    def update(self, masks: Masks) -> None:
        """Replace the masks (e.g. a new step of a gradual schedule) and apply them."""
        self.params = _params(self.model, masks)
        self.masks = {k: m.to(torch.bool) for k, m in masks.items()}
        self._by_param = {id(p): self.masks[n] for n, p in self.params.items()}
        apply_masks(self.model, self.masks)

    def after_backward(self, model: nn.Module) -> None:
        """Mask gradients (``fit``'s ``after_backward`` hook)."""
        for name, p in self.params.items():
            if p.grad is not None:
                p.grad.mul_(self.masks[name].to(p.grad.dtype))

    def after_step(self, model: nn.Module) -> None:
        """Re-mask weights (``fit``'s ``after_step`` hook)."""
        apply_masks(self.model, self.masks)

    def mask_optimizer_state(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        """Zero the masked entries of every same-shaped state tensor of masked parameters."""
        for group in optimizer.param_groups:
            for p in group["params"]:
                mask = self._by_param.get(id(p))
                state = optimizer.state.get(p, {})
                for value in state.values() if mask is not None else ():
                    if isinstance(value, Tensor) and value.shape == mask.shape:
                        value.mul_(mask.to(value.dtype))

    def __enter__(self) -> MaskKeeper:
        self._handle = register_optimizer_step_post_hook(self.mask_optimizer_state)
        apply_masks(self.model, self.masks)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
