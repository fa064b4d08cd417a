"""The base layer below prune, quantize and profile: the op tracer and weight storage formats.

- ``trace``: run a model once and record every aten op, its cost, bytes and module
  (``recorder`` intercepts the ops, ``aten_rules`` and ``counting`` count them).
- ``size``: ``WeightFormat`` (bits, sparse layout, codebook, scale granularity) and the size
  in bits of a tensor or model stored in it.

``slimtorch.profile`` measures with these; ``prune`` and ``quantize`` build on them without
depending on the measuring layer.
"""
