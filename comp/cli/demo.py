"""`comp demo`: the built-in competition, end to end."""

from __future__ import annotations

from pathlib import Path

import typer

from comp.cli.output import console
from comp.core.workspace import Workspace


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
