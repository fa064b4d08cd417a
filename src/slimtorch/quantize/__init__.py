"""Quantization: linear primitives at every granularity, packing, observers, BN folding,
post-training quantization, QAT and integer-only execution (k-means weight sharing lives in
``slimtorch.quantize.kmeans``, its solver in ``kmeans1d``); the calibrate -> solve kit
(Hessians, damped inverse, column sweep) that ``prune/`` and ``llm/compress/`` share lives in
``slimtorch.quantize.calibration``.

Example:
    >>> import torch
    >>> from slimtorch.quantize import PerChannel, QuantSpec, fake_quantize
    >>> w = torch.randn(4, 8)
    >>> err = (fake_quantize(w, QuantSpec(bits=8, granularity=PerChannel(0))) - w).abs().max()
    >>> bool(err <= w.abs().max() / 127 / 2 + 1e-6)
    True
"""

from __future__ import annotations

from slimtorch.quantize.calibration import (
    HessianAccumulator,
    damped_inverse,
    damped_inverse_upper,
    solve_columns,
)
from slimtorch.quantize.fold import fold_batchnorm
from slimtorch.quantize.integer import IntegerModel, to_integer
from slimtorch.quantize.intformat import load_integer_model, save_integer_model
from slimtorch.quantize.kmeans import (
    KMeansConfig,
    kmeans_1d,
    kmeans_codebook,
    kmeans_quantize_model,
)
from slimtorch.quantize.kmeans1d import kmeans_1d_rows
from slimtorch.quantize.kmeans_module import CodebookConv, CodebookLinear
from slimtorch.quantize.mixed import (
    MixedPrecisionConfig,
    SensitivityResult,
    choose_bits,
    quantize_mixed,
    sensitivity_scan,
)
from slimtorch.quantize.observers import make_observer
from slimtorch.quantize.packing import PackedTensor, pack, packed_nbytes, unpack
from slimtorch.quantize.primitives import (
    PerChannel,
    PerGroup,
    PerTensor,
    QParams,
    QuantSpec,
    block_size,
    choose_qparams,
    dequantize,
    dequantize_affine,
    fake_quantize,
    qparams_from_range,
    quantization_error,
    quantize,
    quantize_affine,
)
from slimtorch.quantize.ptq import PTQConfig, quantize_ptq
from slimtorch.quantize.qat import QATConfig, quantize_qat
from slimtorch.quantize.report import LayerQuantReport, QuantReport, layer_report
from slimtorch.quantize.trained import centroid_gradient, finetune_centroids

__all__ = [
    "CodebookConv",
    "CodebookLinear",
    "HessianAccumulator",
    "IntegerModel",
    "KMeansConfig",
    "LayerQuantReport",
    "MixedPrecisionConfig",
    "PTQConfig",
    "PackedTensor",
    "PerChannel",
    "PerGroup",
    "PerTensor",
    "QATConfig",
    "QParams",
    "QuantReport",
    "QuantSpec",
    "SensitivityResult",
    "block_size",
    "centroid_gradient",
    "choose_bits",
    "choose_qparams",
    "damped_inverse",
    "damped_inverse_upper",
    "dequantize",
    "dequantize_affine",
    "fake_quantize",
    "finetune_centroids",
    "fold_batchnorm",
    "kmeans_1d",
    "kmeans_1d_rows",
    "kmeans_codebook",
    "kmeans_quantize_model",
    "layer_report",
    "load_integer_model",
    "make_observer",
    "pack",
    "packed_nbytes",
    "qparams_from_range",
    "quantization_error",
    "quantize",
    "quantize_affine",
    "quantize_mixed",
    "quantize_ptq",
    "quantize_qat",
    "save_integer_model",
    "sensitivity_scan",
    "solve_columns",
    "to_integer",
    "unpack",
]
