"""Weight storage formats and sizes the profiler measures with; they live in
:mod:`slimtorch.core.size`."""

from slimtorch.core.size import (
    TensorSize,
    WeightFormat,
    dtype_bits,
    effective_parameters,
    model_size_bits,
    relative_index_fillers,
    scale_count,
    tensor_size_bits,
)

__all__ = [
    "TensorSize",
    "WeightFormat",
    "dtype_bits",
    "effective_parameters",
    "model_size_bits",
    "relative_index_fillers",
    "scale_count",
    "tensor_size_bits",
]
