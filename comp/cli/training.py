"""`comp train` and `comp predict`: (model, fold) runs and their logits."""

from __future__ import annotations

import os

import typer

from comp.cli.output import console
from comp.core.workspace import Workspace


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
    from comp.training.train import train as run_train

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
    from comp.core.workspace import Workspace
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
