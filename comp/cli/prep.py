"""CLI commands that prepare a competition for training: `verify`, `folds`, `demo`."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer

import comp.cli as cli
from comp.cli import app, console
from comp.config import Workspace

if TYPE_CHECKING:  # comp.verify imports the decoders (and torch with them); `comp --help` should not wait for that
    from comp.verify import Issue, VerifyReport

SHOW_PER_KIND = 20  # findings listed per kind; the full list is in the cache file


@app.command()
def verify(
    workers: int = typer.Option(0, "--workers", "-j", help="decoding processes (0: one per CPU core)"),
    force: bool = typer.Option(False, "--force", help="decode everything again even if the cache is current"),
) -> None:
    """Decode every train and test image once and check labels, folders and the sample submission.

    Lists broken files (zero-byte, truncated, not an image, unreadable) by path, ids without an image, images
    without a label or sample row, and train/test duplicates. Exits 1 on errors; duplicates are warnings.
    The result is cached, so a second run on unchanged data is instant, and `comp train` requires it.

        comp verify            # in a workspace made by `comp init`
        comp verify -j 8 --force
    """
    from comp.verify import verify as run_verify

    ws = Workspace.here()
    competition = ws.load()
    report, cached = run_verify(competition, ws, workers=workers or None, use_cache=not force, console=console)
    print_report(report, ws, cached)
    if not report.passed:
        raise cli.fail(f"{len(report.errors)} error(s) in the data; fix them (see above) and run `comp verify` again")


def print_report(report: VerifyReport, ws: Workspace, cached: bool) -> None:
    how = "cached result (data unchanged; --force to redo)" if cached else f"decoded in {report.seconds:.1f}s"
    console.print(f"[bold]verify[/]: {report.n_train} train, {report.n_test} test images; {how}", highlight=False)
    if report.class_counts:
        counts = ", ".join(f"{c} {n}" for c, n in report.class_counts.items())
        console.print(f"  classes ({len(report.class_counts)}): {counts}", highlight=False, soft_wrap=True)
    for split, r in report.sizes.items():
        if r:
            console.print(
                f"  {split} sizes: width {r['min_w']}-{r['max_w']}, height {r['min_h']}-{r['max_h']} px",
                highlight=False,
            )
    _print_issues("error", "red", report.errors, ws)
    _print_issues("warning", "yellow", report.warnings, ws)
    if report.passed:
        extra = f" ({len(report.warnings)} warning(s))" if report.warnings else ""
        console.print(f"[bold green]ok[/]: the data passed verification{extra}", highlight=False)


def _print_issues(level: str, colour: str, issues: list[Issue], ws: Workspace) -> None:
    by_kind: dict[str, list[Issue]] = defaultdict(list)
    for issue in issues:
        by_kind[issue.kind].append(issue)
    for kind, group in by_kind.items():
        console.print(f"[bold {colour}]{level}[/]: {kind} ({len(group)})", highlight=False)
        for issue in group[:SHOW_PER_KIND]:
            console.print(f"  {issue.path}: {issue.detail}", highlight=False, soft_wrap=True)
        if len(group) > SHOW_PER_KIND:
            console.print(f"  ... {len(group) - SHOW_PER_KIND} more in {ws.verify_cache}", highlight=False)


@app.command()
def folds(
    n_folds: int = typer.Option(None, "--n-folds", "-k", help="number of folds (default: n_folds in comp.toml)"),
    seed: int = typer.Option(None, "--seed", help="seed of the shuffle (default: seed in comp.toml)"),
    force: bool = typer.Option(False, "--force", help="replace existing folds (models trained on them become stale)"),
) -> None:
    """Split the labelled training images into stratified folds, once: folds/folds.csv + folds/folds.json.

    Stratified K-fold by label (grouped by comp.toml's group_column when set). Trained models record the folds'
    hash, so existing folds are replaced only with --force.

        comp folds                 # K and seed from comp.toml
        comp folds -k 10 --seed 1 --force
    """
    from comp.folds import make_folds

    ws = Workspace.here()
    result, written = make_folds(ws.load(), ws, n_folds=n_folds, seed=seed, force=force)
    table = result.frame.groupby("fold").size()
    sizes = ", ".join(str(n) for n in table.tolist())
    state = "wrote" if written else "up to date:"
    console.print(
        f"{state} {ws.folds_csv.relative_to(ws.root)}: {len(result.frame)} rows in {result.n_folds} folds "
        f"({result.params['method']}, seed {result.params['seed']}); rows per fold {sizes}; sha256 {result.hash[:12]}",
        highlight=False,
    )


@app.command()
def demo(
    data_dir: Path = typer.Option(Path("data/demo"), "--dir", help="where to build the demo competition"),
    force: bool = typer.Option(False, "--force", help="rebuild every step instead of reusing what exists"),
) -> None:
    """Build a small competition from scikit-learn's handwritten digits and take it through the pipeline.

    Writes a Kaggle-layout competition (train/, train.csv, test/, sample_submission.csv) under --dir, keeps the
    test answers beside it, then runs init, verify and folds in the current directory. Re-running reuses what
    exists; each step prints its time.

        mkdir digits && cd digits && comp demo
    """
    from comp.demo import run_demo

    run_demo(Workspace.here(), data_dir, force=force, console=console)
