"""CLI commands: workspace (`comp init`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from comp.cli import app, console
from comp.config import Workspace


@app.command("init")
def init(
    data_dir: Path = typer.Argument(..., help="Folder with the competition's downloaded (unzipped) files."),
    name: str = typer.Option("", "--name", help="Competition slug on its platform (default: the folder name)."),
    platform: str = typer.Option("none", "--platform", help="kaggle | codabench | none."),
    kind: str = typer.Option("", "--kind", help="Force the kind: class_name|class_id|binary|class_probs|topk."),
    metric: str = typer.Option("", "--metric", help="Metric (default: by kind, e.g. accuracy, roc_auc, log_loss)."),
    id_column: str = typer.Option("", "--id-column", help="The id column (sample submission and labels CSV)."),
    label_column: str = typer.Option("", "--label-column", help="The label column of the labels CSV."),
    labels_csv: str = typer.Option("", "--labels-csv", help="The labels CSV (id -> label), when not detected."),
    sample: str = typer.Option("", "--sample", help="The sample submission CSV, when not detected."),
    test_dir: str = typer.Option("", "--test-dir", help="The folder of test images, when not detected."),
    group_column: str = typer.Option("", "--group-column", help="Labels-CSV column whose rows share a fold."),
    n_folds: int = typer.Option(5, "--n-folds", help="K of the stratified K-fold split."),
    seed: int = typer.Option(42, "--seed", help="Seed of the fold split."),
    force: bool = typer.Option(False, "--force", help="Replace an existing comp.toml (recipes and runs are kept)."),
) -> None:
    """Inspect a downloaded competition and write comp.toml, folds/, submissions/ and models/ (stock recipes).

    Run it in the (empty) workspace folder:

        comp init data/cifar-10 --platform kaggle --name cifar-10

        comp init data/hw1 --platform codabench --n-folds 5

    Check the table it prints; anything it guessed can be edited in comp.toml or set with the flags above.
    """
    # Imported here, not at the top: comp.init pulls in torch (via comp.data) and `comp --help` must stay fast.
    from comp.init import InitOptions, init_workspace, preview_mapping

    ws = Workspace.here()
    options = InitOptions(
        name=name, platform=platform, kind=kind, metric=metric, id_column=id_column, label_column=label_column,
        labels_csv=labels_csv, sample=sample, test_dir=test_dir, group_column=group_column, n_folds=n_folds,
        seed=seed, force=force,
    )
    found = init_workspace(data_dir, ws, options)
    comp = found.competition
    table = Table(title=f"comp init: {comp.name}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    train_where = ", ".join(comp.train_dirs) + (f"  (labels: {comp.labels_csv})" if comp.labels_csv else "")
    rows = [
        ("layout", f"{comp.layout}: {train_where}"),
        ("train images", str(found.n_train)),
        ("classes", str(comp.num_classes)),
        ("test images", f"{found.n_test}  ({comp.test_dir})" if comp.test_dir else "none"),
        ("sample", comp.sample_submission or "none"),
        ("labels columns", f"{comp.train_id_column}, {comp.train_label_column}" if comp.layout == "csv" else "-"),
        ("submission columns", ", ".join([comp.id_column, *comp.label_columns]) if comp.sample_submission else "-"),
        ("kind", comp.kind + (f" (top {comp.top_k})" if comp.kind == "topk" else "")
         + (f" (positive: {comp.positive_class})" if comp.positive_class else "")),
        ("metric", comp.metric),
        ("class -> submission", preview_mapping(comp)),
        ("ignored files", f"{len(found.skipped)}: " + ", ".join(found.skipped[:10])
         + (" ..." if len(found.skipped) > 10 else "") if found.skipped else "none"),
        ("recipes copied", ", ".join(found.copied_recipes) or "none new"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    for note in found.notes:
        console.print(f"[cyan]note:[/] {note}", highlight=False)
    for warning in found.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if len(found.skipped) > 10:
        console.print("ignored (not images): " + ", ".join(found.skipped), highlight=False, soft_wrap=True)
    console.print(f"wrote {ws.comp_toml}; next: `comp verify`", highlight=False)
