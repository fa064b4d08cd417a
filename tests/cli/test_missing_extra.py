"""Without the optional llm extra, ``slimtorch --help`` works and ``slimtorch llm`` names it.

Oracle: a fresh interpreter in which importing gguf, tokenizers and jinja2 fails (as on an
install without ``slimtorch[llm]``).
"""

from __future__ import annotations

import subprocess
import sys

BLOCK = "import sys\nfor m in ('gguf', 'tokenizers', 'jinja2'):\n    sys.modules[m] = None\n"


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True)


def test_help_lists_every_command_without_the_llm_extra() -> None:
    out = _run("from slimtorch.cli.main import main\nmain(['--help'])")
    assert out.returncode == 0, out.stderr
    assert "quantize" in out.stdout and "llm       (not installed)" in out.stdout


def test_llm_commands_say_which_extra_to_install() -> None:
    out = _run("from slimtorch.cli.main import main\nraise SystemExit(main(['llm', 'eval']))")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines == [
        "slimtorch llm: error: needs the llm extra (gguf is not installed): "
        "pip install 'slimtorch[llm]'"
    ]
