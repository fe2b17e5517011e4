"""What every command prints through: the consoles, `fail` (the one way a command reports an error), `say_next`
(the "next:" line after a step) and `print_json` (the `--json` output for scripts)."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print `message` as an error and return the Exit to raise: `raise fail("...")`."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def say_next(command: str, why: str = "") -> None:
    """The step that comes after this one, as a command to copy: `next: comp folds  (split the data)`."""
    console.print(f"[bold]next:[/] {escape(command)}" + (f"  [dim]({escape(why)})[/]" if why else ""),
                  highlight=False, soft_wrap=True)


def _plain(value: Any) -> Any:
    """JSON-safe: paths and other objects as text, NaN/inf as null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return str(value)


def print_json(obj: Any) -> None:
    """`obj` as indented JSON on stdout, nothing else (no colour, no wrapping), for `--json`."""
    sys.stdout.write(json.dumps(_plain(obj), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()
