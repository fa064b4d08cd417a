"""The ``slimtorch`` command line: each subcommand builds the same config the Python API takes.

User mistakes (bad paths, names, shapes, option values) print one line and exit with status 2;
no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from slimtorch import __version__
from slimtorch.cli.errors import describe_user_error
from slimtorch.errors import ConfigError, SlimtorchError
from slimtorch.io import check_writable
from slimtorch.models.trust import trust_code_scope

EXIT_USER_ERROR = 2

# Each capability registers its own subcommands: ``module.register(subparsers)`` adds a parser
# whose ``func(args) -> int`` runs it.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "slimtorch.cli.train",
    "slimtorch.cli.evaluate",
    "slimtorch.cli.profile",
    "slimtorch.cli.bench",
    "slimtorch.cli.compress",
    "slimtorch.cli.encode",
    "slimtorch.cli.distill",
    "slimtorch.cli.llm",
    "slimtorch.cli.prune",
    "slimtorch.cli.quantize",
    "slimtorch.cli.search",
)
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="slimtorch",
        description="Make neural networks small and fast: measure, prune, quantize, encode, "
        "distill, benchmark.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        _register(sub, module_name)
    for name, command in sub.choices.items():
        if name not in CODE_FREE_COMMANDS:
            add_trust_code_option(command)
    return parser


CODE_FREE_COMMANDS = ("llm",)  # GGUF and Hugging Face folders name no Python code
# Subcommands that need an optional extra: (command, extra, the extra's top-level modules).
EXTRA_COMMANDS = {"slimtorch.cli.llm": ("llm", "llm", ("gguf", "tokenizers", "jinja2"))}


def _register(sub: argparse._SubParsersAction, module_name: str) -> None:
    """Add one subcommand module's commands; one whose optional extra is not installed
    becomes a command that says which extra to install (so ``--help`` always works)."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        command, extra, modules = EXTRA_COMMANDS.get(module_name, ("", "", ()))
        if (exc.name or "").split(".")[0] not in modules:
            raise
        message = f"needs the {extra} extra ({exc.name} is not installed): " + (
            f"pip install 'slimtorch[{extra}]'"
        )
        p = sub.add_parser(command, help=f"(not installed) {message}", add_help=True)
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=functools.partial(_missing_extra, message))
        return
    module.register(sub)


def _missing_extra(message: str, args: argparse.Namespace) -> int:
    raise ConfigError(message)


def add_trust_code_option(p: argparse.ArgumentParser) -> None:
    """``--trust-code``: let files this command opens name a model factory outside the zoo."""
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="let a checkpoint's model.json, a .slim header or a recipe file name a model "
        "factory outside the slimtorch zoo (package.module:factory), which is then imported "
        "and run; only for files you trust. Without it such files are refused. Factories "
        "from the standard library or slimtorch's dependencies are refused either way",
    )


def _version() -> str:

    return f"slimtorch {__version__}"


# Options that name what a command writes: main() checks they can be written before it runs.
OUTPUT_OPTIONS = ("out", "json", "csv", "plot", "roofline_plot", "summary", "markdown", "report")


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse an unwritable output (``--out``, ``--json``, ...) before any work is done."""

    for dest in OUTPUT_OPTIONS:
        value = getattr(args, dest, None)
        if not isinstance(value, (str, Path)) or not str(value):
            continue
        option = "--" + dest.replace("_", "-")
        if dest != "out" and Path(value).is_dir():  # only --out may name a folder
            raise ConfigError(f"{option} {value}: is a folder; expected a file to write")
        check_writable(value, option)


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Show warnings as ``slimtorch CMD: warning: message`` (no source line) while active."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"slimtorch {command}: warning: {message}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``slimtorch`` console script.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)

    sub = getattr(args, "llm_command", None) or getattr(args, "search_command", None)
    command = " ".join(filter(None, (args.command, sub)))
    try:
        check_outputs(args)
        with trust_code_scope(getattr(args, "trust_code", False)), one_line_warnings(command):
            return int(args.func(args))
    except SlimtorchError as exc:
        print(f"slimtorch {command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (OSError, UnicodeDecodeError, MemoryError, RuntimeError) as exc:
        message = describe_user_error(exc, argv)
        if message is None:
            raise  # a bug: keep the traceback
        print(f"slimtorch {command}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("slimtorch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
