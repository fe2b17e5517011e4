"""The `comp` command line: a thin Typer layer over the library.

Each command parses its options, calls one library function, prints a short summary and exits non-zero with a
clear message on bad input. Commands live in one file per area; this file builds the app and the error boundary.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from comp.errors import CompError

app = typer.Typer(
    name="comp",
    help="From a downloaded Kaggle/CodaBench image-classification competition to a checked, uploaded submission.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print `message` as an error and return the Exit to raise: `raise fail("...")`."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


# Each module registers its commands on `app` at import time (after `app`, `console` and `fail` exist).
from comp.cli import (  # noqa: E402
    ensemble,  # noqa: F401  predict, stack, score, status, report
    prep,  # noqa: F401  verify, folds, demo
    submitting,  # noqa: F401  check, submit, submissions, download
    training,  # noqa: F401  train
    workspace,  # noqa: F401  init
)


def main() -> None:
    """Console-script entry: CompError -> message + exit 1; an unexpected error -> one line + exit 2."""
    try:
        # Not standalone: click returns a command's typer.Exit code instead of exiting, and lets CompError through.
        rc = app(standalone_mode=False)
    except CompError as err:
        raise SystemExit(fail(str(err)).exit_code) from None
    except typer.Exit as ex:
        raise SystemExit(ex.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        raise SystemExit(130) from None
    except Exception as err:  # click usage errors and real bugs
        import click

        if isinstance(err, click.ClickException):
            err.show()
            raise SystemExit(err.exit_code) from None
        if os.environ.get("COMP_DEBUG"):
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(err).__name__}: {err}\n"
            "This is a bug in comp; run again with COMP_DEBUG=1 for the traceback.",
            highlight=False,
        )
        raise SystemExit(2) from None
    sys.exit(rc if isinstance(rc, int) else 0)
