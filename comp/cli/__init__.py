"""The `comp` command line: a thin Typer layer over the library.

Each command parses its options, calls one library function, prints a short summary and exits non-zero with a
clear message on bad input. Commands live in one file per stage, as plain functions; this file builds the app, registers
them explicitly in workflow order, and holds the one error boundary (`main`).
"""

from __future__ import annotations

import os
import sys

import typer

from comp.cli import bundle, demo, ensemble, reports, setup, submission, training
from comp.cli.output import err_console, fail
from comp.core.errors import CompError

app = typer.Typer(
    name="comp",
    help="From a downloaded Kaggle/CodaBench image-classification competition to a checked, uploaded submission.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Commands in the order a user runs them (the order `comp --help` lists them).
COMMANDS = [
    ("init", setup.init),
    ("download", setup.download),
    ("verify", setup.verify),
    ("folds", setup.folds),
    ("train", training.train),
    ("predict", training.predict_command),
    ("status", reports.status_command),
    ("report", reports.report_command),
    ("stack", ensemble.stack_command),
    ("score", ensemble.score_command),
    ("check", submission.check),
    ("bundle", bundle.bundle),
    ("submit", submission.submit),
    ("submissions", submission.submissions),
    ("demo", demo.demo),
]
for name, command in COMMANDS:
    app.command(name)(command)


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
