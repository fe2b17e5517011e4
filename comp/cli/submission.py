"""`comp check`, `comp submit`, `comp submissions`: a checked file to the platform, and the ledger."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from comp.cli.output import console, err_console, fail, print_json, say_next
from comp.core.config import Competition
from comp.core.workspace import Workspace


def check(
    file: Path = typer.Argument(..., metavar="FILE", help="the submission CSV to check"),
    strict: bool = typer.Option(False, "--strict", help="treat warnings as errors"),
    as_json: bool = typer.Option(False, "--json", help="print the findings as JSON (exit code as without it)"),
    fix: Path | None = typer.Option(None, "--fix", metavar="OUT", help="write a copy in the sample's exact format "
                                    "to OUT, saying each change; refuses what would need a guess"),
    force: bool = typer.Option(False, "--force", "-f", help="with --fix: replace an existing OUT (never a file the "
                               "ledger says was submitted)"),
) -> None:
    """Check a submission CSV against the sample and the competition, as the platform would.

    Examples:
      comp check submissions/blend.csv --strict
      comp check mine.csv --fix submissions/mine_fixed.csv
    Exit code 0 only for a valid file; every problem names the row/id/column and the fix.
    """
    from comp.submission.check import check_file

    ws = Workspace.here()
    file = ws.resolve(file)  # as typed from the cwd, else inside the workspace (from any subfolder)
    if fix is not None:
        _fix(ws, file, fix, strict, force)
        return
    report = check_file(ws.load(), ws, file, strict=strict)
    if as_json:
        valid = not report.errors and not (strict and report.warnings)
        print_json({"file": file, "valid": valid, "errors": report.errors, "warnings": report.warnings})
        if not valid:
            raise typer.Exit(1)
        return
    _print_findings(report.errors, report.warnings)
    if report.errors:
        raise fail(f"{file}: {len(report.errors)} error(s); fix them and run `comp check {file}` again")
    if strict and report.warnings:
        raise fail(f"{file}: {len(report.warnings)} warning(s) and --strict; fix them or drop --strict")
    console.print(f"[green]ok:[/] {escape(str(file))} is a valid submission" +
                  (f" ({len(report.warnings)} warning(s))" if report.warnings else ""), highlight=False)
    say_next(f"comp submit {file} -m MESSAGE", "add --dry-run to see what would be sent")


def _print_findings(errors: list[str], warnings: list[str], error_label: str = "error") -> None:
    """Errors and warnings, one per line on stderr, printed as text (a file's content is never rich markup)."""
    for error in errors:
        err_console.print(f"[bold red]{error_label}:[/] {escape(error)}", highlight=False, soft_wrap=True)
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


def _fix(ws: Workspace, file: Path, out: Path, strict: bool, force: bool) -> None:
    from comp.submission.check import check_file
    from comp.submission.fix import fix_file

    comp = ws.load()
    result = fix_file(comp, ws, file, out, force=force)
    for change in result.changes:
        console.print(f"[cyan]fixed:[/] {escape(change)}", highlight=False, soft_wrap=True)
    _print_findings(result.refused, [], error_label="cannot fix")
    if result.refused:
        raise fail(f"{file}: {len(result.refused)} problem(s) need a person; nothing was written to {out}")
    report = check_file(comp, ws, out, strict=strict)
    _print_findings([], report.warnings)
    if report.errors:
        raise fail(f"{out} was written but fails under --strict: " + "; ".join(report.errors))
    what = f"{len(result.changes)} change(s)" if result.changes else "no change needed"
    console.print(f"[green]ok:[/] wrote {escape(str(out))} ({what}); it passes `comp check`", highlight=False)


def submit(
    file: Path | None = typer.Argument(None, metavar="[FILE]", help="the CSV to send (default: the newest "
                                       "submissions/*.csv)"),
    message: str = typer.Option(..., "--message", "-m", help="what this submission is (shown on the leaderboard)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check and show what would be sent; no network"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="poll until the platform has scored it"),
    timeout: float = typer.Option(600.0, "--timeout", help="seconds to wait for the score"),
    phase: str = typer.Option("", "--phase", help="CodaBench phase id (default: $CODABENCH_PHASE)"),
    zip_name: str = typer.Option("", "--zip-name", help="CodaBench: file name inside the zip (default prediction.csv)"),
    kernel: str = typer.Option("", "--kernel", help="Kaggle code competition: push bundle NAME (`comp bundle NAME "
                               "--run-local`) as a notebook, run it on Kaggle and submit its output"),
) -> None:
    """Check a submission, upload it to the competition's platform, record it in the ledger and show its score.

    Examples:
      comp submit -m "convnext 5-fold mean + hflip" --dry-run
      comp submit submissions/blend.csv -m "blend v2"
      comp submit -m "v3" --no-wait          # then: comp submissions --refresh
      comp submit --kernel blend_v2 -m "code comp v2" --dry-run
    Kaggle credentials: ~/.kaggle/access_token, KAGGLE_API_TOKEN, or kaggle.json / KAGGLE_USERNAME + KAGGLE_KEY.
    CodaBench: CODABENCH_TOKEN or CODABENCH_USERNAME + CODABENCH_PASSWORD, CODABENCH_PHASE (or --phase).
    """
    ws = Workspace.here()
    comp = ws.load()
    if kernel:
        return _submit_kernel(comp, ws, kernel, file, message, dry_run, wait, timeout)
    from comp.platforms import submit as platforms  # pandas and the platform clients: not at `comp --help` time

    path = ws.resolve(file) if file is not None else platforms.newest_submission(ws)
    result = platforms.submit_file(
        comp, ws, path, message, make=lambda: platforms.make_backend(comp, phase=phase, zip_name=zip_name),
        dry_run=dry_run, wait=wait, timeout=timeout,
        say=lambda text: console.print(text, highlight=False, soft_wrap=True),
    )
    if result.status == "complete":
        console.print(f"[green]scored:[/] {result.ref} public score {result.public_score or '(hidden)'}")
    elif result.status == "error":
        raise fail(f"{comp.platform} could not score {result.ref}: {result.error or 'no reason given'}")


def _submit_kernel(comp: Competition, ws: Workspace, name: str, file: Path | None, message: str, dry_run: bool,
                   wait: bool, timeout: float) -> None:
    from comp.bundle.submit import submit_kernel
    from comp.core.errors import CompError

    if file is not None:
        raise CompError(f"--kernel {name} submits the notebook's own output; drop the file argument {file}")
    result = submit_kernel(comp, ws, name, message, dry_run=dry_run, wait=wait, timeout=timeout,
                           say=lambda text: console.print(text, highlight=False, soft_wrap=True))
    if result.status == "complete":
        console.print(f"[green]scored:[/] {result.ref} public score {result.public_score or '(hidden)'}")
    elif result.status == "error":
        raise fail(f"kaggle could not score {result.ref}: {result.error or 'no reason given'}")


def submissions(
    refresh: bool = typer.Option(False, "--refresh", help="pull the latest status and scores from the platform"),
    as_json: bool = typer.Option(False, "--json", help="print the ledger's rows as JSON (every column, as text)"),
) -> None:
    """Show the ledger of submissions (and, with --refresh, pull scores back); plots CV vs public score.

    Example: comp submissions --refresh
    """
    from comp.platforms import submit as platforms
    from comp.submission import ledger

    ws = Workspace.here()
    if refresh:
        changed = platforms.refresh(ws.load(), ws)
        console.print(f"refreshed: {changed} row(s) changed")
    frame = ledger.read(ws)
    if as_json:
        print_json(frame.to_dict(orient="records"))
        return
    if frame.empty:
        console.print(f"no submissions yet ({ws.ledger}); make one with `comp submit -m MESSAGE`")
        return
    table = Table(title=str(ws.ledger), title_justify="left")
    # Narrow on screen: the full values (sha256, exact time, platform) stay in the CSV; empty columns are left out.
    rows = [
        {"when": str(row["time"])[5:16].replace("T", " "), "file": Path(str(row["file"])).name,
         "message": row["message"], "made by": " / ".join(v for v in (row["models"], row["method"]) if v),
         "cv": row["cv"], "ref": row["ref"], "status": row["status"], "public": row["public_score"],
         "private": row["private_score"]}
        for _, row in frame.iterrows()
    ]
    titles = [t for t in rows[0] if t in ("when", "file", "message", "status") or any(r[t] for r in rows)]
    for title in titles:
        wraps = title in ("file", "message", "made by")  # the rest are short and must stay readable
        table.add_column(title, overflow="fold", no_wrap=not wraps)
    for row in rows:
        table.add_row(*(escape(str(row[t])) for t in titles))
    console.print(table)
    plot = ledger.plot(ws, frame)
    if plot is not None:
        console.print(f"CV vs public score: {plot}")
