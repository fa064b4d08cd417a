"""Deep Compression encoding: Huffman coding, relative sparse indices, the compressed file.

- :mod:`~slimtorch.encode.huffman`: canonical length-limited Huffman codes over integer arrays.
- :mod:`~slimtorch.encode.sparse_index`: nonzero positions as fixed-width relative gaps.
- :mod:`~slimtorch.encode.codecs`: how a tensor (pruned, k-means quantized) becomes streams.
- :mod:`~slimtorch.encode.container`: ``save_compressed`` / ``load_compressed``.
"""

from __future__ import annotations

from slimtorch.encode.codecs import Codec
from slimtorch.encode.container import (
    CompressedFile,
    CompressedSummary,
    EncodeConfig,
    FormatError,
    load_compressed,
    read_compressed,
    save_compressed,
)
from slimtorch.encode.huffman import (
    HuffmanStream,
    canonical_codes,
    huffman_code_lengths,
    huffman_compress,
    huffman_decode,
    huffman_decompress,
    huffman_encode,
)
from slimtorch.encode.sparse_index import positions_from_gaps, relative_gaps
from slimtorch.encode.weights import CodebookWeight, SparseWeight, from_quantized

__all__ = [
    "CodebookWeight",
    "Codec",
    "CompressedFile",
    "CompressedSummary",
    "EncodeConfig",
    "FormatError",
    "HuffmanStream",
    "SparseWeight",
    "canonical_codes",
    "from_quantized",
    "huffman_code_lengths",
    "huffman_compress",
    "huffman_decode",
    "huffman_decompress",
    "huffman_encode",
    "load_compressed",
    "positions_from_gaps",
    "read_compressed",
    "relative_gaps",
    "save_compressed",
]
