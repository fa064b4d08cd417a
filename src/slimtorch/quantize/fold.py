"""Fold BatchNorm into the conv or linear layer that feeds it (inference statistics).

``BN(Wx + b) = gamma (Wx + b - mean) / sqrt(var + eps) + beta``, so with
``k = gamma / sqrt(var + eps)`` per output channel the pair equals one layer with
``W' = k W`` and ``b' = k (b - mean) + beta`` (Jacob et al. 2018, Sec. 3.2). Pairs are found
in the model's graph (``torch.fx``): a BatchNorm whose only input is a conv/linear output that
nothing else uses. Models fx cannot trace fall back to module order: a BatchNorm directly after
a conv/linear in the same ``nn.Sequential``. Folded BatchNorms become ``nn.Identity`` at their
qualified names, so the model's structure (and every other name) is unchanged.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).eval()
    >>> _ = m[1].running_mean.uniform_(), m[1].running_var.uniform_(0.5, 2)
    >>> x = torch.randn(2, 1, 5, 5)
    >>> folded, pairs = fold_batchnorm(m)
    >>> pairs, torch.allclose(folded(x), m(x), atol=1e-5)
    ([('0', '1')], True)
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import Tensor, fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def fold_bn_weights(w: Tensor, b: Tensor | None, bn: _BatchNorm) -> tuple[Tensor, Tensor]:
    """Weights and bias of the layer that equals ``bn(layer(x))`` with ``bn``'s running stats.

    Args:
        w: the layer weight, output channels first.
        b: the layer bias, or None.
        bn: the BatchNorm (running mean/var, optional affine).

    Returns:
        ``(W', b')`` as new tensors.

    Example:
        >>> bn = nn.BatchNorm1d(2).eval()
        >>> fold_bn_weights(torch.ones(2, 3), None, bn)[0][0, 0].item() < 1
        True
    """
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded")
    gamma = bn.weight if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(mean)
    k = gamma / torch.sqrt(var + bn.eps)
    b = b if b is not None else torch.zeros_like(mean)
    w_new = w * k.reshape(-1, *([1] * (w.dim() - 1)))
    return w_new.detach().clone(), (k * (b - mean) + beta).detach().clone()


def _graph_pairs(model: nn.Module) -> list[tuple[str, str]]:
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BatchNorm):
            continue
        src = node.args[0] if node.args else None
        if (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and isinstance(modules.get(src.target), FOLDABLE)
            and len(src.users) == 1
        ):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _order_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (a_name, a), (b_name, b) in itertools.pairwise(children):
            if isinstance(a, FOLDABLE) and isinstance(b, _BatchNorm):
                prefix = f"{parent_name}." if parent_name else ""
                pairs.append((prefix + a_name, prefix + b_name))
    return pairs


def find_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layer name, batchnorm name)`` pairs that can be folded, in graph order.

    Example:
        >>> find_bn_pairs(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.ReLU()))
        [('0', '1')]
    """
    try:
        return _graph_pairs(model)
    except Exception:  # fx cannot trace data-dependent control flow; use module order
        return _order_pairs(model)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def fold_batchnorm(
    model: nn.Module, inplace: bool = False
) -> tuple[nn.Module, list[tuple[str, str]]]:
    """Fold every foldable BatchNorm into its preceding conv/linear.

    Args:
        model: the model (its BatchNorms' running statistics are used).
        inplace: change ``model`` itself instead of a deep copy.

    Returns:
        ``(model with BatchNorms replaced by nn.Identity, folded (layer, bn) name pairs)``.
    """
    model = model if inplace else copy.deepcopy(model)
    pairs = find_bn_pairs(model)
    for layer_name, bn_name in pairs:
        layer = model.get_submodule(layer_name)
        bn = model.get_submodule(bn_name)
        w, b = fold_bn_weights(layer.weight, layer.bias, bn)
        layer.weight = nn.Parameter(w)
        layer.bias = nn.Parameter(b)
        _set_module(model, bn_name, nn.Identity())
    return model, pairs
