"""One way to make a progress bar: rich, on stderr, gone when done, and silent where nobody watches.

On a pipe or a log file rich would still print an empty line per bar; the summary lines say enough there.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn


def progress_bar(*columns: ProgressColumn | str, console: Console | None = None) -> Progress:
    """A transient Progress on `console` (default: stderr; default columns: description, bar, n/N, ETA), disabled off
    a terminal."""
    console = console or Console(stderr=True)
    columns = columns or (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True, disable=not (console.is_terminal or console.is_jupyter))
