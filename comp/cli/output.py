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


def print_grid(title: str, rows: list[tuple[str, int, list[str], str, str]], n_folds: int) -> None:
    """A models x folds grid: rows of (label markup, label length, fold cells, mean ± std, OOF).

    A table when it fits the terminal with every label in full (no vertical rules, short fold headers); otherwise
    one block per row (label, mean ± std and OOF, then its folds), which fits any width, 80 columns included."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    def width(cells: list[str], header: str) -> int:  # a column's printed width: its widest cell, markup removed
        return max([len(header), *(Text.from_markup(c).cell_len for c in cells)])

    headers = [f"f{k}" if n_folds > 4 else f"fold {k}" for k in range(n_folds)]
    label_width = max(n for _, n, *_ in rows)
    columns = [width([r[2][k] for r in rows], h) for k, h in enumerate(headers)]
    columns += [width([r[3] for r in rows], "mean ± std"), width([r[4] for r in rows], "OOF")]
    # The table's edges take 1 column each side and every further column 2 spaces before it.
    if 2 + label_width + sum(2 + w for w in columns) <= console.width:
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        table.add_column("", no_wrap=True, min_width=label_width)
        for header in headers:
            table.add_column(header, justify="right", no_wrap=True)
        table.add_column("mean ± std", justify="right", no_wrap=True)
        table.add_column("OOF", justify="right", no_wrap=True)
        for label, _n, cells, mean, oof in rows:
            table.add_row(label, *cells, mean, oof)
        console.print(table)
        return
    console.print(f"[italic]{escape(title)}[/]", highlight=False)
    for label, _n, cells, mean, oof in rows:
        summary = "  ".join(part for part in (f"mean ± std {mean}" if mean else "", f"OOF {oof}" if oof else "")
                            if part)
        console.print(f"{label}  {summary}", highlight=False)
        console.print("  " + "  ".join(f"f{k} {cell}" for k, cell in enumerate(cells)), highlight=False)


def one_of(module: str, name: str, *extra: str):  # noqa: ANN201 - a click callback
    """An option callback: the value must be one of `module.name` (the library's own list, imported only when the
    command runs, so `comp --help` stays fast) or `extra`; otherwise a usage error naming the option (exit 2)."""

    def check(value: str | None) -> str | None:
        if value is None:
            return value
        import importlib

        allowed = (*getattr(importlib.import_module(module), name), *extra)
        if value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return check


def fold_value(value: str) -> str:
    """--fold: a fold number, `all`, or `full` (whether that fold exists is checked against folds.csv later)."""
    if value not in ("all", "full") and not value.isdigit():
        raise typer.BadParameter(f"{value!r}: give a fold number (0, 1, ...), `all` or `full`")
    return value


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
