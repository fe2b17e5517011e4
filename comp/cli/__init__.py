"""The `comp` command line: a thin Typer layer over the library.

Each command parses its options, calls one library function, prints a short summary and exits non-zero with a
clear message on bad input. Commands live in one file per stage, as plain functions; this file builds the app, registers
them explicitly in workflow order, and holds the one error boundary (`main`).

Exit codes: 0 done; 1 a problem the user can fix (CompError: what, where, how); 2 a usage error (the option and the
fix named) or a bug in comp; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import os
import sys
import warnings

import typer
from typer.core import TyperCommand, TyperGroup

from comp import __version__
from comp.cli import bundle, demo, ensemble, reports, setup, submission, training
from comp.cli.output import err_console, fail
from comp.core.errors import CompError

# Short flags mean one thing in every command: -h help, -V version, -f --force, -k --fold, -j --workers,
# -c --competition, -m --message (as `git commit -m`). Model options are spelled out (--model, --models).


class _NoFlagTypes:
    """Help without `<bool>` after every flag (a flag takes no value, so it has no type to show)."""

    def get_params(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_NoFlagTypes, TyperCommand):
    pass


class _Group(_NoFlagTypes, TyperGroup):
    pass


def _help(command) -> str:  # noqa: ANN001
    """A command's docstring for `--help`: prose paragraphs joined into one line each, so the terminal wraps them at
    its width instead of mid-sentence; indented paragraphs (examples) keep their lines."""
    import inspect

    paragraphs = inspect.cleandoc(command.__doc__ or "").split("\n\n")
    out = []
    for text in paragraphs:
        lines = text.splitlines()
        if any(line.startswith(" ") for line in lines):
            out.append("\n".join(lines))
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out)


app = typer.Typer(
    name="comp",
    help="From a downloaded Kaggle/CodaBench image-classification competition to a checked, uploaded submission. "
    "Run the commands below top to bottom; `comp COMMAND -h` shows each one's options and examples.",
    cls=_Group,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"comp {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                 help="Show comp's version and exit."),
) -> None:
    """From a downloaded Kaggle/CodaBench image-classification competition to a checked, uploaded submission."""


# Commands in the order a user runs them (the order `comp --help` lists them), under one heading per stage.
COMMANDS = [
    ("init", setup.init, "1. Set up"),
    ("download", setup.download, "1. Set up"),
    ("verify", setup.verify, "1. Set up"),
    ("folds", setup.folds, "1. Set up"),
    ("train", training.train, "2. Train"),
    ("predict", training.predict_command, "2. Train"),
    ("status", reports.status_command, "2. Train"),
    ("models", reports.models_command, "2. Train"),
    ("report", reports.report_command, "2. Train"),
    ("stack", ensemble.stack_command, "3. Blend and submit"),
    ("score", ensemble.score_command, "3. Blend and submit"),
    ("check", submission.check, "3. Blend and submit"),
    ("bundle", bundle.bundle, "3. Blend and submit"),
    ("submit", submission.submit, "3. Blend and submit"),
    ("submissions", submission.submissions, "3. Blend and submit"),
    ("demo", demo.demo, "Try it"),
]
for name, command, *panel in COMMANDS:
    app.command(name, cls=_Command, help=_help(command), rich_help_panel=panel[0] if panel else None)(command)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Library warnings as one line without the library's source path (that is for developers: COMP_DEBUG=1)."""
    text = " ".join(str(message).split())
    if text not in _seen_warnings:
        _seen_warnings.add(text)
        from rich.markup import escape

        err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


_seen_warnings: set[str] = set()


def _given_value(param) -> str | None:  # noqa: ANN001 - a click Parameter
    """The value typed for `param` on the command line (for messages that do not repeat it)."""
    if param is None:
        return None
    opts = set(getattr(param, "opts", ())) | set(getattr(param, "secondary_opts", ()))
    argv, value = sys.argv[1:], None
    for i, arg in enumerate(argv):
        if arg in opts and i + 1 < len(argv):
            value = argv[i + 1]
        elif "=" in arg and arg.split("=", 1)[0] in opts:
            value = arg.split("=", 1)[1]
    return value


def _usage_error(err) -> int:  # noqa: ANN001 - a click UsageError
    """A usage error: what is wrong (the option named), the command's usage line and where to read more; exit 2."""
    from rich.markup import escape

    ctx = getattr(err, "ctx", None)
    path = "comp"
    if ctx is not None:
        parts = ctx.command_path.split()
        path = " ".join(["comp", *parts[1:]])
    elif len(sys.argv) > 1 and sys.argv[1] in {c[0] for c in COMMANDS}:  # errors raised before the command's context
        path = f"comp {sys.argv[1]}"
    message = err.format_message().strip()
    given = _given_value(getattr(err, "param", None))
    if given is not None and repr(given) not in message:
        message += f" (got {given!r})"
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if ctx is not None:
        usage = ctx.get_usage().replace(ctx.command_path, path, 1).strip()
        err_console.print(f"  {escape(usage)}", highlight=False, soft_wrap=True)
    err_console.print(f"  see `{path} -h` for the options and examples", highlight=False, soft_wrap=True)
    return int(getattr(err, "exit_code", 2) or 2)


def _say_interrupted() -> None:
    err_console.print(
        "[bold yellow]interrupted[/]: every file comp writes is replaced whole or not at all, so nothing is left "
        "half-written; run the same command again to continue", highlight=False, soft_wrap=True,
    )


def main() -> None:
    """Console-script entry: CompError -> message + exit 1; usage errors -> the option named + exit 2; Ctrl-C -> 130;
    an unexpected error -> one line + exit 2."""
    debug = bool(os.environ.get("COMP_DEBUG"))
    if not debug:
        warnings.showwarning = _show_warning
    try:
        # Not standalone: click returns a command's typer.Exit code instead of exiting, and lets CompError through.
        rc = app(standalone_mode=False, prog_name="comp")
    except CompError as err:
        raise SystemExit(fail(str(err)).exit_code) from None
    except typer.Exit as ex:
        if isinstance(ex.__cause__, KeyboardInterrupt):  # typer turns Ctrl-C into Exit(130); commands that say
            _say_interrupted()  # more themselves (comp train) raise their Exit without the cause
        raise SystemExit(ex.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        _say_interrupted()
        raise SystemExit(130) from None
    except Exception as err:  # click usage errors and real bugs
        try:  # typer >= 0.20 vendors its own click
            from typer._click.exceptions import ClickException, NoArgsIsHelpError
        except ImportError:  # pragma: no cover - older typer on the real click
            from click.exceptions import ClickException, NoArgsIsHelpError

        if isinstance(err, NoArgsIsHelpError):  # `comp` alone: the help was printed, which is what was asked
            raise SystemExit(0) from None
        if isinstance(err, ClickException):
            raise SystemExit(_usage_error(err)) from None
        if debug:
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(err).__name__}: {err}\n"
            "This is a bug in comp; run again with COMP_DEBUG=1 for the traceback.",
            highlight=False,
        )
        raise SystemExit(2) from None
    if rc == 130:  # typer returns Ctrl-C inside a command as exit code 130, without the exception
        _say_interrupted()
    sys.exit(rc if isinstance(rc, int) else 0)
