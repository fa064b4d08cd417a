"""The tracer the profiler measures with; it lives in :mod:`slimtorch.core.trace`."""

from slimtorch.core.trace import (
    ExampleInput,
    LayerCount,
    OpRecord,
    StorageEvent,
    StorageLog,
    Trace,
    call_model,
    describe_input,
    model_error,
    restored_state,
    trace_model,
)

__all__ = [
    "ExampleInput",
    "LayerCount",
    "OpRecord",
    "StorageEvent",
    "StorageLog",
    "Trace",
    "call_model",
    "describe_input",
    "model_error",
    "restored_state",
    "trace_model",
]
