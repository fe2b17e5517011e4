"""What every command prints through: the consoles and `fail`, the one way a command reports an error."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print `message` as an error and return the Exit to raise: `raise fail("...")`."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)
