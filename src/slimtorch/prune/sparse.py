"""Sparse execution: CSR Linear/Conv2d shells, switched in only above a measured break-even.

The kernel is torch's CSR matmul with **int32** indices, computed as ``W_csr @ x.T`` (see
``shared/KERNELS.md``: int32 CSR is 2-5x faster than the int64 CSR ``to_sparse_csr()``
returns, and ``F.linear(x, W_csr)`` is 3-7x slower and fails under ``torch.inference_mode``).
A conv runs as im2col (``F.unfold``) followed by the same CSR product.

Sparse only pays above a break-even sparsity that depends on the layer kind and the batch
size. :data:`BREAKEVEN` holds the table measured by ``benchmarks/bench_sparse_breakeven.py``
(the lowest sparsity from which the sparse kernel beat the best dense fp32 kernel at every
higher sparsity measured; ``None``: never within 50-99%); :func:`load_breakeven` reads a
fresh table the benchmark wrote. :func:`to_sparse` switches a layer only when its weight is at
least that sparse.

N:M: :func:`is_nm_sparse` checks that a mask keeps the N:M layout (at most N nonzeros in
every M consecutive weights along the input dimension) that 2:4 semi-structured kernels take;
:func:`to_semi_structured` hands such a weight to ``torch.sparse.to_sparse_semi_structured``,
which needs a CUDA GPU (cuSPARSELt); on a CPU it raises ConfigError.

Example:
    >>> lin = nn.Linear(8, 4)
    >>> with torch.no_grad():
    ...     _ = lin.weight.mul_(torch.rand(4, 8) > 0.9)
    >>> sp = SparseLinear.from_dense(lin)
    >>> x = torch.randn(3, 8)
    >>> torch.allclose(sp(x), lin(x), atol=1e-6)
    True
"""

from __future__ import annotations

import copy
import json
import math
import re
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from slimtorch.errors import ConfigError

__all__ = [
    "BREAKEVEN",
    "SparseConv2d",
    "SparseLinear",
    "breakeven_sparsity",
    "csr_int32",
    "is_nm_sparse",
    "load_breakeven",
    "sparse_conv2d",
    "sparse_linear",
    "to_semi_structured",
    "to_sparse",
]

# Measured by benchmarks/bench_sparse_breakeven.py on 2026-11-30 (1 torch thread; Linear
# 1024x1024, 3x3 conv 64->64 on 16x16; BENCHMARKS.md, "Pruning: channel surgery and sparse
# execution"; raw rows in benchmarks/results/sparse_breakeven.json): kind -> batch size ->
# the sparsity from which CSR beat the best dense fp32 kernel (None: never up to 99%).
BREAKEVEN: dict[str, dict[int, float | None]] = {
    "linear": {1: 0.98, 8: 0.9, 64: 0.9},
    "conv2d": {1: 0.95, 8: None, 64: None},
}


def csr_int32(weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """CSR arrays of a 2-D weight: ``(crow_indices, col_indices)`` as int32, and the values.

    Example:
        >>> crow, col, val = csr_int32(torch.tensor([[0.0, 2.0], [3.0, 0.0]]))
        >>> crow.tolist(), col.tolist(), val.tolist(), crow.dtype
        ([0, 1, 2], [1, 0], [2.0, 3.0], torch.int32)
    """
    if weight.dim() != 2:
        raise ConfigError(f"csr_int32 needs a 2-D weight, got shape {tuple(weight.shape)}")
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.detach().to_sparse_csr()
    return csr.crow_indices().int(), csr.col_indices().int(), csr.values().clone()


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def sparse_linear(x: Tensor, w_csr: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, W)`` with ``W`` as a CSR tensor: ``(W_csr @ x.T).T + bias``.

    Args:
        x: ``[..., in]``.
        w_csr: ``[out, in]`` sparse CSR (int32 indices for speed).
        bias: ``[out]`` or None.

    Returns:
        ``[..., out]``.
    """
    rows = x.reshape(-1, x.shape[-1])  # [B, in]
    y = (w_csr @ rows.T).T  # [B, out]
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], w_csr.shape[0])


def sparse_conv2d(
    x: Tensor,
    w_csr: Tensor,
    bias: Tensor | None,
    kernel_size: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> Tensor:
    """``F.conv2d`` (groups 1) as im2col + CSR product; ``w_csr`` is ``[out, in*kh*kw]``.

    Returns:
        ``[N, out, H_out, W_out]``.
    """
    n, _, h, _ = x.shape
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)  # [N,K,L]
    k, length = cols.shape[1], cols.shape[2]
    y = w_csr @ cols.permute(1, 0, 2).reshape(k, n * length)  # [out, N*L]
    y = y.reshape(-1, n, length).permute(1, 0, 2)  # [N, out, L]
    if bias is not None:
        y = y + bias[None, :, None]
    h_out = (h + 2 * padding[0] - dilation[0] * (kernel_size[0] - 1) - 1) // stride[0] + 1
    return y.reshape(n, -1, h_out, length // h_out)


class _CSRWeight(nn.Module):
    """Holds CSR arrays as buffers (so state_dicts stay dense tensors) and builds the matrix."""

    def _store(self, weight2d: Tensor, bias: Tensor | None) -> None:
        crow, col, values = csr_int32(weight2d)
        self.register_buffer("crow_indices", crow)
        self.register_buffer("col_indices", col)
        self.register_buffer("values", values)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.shape2d = tuple(weight2d.shape)

    def csr(self) -> Tensor:
        """The weight as a ``[out, in]`` CSR tensor over this module's buffers."""
        return _csr(self.crow_indices, self.col_indices, self.values, self.shape2d)

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights."""
        return 1 - self.values.numel() / (self.shape2d[0] * self.shape2d[1])


class SparseLinear(_CSRWeight):
    """A Linear layer whose weight is stored and multiplied as int32 CSR.

    Example:
        >>> SparseLinear.from_dense(nn.Linear(4, 2, bias=False))(torch.ones(1, 4)).shape
        torch.Size([1, 2])
    """

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self._store(weight, bias)

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> SparseLinear:
        """The same layer in CSR form (zeros of ``linear.weight`` are dropped)."""
        return cls(linear.weight.detach(), linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return sparse_linear(x, self.csr(), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, sparsity={self.sparsity:.3f}"


class SparseConv2d(_CSRWeight):
    """A Conv2d (groups 1, zero padding) computed as im2col + CSR product."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ConfigError("SparseConv2d needs groups=1 and numeric zero padding")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self._store(conv.weight.detach().reshape(conv.out_channels, -1), conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return sparse_conv2d(
            x, self.csr(), self.bias, self.kernel_size, self.stride, self.padding, self.dilation
        )


def load_breakeven(path: str | Path) -> dict[str, dict[int, float | None]]:
    """Read the ``breakeven`` table a ``bench_sparse_breakeven.py`` run wrote (JSON).

    Returns:
        kind (``"linear"``, ``"conv2d"``) -> batch size -> break-even sparsity or None.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))["breakeven"]
        return {k: {int(b): v for b, v in row.items()} for k, row in data.items()}
    except (OSError, KeyError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a break-even table ({exc})") from exc


def breakeven_sparsity(
    kind: str, batch_size: int, table: dict[str, dict[int, float | None]] | None = None
) -> float | None:
    """Break-even sparsity for ``kind`` at the measured batch size nearest (in log scale).

    Example:
        >>> breakeven_sparsity("linear", 50, {"linear": {1: 0.6, 64: 0.8}})
        0.8
    """
    row = (table or BREAKEVEN).get(kind)
    if not row:
        return None
    nearest = min(row, key=lambda b: abs(math.log(b) - math.log(max(1, batch_size))))
    return row[nearest]


def _threshold(kind: str, min_sparsity: float | None, batch_size: int, table) -> float | None:
    return min_sparsity if min_sparsity is not None else breakeven_sparsity(kind, batch_size, table)


def to_sparse(
    model: nn.Module,
    min_sparsity: float | None = None,
    *,
    batch_size: int = 64,
    layers: str | None = None,
    table: dict[str, dict[int, float | None]] | None = None,
) -> nn.Module:
    """A copy of ``model`` with sparse-enough Linear/Conv2d layers switched to CSR execution.

    Args:
        model: the model (not changed).
        min_sparsity: switch layers with at least this fraction of zero weights; None uses the
            measured break-even for the layer kind at ``batch_size`` (:data:`BREAKEVEN`).
        batch_size: the batch size the model will run at (chooses the break-even row).
        layers: a regex; only layers whose qualified name fully matches are considered.
        table: a break-even table (e.g. :func:`load_breakeven`) instead of :data:`BREAKEVEN`.

    Returns:
        The copy; switched layers are :class:`SparseLinear` / :class:`SparseConv2d`.

    Example:
        >>> m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> with torch.no_grad():
        ...     _ = m[0].weight.mul_(torch.rand(64, 64) > 0.95)
        >>> [type(x).__name__ for x in to_sparse(m, min_sparsity=0.9)]
        ['SparseLinear', 'ReLU', 'Linear']
        >>> [type(x).__name__ for x in to_sparse(m, batch_size=64)]  # break-even there: 90%
        ['SparseLinear', 'ReLU', 'Linear']
    """
    if min_sparsity is not None and not 0 <= min_sparsity <= 1:
        raise ConfigError(f"min_sparsity must be in [0, 1], got {min_sparsity}")
    pattern = re.compile(layers) if layers is not None else None
    result = copy.deepcopy(model)
    for name, module in list(result.named_modules()):
        if pattern is not None and not pattern.fullmatch(name):
            continue
        kind = _kind(module)
        limit = _threshold(kind, min_sparsity, batch_size, table) if kind else None
        if limit is None or float((module.weight == 0).float().mean()) < limit:
            continue
        new = SparseLinear.from_dense(module) if kind == "linear" else SparseConv2d(module)
        parent, _, child = name.rpartition(".")
        setattr(result.get_submodule(parent) if parent else result, child, new)
    return result


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros":
        return "conv2d" if not isinstance(module.padding, str) else None
    return None


def is_nm_sparse(weight: Tensor, n: int, m: int) -> bool:
    """True when every ``m`` consecutive weights along the input dim hold at most ``n`` nonzeros.

    The input dim is dim 1 (``[out, in, ...]``: for a conv, groups run over input channels
    at each kernel position, flattened as ``weight.transpose(1, -1)``).

    Example:
        >>> is_nm_sparse(torch.tensor([[1.0, 0, 0, 2, 0, 3, 0, 0]]), 2, 4)
        True
    """
    if not 0 < n < m:
        raise ConfigError(f"N:M needs 0 < N < M, got {n}:{m}")
    w = weight.transpose(1, -1) if weight.dim() > 2 else weight
    if w.shape[-1] % m:
        return False
    groups = w.reshape(-1, m)  # [G, m] consecutive along the input dim
    return bool(((groups != 0).sum(dim=1) <= n).all())


def to_semi_structured(linear: nn.Linear) -> nn.Linear:
    """A copy of ``linear`` whose 2:4 weight uses ``torch.sparse.to_sparse_semi_structured``.

    Raises:
        ConfigError: the weight is not 2:4 sparse, or it is not on a CUDA device (the 2:4
            kernels are cuSPARSELt/CUTLASS, CUDA only).
    """
    w = linear.weight.detach()
    if not is_nm_sparse(w, 2, 4):
        raise ConfigError("to_semi_structured needs a 2:4 sparse weight (see nm_mask)")
    if w.device.type != "cuda":
        raise ConfigError("2:4 semi-structured sparse kernels need a CUDA GPU; weight is on CPU")
    new = copy.deepcopy(linear)
    new.weight = nn.Parameter(torch.sparse.to_sparse_semi_structured(w), requires_grad=False)
    return new
