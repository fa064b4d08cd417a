"""Round-to-nearest weight-only quantization onto a per-channel or per-group integer grid.

A weight ``W`` of shape ``(out, in)`` is cut into groups of ``group_size`` consecutive input
columns inside each output row (``None``: the whole row; a short last group when the size does
not divide ``in``). Asymmetric grids store a scale and a minimum per group
(``w ~ scale * q + min``, ``q`` in ``[0, 2**bits - 1]``, as llama.cpp's Q4_1); symmetric grids
store a scale only (``q`` in ``[-2**(bits-1), 2**(bits-1) - 1]``). The grid is
``slimtorch.quantize``'s affine primitive with the spec :meth:`RTNConfig.spec` gives; AWQ and
GPTQ round onto the same grid.

Example:
    >>> import torch
    >>> w = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    >>> rtn_quantize(w, RTNConfig(bits=2, group_size=None))
    tensor([[0., 1., 2., 3.]])
"""

from __future__ import annotations

import torch

from slimtorch.llm.compress.config import RTNConfig
from slimtorch.quantize.primitives import fake_quantize


def rtn_quantize(w: torch.Tensor, config: RTNConfig) -> torch.Tensor:
    """Quantize then dequantize a 2-D weight onto its per-channel or per-group grid.

    Args:
        w: weight ``(out, in)``.
        config: bits, group size and symmetry.

    Returns:
        The dequantized weight, same shape and dtype.

    Example:
        >>> w = torch.randn(4, 64)
        >>> (rtn_quantize(w, RTNConfig(8, 32)) - w).abs().max().item() < 0.02
        True
    """
    return fake_quantize(w, config.spec())


def output_error(w: torch.Tensor, w_hat: torch.Tensor, x: torch.Tensor) -> float:
    """Mean squared error of a linear layer's output: ``||x W^T - x W_hat^T||^2 / numel``.

    Args:
        w, w_hat: original and compressed weights ``(out, in)``.
        x: inputs ``(tokens, in)``.

    Returns:
        The mean squared output error.

    Example:
        >>> output_error(torch.eye(2), torch.zeros(2, 2), torch.ones(3, 2))
        1.0
    """
    diff = x @ (w - w_hat).T
    return float(diff.pow(2).mean())
