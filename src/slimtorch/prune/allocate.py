"""How much to prune where: which layers, and each layer's sparsity.

- :func:`prunable_layers`: every ``Linear`` and ``Conv2d`` (by ``isinstance``), minus
  ``exclude`` regexes;
- :func:`layer_sparsities`: a uniform ratio with per-layer overrides by qualified name or
  regex (full match; a pattern that matches no layer is an error);
- a global threshold across layers is :func:`slimtorch.prune.masks.global_masks`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn
from torch.nn.utils import parametrize

from slimtorch.errors import ConfigError
from slimtorch.prune.masks import check_sparsity

PRUNABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)


def prunable_layers(model: nn.Module, exclude: Sequence[str] = ()) -> dict[str, nn.Module]:
    """Qualified name -> every Linear/Conv2d not matched (full match) by an ``exclude`` regex.

    Raises:
        ConfigError: an exclude pattern matches no layer, a layer is reparametrized (weight
            norm), or nothing is left to prune.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> list(prunable_layers(m, exclude=["2"]))
        ['0']
    """
    layers = {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE)}
    for pattern in exclude:
        hits = [n for n in layers if re.fullmatch(pattern, n)]
        if not hits:
            raise ConfigError(f"exclude: {pattern!r} matches no layer of {', '.join(layers)}")
        for n in hits:
            layers.pop(n)
    for name, layer in layers.items():
        if parametrize.is_parametrized(layer):
            raise ConfigError(
                f"layer {name!r} is reparametrized (weight norm); pruning needs plain weights"
            )
    if not layers:
        raise ConfigError("no Linear or Conv2d layer is left to prune")
    return layers


def layer_sparsities(
    names: Sequence[str], default: float, overrides: dict[str, float] | None = None
) -> dict[str, float]:
    """Each layer's sparsity: ``default``, or the last override whose pattern matches it.

    Args:
        names: qualified layer names.
        default: the uniform ratio, in [0, 1).
        overrides: qualified name or regex (full match) -> ratio in [0, 1).

    Returns:
        name -> sparsity.

    Raises:
        ConfigError: a pattern matches no layer, or a ratio is outside [0, 1).

    Example:
        >>> layer_sparsities(["fc1", "fc2", "out"], 0.5, {"fc.*": 0.9, "out": 0.0})
        {'fc1': 0.9, 'fc2': 0.9, 'out': 0.0}
    """
    result = {n: check_sparsity(default) for n in names}
    for pattern, ratio in (overrides or {}).items():
        check_sparsity(ratio, f"layers[{pattern!r}]")
        hits = [n for n in names if n == pattern or re.fullmatch(pattern, n)]
        if not hits:
            raise ConfigError(
                f"layers: {pattern!r} matches no prunable layer; they are {', '.join(names)}"
            )
        for n in hits:
            result[n] = ratio
    return result
