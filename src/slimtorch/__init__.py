"""slimtorch: make neural networks small and fast.

The public verbs are re-exported here; everything else lives in its subpackage.
"""

from __future__ import annotations

__version__ = "0.1.0"
