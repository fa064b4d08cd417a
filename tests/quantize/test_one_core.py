"""One quantization core (issue 12): each tensor function is defined once in the package, and
the LLM modules build on it."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

import slimtorch

SRC = Path(slimtorch.__file__).parent
LLM_ON_THE_CORE = [
    "llm/compress/rtn.py",
    "llm/compress/awq.py",
    "llm/compress/gptq.py",
    "llm/compress/kmeans_llm.py",
    "llm/compress/sparsegpt.py",
    "llm/compress/wanda.py",
    "llm/kernels.py",
]
ONCE = [
    "nm_mask",
    "kmeans_1d_rows",
    "HessianAccumulator",
    "InputNormAccumulator",
    "damped_inverse",
    "damped_inverse_upper",
    "quantize_affine",
    "dequantize_affine",
    "choose_qparams",
    "KMeansConfig",
]


def _definitions() -> Counter[str]:
    names: Counter[str] = Counter()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                names[node.name] += 1
    return names


@pytest.mark.parametrize("name", ONCE)
def test_defined_exactly_once(name):
    assert _definitions()[name] == 1


@pytest.mark.parametrize("module", LLM_ON_THE_CORE)
def test_llm_module_imports_the_quantization_core(module):
    tree = ast.parse((SRC / module).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert any(m.startswith("slimtorch.quantize") for m in imported)
