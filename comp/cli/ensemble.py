"""`comp stack` and `comp score`: blend the models' logits into a submission, scored by honest CV."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from comp.cli.output import console
from comp.core.workspace import Workspace


def stack_command(
    models: str = typer.Option("", "--models", "-m", help="comma-separated aliases (default: every finished model)"),
    method: str = typer.Option("best", "--method", help="best | mean | weights | logreg (best: best honest CV)"),
    name: str = typer.Option("", "--name", help="submission name (default: <models>_<method>)"),
) -> None:
    """Blend the OOF/test logits of trained models into submissions/NAME.csv (+ NAME.json), scored by honest CV.

    Prints the CV (per fold, mean +- std, whole OOF) of each model and of each method: mean of log-probabilities,
    hill-climbing weights (Caruana) and a logistic-regression stacker, the last two scored out-of-fold on the
    folds.csv split. Refuses logits made from other folds, classes or comp.toml, naming the model and fold.

        comp stack                                  # every finished model, the method with the best CV
        comp stack --models tiny,tiny2 --method logreg --name blend_v2
        comp stack --models tiny --method mean      # a single model's submission
    """
    from comp.ensemble.stack import stack

    ws = Workspace.here()
    competition = ws.load()
    aliases = [a.strip() for a in models.split(",") if a.strip()] or None
    result = stack(competition, ws, aliases, method, name or None)
    print_cv_table(result.table, result.metric, chosen=result.method)
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if result.csv is None:
        return
    weights = ", ".join(f"{a} {w:.3f}" for a, w in result.weights.items())
    temp = f", temperature {result.temperature:.3f}" if result.temperature is not None else ""
    console.print(
        f"[bold green]wrote[/] {result.csv} ({result.method}: {weights}{temp}; CV {result.metric} "
        f"{result.table[result.method]['oof']:.5f}); check it with `comp check {result.csv}`",
        highlight=False, soft_wrap=True,
    )


def print_cv_table(table: dict[str, dict], metric: str, chosen: str = "") -> None:
    """The CV table of `comp stack`: one row per model and method, per-fold scores, mean +- std, whole OOF."""

    n_folds = len(next(iter(table.values()))["per_fold"])
    out = Table(title=f"CV ({metric}, honest out-of-fold)", title_justify="left")
    out.add_column("model / method")
    for k in range(n_folds):
        out.add_column(f"fold {k}", justify="right")
    out.add_column("mean +- std", justify="right")
    out.add_column("OOF", justify="right")
    for row, s in table.items():
        mark = " [bold green]<- chosen[/]" if row == chosen else ""
        out.add_row(row + mark, *(f"{v:.4f}" for v in s["per_fold"]), f"{s['mean']:.4f} +- {s['std']:.4f}",
                    f"{s['oof']:.4f}")
    console.print(out)


def score_command(
    file: Path = typer.Argument(..., help="submission CSV, e.g. submissions/NAME.csv"),
    answers: Path = typer.Option(None, "--answers", help="CSV id,label of the true test labels "
                                 "(default: test_answers in comp.toml)"),
) -> None:
    """Score a submission against local answers with the competition metric (for held-out test labels you own).

        comp score submissions/tiny-tiny2_logreg.csv
        comp score submissions/blend.csv --answers ../data/toy_answers.csv
    """
    from comp.ensemble.stack import score_file

    ws = Workspace.here()
    competition = ws.load()
    value = score_file(competition, ws, file, answers)
    console.print(f"{file}: {competition.metric} {value:.5f}", highlight=False)
