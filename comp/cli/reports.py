"""`comp status` and `comp report`: what is trained, how well, and the plots."""

from __future__ import annotations

import typer
from rich.table import Table

from comp.cli.output import console
from comp.core.errors import CompError
from comp.core.workspace import Workspace


def status_command() -> None:
    """The models x folds grid: each fold's OOF score and TTA, what is missing or running, and stale runs.

    A run is stale when it was made from other folds or another comp.toml than those in force (retrain it with
    `comp train --model A --fold K --force`). CV is shown as mean +- std over folds and on the whole OOF.

        comp status
    """

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


def report_command(
    model: str = typer.Option("", "--model", "-m", help="model alias (default: every model with all folds trained)"),
) -> None:
    """Write a model's OOF report under reports/<alias>/: confusion matrix, per-class accuracy, confused pairs,
    learning curves of all folds, and the CV per fold, as mean +- std and on the whole OOF (summary.json).

        comp report --model tiny
        comp report                 # every fully trained model
    """
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
