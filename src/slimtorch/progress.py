"""Progress output that reads well on a terminal and in a log.

On a terminal: a rich bar, with each finished step's line printed above it. Piped (stdout not
a terminal): no bar at all, and one plain, unwrapped line per step, so a log holds exactly one
labelled line per epoch, iteration or stage.

Example:
    >>> with progress_bar(False) as bar:
    ...     log_line(bar, "prune 1/3 finetune epoch 1/2: loss 0.1234")
    prune 1/3 finetune epoch 1/2: loss 0.1234
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import Progress, TextColumn


def progress_bar(enabled: bool) -> Progress:
    """A rich progress bar with a ``status`` field, disabled unless ``enabled`` on a terminal."""
    console = Console()
    columns = (*Progress.get_default_columns(), TextColumn("{task.fields[status]}"))
    return Progress(*columns, console=console, disable=not (enabled and console.is_terminal))


def log_line(bar: Progress, line: str) -> None:
    """Through the bar's console on a terminal; else ``print``: no wrapping, nothing more."""
    if bar.disable:
        print(line, flush=True)
        return
    bar.console.print(line, highlight=False, markup=False)
