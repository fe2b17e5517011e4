"""`comp status`, `comp models` and `comp report`: what is trained, from which settings, how well, and the plots."""

from __future__ import annotations

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from comp.cli.output import console, print_grid, print_json, say_next
from comp.core.errors import CompError
from comp.core.workspace import Workspace

JSON_HELP = "Print machine-readable JSON instead of the table."


def _mean_std(stats: tuple[float, float, int] | None, n_folds: int) -> str:
    if stats is None:
        return ""
    mean, std, n = stats
    return f"{mean:.4f} ± {std:.4f}" + (f" ({n}/{n_folds})" if n < n_folds else "")


def status_command(
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The models x folds grid: each fold's OOF score, what is missing, training now, interrupted or stale.

    A fold is "running" while a live process holds its lock, "interrupted" when its training stopped before the end
    (killed, crashed or Ctrl-C; resume with the command shown), and "stale" when it was made from other folds or
    another comp.toml than those in force (retrain it with --force). Each model gets the mean ± std of its folds'
    scores and, once every fold is trained, the score on the whole OOF.

        comp status
        comp status --json | jq '.models[].mean'
    """
    from comp.report import status

    ws = Workspace.here()
    grid = status(ws.load(), ws)
    if as_json:
        print_json(grid.to_json())
        return
    if not grid.models:
        console.print("no trained models yet: run `comp train --model tiny` (or any recipe alias; `comp models` lists "
                      "them)", highlight=False)
        return
    marks = {"missing": "[dim]-[/]", "running": "[cyan]running[/]", "interrupted": "[yellow]stopped[/]",
             "stale": "[red]stale[/]"}
    notes, rows = [], []
    for m in grid.models:
        cells = []
        for k, c in enumerate(m.cells):
            if c.state == "trained":
                cells.append("nan" if c.score is None else f"{c.score:.4f}")
            else:
                cells.append(marks[c.state])
                if c.state == "interrupted":
                    command = c.why.removeprefix("resume: ")  # with the run's own --set values
                    notes.append(f"[yellow]{escape(m.alias)} fold {k}[/]: interrupted; resume with "
                                 f"`{escape(command)}`")
                elif c.state == "running":
                    notes.append(f"[cyan]{escape(m.alias)} fold {k}[/]: training now ({c.why})")
                elif c.state == "stale":
                    notes.append(f"[red]{escape(m.alias)} fold {k}[/]: made from other {c.why}; retrain with "
                                 f"`comp train --model {escape(m.alias)} --fold {k} --force`")
        rows.append((m.alias, cells, _mean_std(m.mean_std(), grid.n_folds), f"{m.cv['oof']:.4f}" if m.cv else ""))
        if len(m.planned) < grid.n_folds:
            notes.append(f"{escape(m.alias)}: its --budget plan trains fold{'s' if len(m.planned) > 1 else ''} "
                         f"{', '.join(map(str, m.planned))} of {grid.n_folds} (models/{escape(m.alias)}/plan.json)")
        if m.full is not None:
            state = {"trained": "trained (test logits" + (f", tta {m.full.tta})" if m.full.tta else ")"),
                     "running": f"training now ({m.full.why})",
                     "interrupted": f"interrupted; resume with `comp train --model {escape(m.alias)} --fold full`",
                     "stale": f"made from another {m.full.why}; retrain with `comp train --model "
                              f"{escape(m.alias)} --fold full --force`"}[m.full.state]
            notes.append(f"{escape(m.alias)} full fit: {state}")
    print_grid(f"models x folds ({grid.metric}, OOF)", [(escape(a), len(a), c, m, o) for a, c, m, o in rows],
               grid.n_folds)
    for note in notes:  # wrapped at the terminal's width, like the grid
        console.print(note, highlight=False)
    ttas = {m.alias: {c.tta for c in m.cells if c.state == "trained" and c.tta and c.tta != "none"}
            for m in grid.models}
    with_tta = [f"{a} {', '.join(sorted(t))}" for a, t in ttas.items() if t]
    if with_tta:
        console.print(f"[dim]TTA: {escape('; '.join(with_tta))}[/]", highlight=False, soft_wrap=True)
    if grid.folds_hash is None:
        console.print("[yellow]no folds yet[/]: run `comp folds`; staleness cannot be checked without them")
    elif any(m.cv or (m.planned and all(m.cells[k].state == "trained" for k in m.planned)) for m in grid.models):
        say_next("comp stack", "blend the fully trained models into a submission")


def models_command(
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Every recipe (stock and models/*.toml): its backbone, trained folds, CV, and settings that differ.

    A setting that differs is one the trained folds used (their models/ALIAS/fold<k>/recipe.toml, --set included)
    that the recipe file no longer says; the command that reproduces them and the one that retrains are printed.

        comp models
        comp models --json
    """
    from comp.report import models

    ws = Workspace.here()
    infos = models(ws.load(), ws)
    if as_json:
        print_json([m.to_json() for m in infos])
        return
    # The backbone last, where a long timm tag may fold: model names, folds and CV stay on one line at 80 columns.
    table = Table(title="recipes", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("model", no_wrap=True, min_width=max(len(m.alias) for m in infos) + 2)
    table.add_column("trained", no_wrap=True)
    table.add_column("CV mean ± std", justify="right", no_wrap=True)
    table.add_column("backbone", overflow="fold")
    for m in infos:
        trained = f"{len(m.trained)}/{m.n_folds}" if m.trained else "[dim]-[/]"
        trained += " + full" if m.full else ""
        cv = f"{m.mean:.4f} ± {m.std:.4f}" if m.mean is not None else ""
        mark = " [dim]*[/]" if m.origin == "stock" else ""
        table.add_row(escape(m.alias) + mark, trained, cv, escape(m.backbone or "?"))
    console.print(table)
    if any(m.origin == "stock" for m in infos):
        console.print(f"[dim]* stock recipe, not in {escape(str(ws.models_dir))}/ (copy it there to edit it)[/]",
                      highlight=False)
    for m in infos:
        if m.error:
            console.print(f"[red]{escape(m.alias)}[/]: {escape(m.error)}", highlight=False)
        if m.differs:
            changed = ", ".join(f"{k}: {then!r} when trained, {now!r} now" for k, (then, now) in m.differs.items())
            console.print(
                f"[yellow]{escape(m.alias)}[/] was trained with other settings than its recipe file says "
                f"({escape(changed)}); reproduce: `comp train --model {escape(m.alias)} "
                f"{escape(' '.join(m.overrides))}`, or retrain "
                f"with the file's settings: `comp train --model {escape(m.alias)} --fold all --force`",
                highlight=False,
            )


def report_command(
    model: str = typer.Option("", "--model", help="model alias (default: every model with all folds trained)"),
) -> None:
    """Write a model's OOF report under reports/<alias>/: confusion matrix, per-class accuracy (chart and CSV),
    confused pairs, learning curves of all folds, and the CV per fold, as mean ± std and on the whole OOF.

        comp report --model tiny
        comp report                 # every fully trained model
    """
    from comp.report import report, status

    ws = Workspace.here()
    comp = ws.load()
    if model:
        aliases = [model]
    else:
        aliases = [m.alias for m in status(comp, ws).models if all(c.state == "trained" for c in m.cells)]
        if not aliases:
            raise CompError("no model has every fold trained; name one with --model, or run `comp train` first "
                            "(`comp status` shows what is trained)")
    for alias in aliases:
        result = report(comp, ws, alias)
        cv = result.cv
        folds = "  ".join(f"{v:.4f}" for v in cv["per_fold"])
        console.print(f"[bold]{escape(alias)}[/] {result.metric}: folds {folds}  mean {cv['mean']:.4f} ± "
                      f"{cv['std']:.4f}  OOF {cv['oof']:.4f}", highlight=False)
        worst = result.per_class.sort_values("accuracy").head(3)
        weakest = ", ".join(f"{r['class']} {r['accuracy']:.2f}" for _, r in worst.iterrows())
        console.print(f"  weakest classes: {escape(weakest)}", highlight=False)
        if len(result.pairs):
            console.print("  most confused: " + escape(", ".join(f"{r['true']} -> {r['predicted']} ({r['count']})"
                                                                 for _, r in result.pairs.head(3).iterrows())),
                          highlight=False)
        console.print(f"  wrote {', '.join(str(p.relative_to(ws.root)) for p in result.files.values())}",
                      highlight=False, soft_wrap=True)
