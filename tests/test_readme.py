"""The README's Python examples run as written, and its two commands exist in the Makefile."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_python_examples() -> None:
    assert len(python_blocks(README)) >= 1


def test_readme_python_examples_run(capsys) -> None:
    for block in python_blocks(README):
        namespace: dict[str, object] = {"__name__": "__readme__"}
        exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", out).group(1))
    assert accuracy > 0.8


def test_readme_commands_are_make_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", README, flags=re.MULTILINE):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def cli_lines(text: str) -> list[str]:
    """`slimtorch ...` command lines of the README's sh blocks (continuations joined)."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("slimtorch "):
                lines.append(line)
    return lines


def test_readme_cli_lines_parse() -> None:
    import shlex

    from slimtorch.cli.main import build_parser

    lines = cli_lines(README)
    assert len(lines) >= 10
    parser = build_parser()
    for line in lines:
        argv = shlex.split(line)[1:]
        args = parser.parse_args(argv)  # an unknown option or verb exits with status 2
        assert callable(args.func), line
