"""`comp stack` and `comp score`: blend the models' logits into a submission, scored by honest CV."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from comp.cli.output import console, one_of, print_grid, print_json, say_next
from comp.core.errors import CompError
from comp.core.workspace import Workspace


def parse_models(text: str | None, ws: Workspace) -> list[str] | None:
    """--models a,b -> ["a", "b"]; not given -> None (every finished model). Empty names and unknown models are
    usage mistakes, named with the fix (an empty --models must not silently mean every model)."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",")]
    if not any(names):
        raise CompError("--models is empty: name models, e.g. --models tiny,tiny2, or leave --models out to blend "
                        "every finished model")
    if not all(names):
        raise CompError(f"--models {text!r} has an empty name between commas; write e.g. --models tiny,tiny2")
    unknown = [n for n in names if not ws.model_dir(n).is_dir()]
    if unknown:
        trained = sorted(p.name for p in ws.models_dir.iterdir() if p.is_dir()) if ws.models_dir.is_dir() else []
        raise CompError(f"--models: no trained model {', '.join(map(repr, unknown))} (no {ws.models_dir}/"
                        f"{unknown[0]}/); models there: {', '.join(trained) or 'none yet'}")
    return names


def stack_command(
    models: str | None = typer.Option(None, "--models", help="comma-separated aliases (default: every finished model)"),
    method: str = typer.Option("best", "--method", callback=one_of("comp.ensemble.stack", "CHOICES"),
                               help="best | mean | weights | logreg (best: best honest CV)"),
    name: str = typer.Option("", "--name", help="submission name (default: <models>_<method>, never overwriting)"),
    force: bool = typer.Option(False, "--force", "-f", help="replace submissions/NAME.csv if it exists (never one "
                               "already submitted)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON (CV table, weights, files)"),
    full: str = typer.Option("with", "--full", callback=one_of("comp.ensemble.stack", "FULL_MODES"),
                             help="a model's full fit (`comp train --fold full`): with (averaged with its folds' "
                             "test logits) | only (replaces them) | skip"),
) -> None:
    """Blend the OOF/test logits of trained models into submissions/NAME.csv (+ NAME.json), scored by honest CV.

    Prints the CV (per fold, mean ± std, whole OOF) of each model and of each method: mean of log-probabilities,
    hill-climbing weights (Caruana) and a logistic-regression stacker, the last two scored out-of-fold on the
    folds.csv split. Refuses logits made from other folds, classes or comp.toml, naming the model and fold. Without
    --models, models with unfinished folds are left out and listed. Models trained on k of the K folds (a --budget
    plan) are blended on the rows those folds hold out, and the output says so; a model's full fit
    (models/<alias>/full/) joins its folds' test logits (--full). An existing NAME is replaced only with --force,
    and never once it was submitted; without --name a free name is chosen.

        comp stack
        comp stack --models tiny,tiny2 --method logreg --name blend_v2
        comp stack --models tiny --method mean
    """
    from comp.ensemble.stack import stack

    ws = Workspace.here()
    competition = ws.load()
    result = stack(competition, ws, parse_models(models, ws), method, name or None, force=force, full=full)
    if as_json:
        print_json({"name": result.name, "method": result.method, "metric": result.metric,
                    "csv": result.csv, "json": result.json, "weights": result.weights,
                    "temperature": result.temperature, "cv": result.table, "skipped": result.skipped,
                    "warnings": result.warnings})
        return
    print_cv_table(result.table, result.metric, chosen=result.method)
    for warning in result.warnings:
        console.print(f"[bold yellow]note:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if result.csv is None:
        return
    weights = ", ".join(f"{a} {w:.3f}" for a, w in result.weights.items())
    temp = f", temperature {result.temperature:.3f}" if result.temperature is not None else ""
    console.print(
        f"[bold green]wrote[/] {escape(str(result.csv))} ({result.method}: {escape(weights)}{temp}; CV "
        f"{result.metric} {result.table[result.method]['oof']:.5f})", highlight=False, soft_wrap=True,
    )
    say_next(f"comp check {result.csv.relative_to(ws.root)}", "then `comp submit` it")


def print_cv_table(table: dict[str, dict], metric: str, chosen: str = "") -> None:
    """The CV table of `comp stack`: one row per model and method, per-fold scores, mean ± std, whole OOF."""
    n_folds = len(next(iter(table.values()))["per_fold"])
    rows = []
    for row, s in table.items():
        label = f"model {row.removeprefix('model:')}" if row.startswith("model:") else row
        mark = " *" if row == chosen else ""
        rows.append((escape(label) + (" [bold green]*[/]" if mark else ""), len(label) + len(mark),
                     [f"{v:.4f}" for v in s["per_fold"]], f"{s['mean']:.4f} ± {s['std']:.4f}", f"{s['oof']:.4f}"))
    print_grid(f"CV ({metric}, honest out-of-fold)", rows, n_folds)
    if chosen:
        console.print(f"[bold green]*[/] chosen: {chosen}", highlight=False)


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
    value = score_file(competition, ws, ws.resolve(file), ws.resolve(answers) if answers else None)
    console.print(f"{escape(str(file))}: {competition.metric} {value:.5f}", highlight=False)
