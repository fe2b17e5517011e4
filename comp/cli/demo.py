"""`comp demo`: the built-in competition, end to end."""

from __future__ import annotations

from pathlib import Path

import typer

from comp.cli.output import console, say_next
from comp.core.workspace import Workspace


def demo(
    data_dir: Path = typer.Option(Path("data/demo"), "--dir", help="where to build the demo competition"),
    force: bool = typer.Option(False, "--force", "-f", help="rebuild every step instead of reusing what exists"),
) -> None:
    """Build a small competition from scikit-learn's handwritten digits and take it through the whole pipeline.

    In the current directory (an empty folder is best): writes a Kaggle-layout competition (train/, train.csv,
    test/, sample_submission.csv) under --dir with the test answers kept beside it, then runs init, verify and
    folds, trains the two tiny stock recipes (tiny, tiny2) on every fold, writes one submission per model and
    their stack (submissions/demo_tiny.csv, demo_tiny2.csv, demo_stack.csv), and scores each against the held-out
    answers. About five CPU-minutes; re-running reuses what exists; each step prints its time.

        mkdir digits && cd digits && comp demo
    """
    from comp.demo import run_demo

    run_demo(Workspace.here(search=False), data_dir, force=force, console=console)
    say_next("comp status", "then `comp report`, `comp stack`, `comp check`: the same commands as on a real "
             "competition")
