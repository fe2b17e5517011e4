"""CLI commands: ensemble."""

from __future__ import annotations

from pathlib import Path

import typer

from comp.cli import app, console

# ---------------------------------------------------------------------------------------------------------------
# stack, score (comp/stack.py)


@app.command("stack")
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
    from comp.config import Workspace
    from comp.stack import stack

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
    from rich.table import Table

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


@app.command("score")
def score_command(
    file: Path = typer.Argument(..., help="submission CSV, e.g. submissions/NAME.csv"),
    answers: Path = typer.Option(None, "--answers", help="CSV id,label of the true test labels "
                                 "(default: test_answers in comp.toml)"),
) -> None:
    """Score a submission against local answers with the competition metric (for held-out test labels you own).

        comp score submissions/tiny-tiny2_logreg.csv
        comp score submissions/blend.csv --answers ../data/toy_answers.csv
    """
    from comp.config import Workspace
    from comp.stack import score_file

    ws = Workspace.here()
    competition = ws.load()
    value = score_file(competition, ws, file, answers)
    console.print(f"{file}: {competition.metric} {value:.5f}", highlight=False)


# ---------------------------------------------------------------------------------------------------------------
# predict, status, report (comp/predict.py, comp/report.py)


@app.command("predict")
def predict_command(
    model: str = typer.Option(..., "--model", "-m", help="model alias (a trained models/<alias>/)"),
    fold: str = typer.Option("all", "--fold", "-k", help="fold number, or `all` (every fold with a checkpoint)"),
    tta: str = typer.Option("none", "--tta", help="none | hflip | vflip | d4 | five_crop | multiscale | auto"),
    merge: str = typer.Option("mean", "--merge", help="mean (of logits) | prob (mean of probabilities)"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps"),
) -> None:
    """Recompute a model's OOF and test logits from its saved checkpoints with another TTA, without retraining.

    Rewrites models/<alias>/fold<k>/ oof_logits.npz, test_logits.npz and metrics.json (TTA recorded). `--tta auto`
    scores every preset on the OOF rows with the competition metric and keeps the best (the cheaper on a tie);
    it costs 21 forward passes per OOF image (1+2+2+3+5+8 views), then the chosen preset's on the test set.

        comp predict --model tiny --tta hflip
        comp predict --model convnext --fold 0 --tta d4 --device cuda
        comp predict --model convnext --tta auto          # then `comp stack` uses the chosen TTA's logits
    """
    from comp.config import Workspace
    from comp.predict import predict_model

    result = predict_model(Workspace.here(), model, fold, tta, device=device, merge=merge)
    if result.tta_scores:
        from rich.table import Table

        table = Table(title=f"{model}: TTA presets on OOF ({result.metric})", title_justify="left")
        table.add_column("tta")
        table.add_column(result.metric, justify="right")
        for preset, value in result.tta_scores.items():
            table.add_row(preset + (" [bold green]<- chosen[/]" if preset == result.tta else ""), f"{value:.4f}")
        for preset, why in result.unavailable.items():
            table.add_row(f"{preset} [dim](skipped)[/]", why[:80])
        console.print(table)
    for f in result.folds:
        console.print(f"[bold]{model}[/] fold {f.fold}: OOF {result.metric} {f.oof_score:.4f} (tta {result.tta}, "
                      f"{f.n_oof} OOF + {f.n_test} test rows)", highlight=False)
    if result.missing:
        console.print(f"[yellow]not trained yet:[/] fold(s) {', '.join(map(str, result.missing))}", highlight=False)


@app.command("status")
def status_command() -> None:
    """The models x folds grid: each fold's OOF score and TTA, what is missing or running, and stale runs.

    A run is stale when it was made from other folds or another comp.toml than those in force (retrain it with
    `comp train --model A --fold K --force`). CV is shown as mean +- std over folds and on the whole OOF.

        comp status
    """
    from rich.table import Table

    from comp.config import Workspace
    from comp.report import status

    grid = status(Workspace.here())
    if not grid.models:
        console.print("no trained models yet: run `comp train --model tiny` (or any recipe alias)")
        return
    from rich import box

    # No vertical rules: with 5+ folds a boxed grid leaves the model names no room in an 80-column terminal.
    table = Table(title=f"models x folds ({grid.metric}, OOF)", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True)
    table.add_column("model", no_wrap=True)
    for k in range(grid.n_folds):
        table.add_column(f"fold {k}", justify="right", no_wrap=True)
    table.add_column("mean +- std", justify="right", no_wrap=True)
    table.add_column("OOF", justify="right", no_wrap=True)
    marks = {"missing": "[dim]-[/]", "running": "[yellow]running[/]", "stale": "[red]stale[/]"}
    for m in grid.models:
        cells = []
        for c in m.cells:
            if c.state == "trained":
                score = "nan" if c.score is None else f"{c.score:.4f}"
                cells.append(score + (f" [dim]{c.tta}[/]" if c.tta and c.tta != "none" else ""))
            else:
                cells.append(marks[c.state] + (f" [dim]({c.why})[/]" if c.why else ""))
        cv = m.cv
        table.add_row(m.alias, *cells, f"{cv['mean']:.4f} +- {cv['std']:.4f}" if cv else "",
                      f"{cv['oof']:.4f}" if cv else "")
    console.print(table)
    if any(c.state == "stale" for m in grid.models for c in m.cells):
        console.print("[red]stale[/] runs were made from other folds or another comp.toml: retrain them with "
                      "`comp train --model A --fold K --force`")
    if grid.folds_hash is None:
        console.print("[yellow]no folds yet[/]: run `comp folds`; staleness cannot be checked without them")


@app.command("report")
def report_command(
    model: str = typer.Option("", "--model", "-m", help="model alias (default: every model with all folds trained)"),
) -> None:
    """Write a model's OOF report under reports/<alias>/: confusion matrix, per-class accuracy, confused pairs,
    learning curves of all folds, and the CV per fold, as mean +- std and on the whole OOF (summary.json).

        comp report --model tiny
        comp report                 # every fully trained model
    """
    from comp.config import Workspace
    from comp.errors import CompError
    from comp.report import report, status

    ws = Workspace.here()
    if model:
        aliases = [model]
    else:
        aliases = [m.alias for m in status(ws).models if all(c.state == "trained" for c in m.cells)]
        if not aliases:
            raise CompError("no model has every fold trained; name one with --model, or run `comp train` first")
    for alias in aliases:
        result = report(ws, alias)
        cv = result.cv
        folds = "  ".join(f"{v:.4f}" for v in cv["per_fold"])
        console.print(f"[bold]{alias}[/] {result.metric}: folds {folds}  mean {cv['mean']:.4f} +- {cv['std']:.4f}  "
                      f"OOF {cv['oof']:.4f}", highlight=False)
        worst = result.per_class.sort_values("accuracy").head(3)
        weakest = ", ".join(f"{r['class']} {r['accuracy']:.2f}" for _, r in worst.iterrows())
        console.print(f"  weakest classes: {weakest}", highlight=False)
        if len(result.pairs):
            console.print("  most confused: " + ", ".join(f"{r['true']} -> {r['predicted']} ({r['count']})"
                                                          for _, r in result.pairs.head(3).iterrows()), highlight=False)
        console.print(f"  wrote {', '.join(str(p.relative_to(ws.root)) for p in result.files.values())}",
                      highlight=False)
