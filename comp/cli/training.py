"""CLI commands: training (`comp train`)."""

from __future__ import annotations

import os

import typer

from comp.cli import app, console
from comp.config import Workspace


@app.command()
def train(
    model: str = typer.Option(..., "--model", "-m", help="recipe alias: models/<alias>.toml or a stock recipe"),
    fold: str = typer.Option("all", "--fold", "-k", help="fold number, or `all`"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps"),
    overrides: list[str] = typer.Option(None, "--set", help="override a recipe field, e.g. --set lr=3e-4 (repeatable)"),
    force: bool = typer.Option(False, "--force", help="retrain even if the fold is finished or its inputs changed"),
) -> None:
    """Train one backbone on one fold (or all): best checkpoint, resumable state, OOF and test logits.

    Trains on the other folds, scores the held-out fold every epoch with the competition's metric and writes
    models/<alias>/fold<k>/. Run the same command again after an interruption to resume from the last epoch; a
    finished fold is skipped, and one made from another recipe, folds or comp.toml is refused (--force retrains).

        comp train --model tiny --fold 0
        comp train --model convnext --fold all --device cuda --set epochs=20 --set lr=3e-4
        torchrun --nproc_per_node 4 -m comp train --model swag --fold 0      # DDP, one process per GPU
    """
    from comp.train import train as run_train

    summaries = run_train(Workspace.here(), model, fold, device=device, overrides=overrides, force=force)
    if int(os.environ.get("RANK", 0)) != 0:  # under torchrun only rank 0 reports
        return
    trained = [s for s in summaries if s.get("status") != "skipped"]
    skipped = [str(s["fold"]) for s in summaries if s.get("status") == "skipped"]
    if trained:  # each fold already printed its own line; the summary says where the folds stand together
        scores = ", ".join(f"fold {s['fold']} {s['oof_score']:.4f}" for s in trained)
        console.print(f"[bold]{model}[/]: OOF {trained[0]['metric']} {scores}", highlight=False)
    if skipped:
        console.print(f"{model}: fold(s) {', '.join(skipped)} already finished (use --force to retrain)")
