"""`comp train` and `comp predict`: (model, fold) runs and their logits."""

from __future__ import annotations

import os

import typer
from rich.markup import escape

from comp.cli.output import console, err_console, fold_value, one_of, say_next
from comp.core.workspace import Workspace


def train(
    model: str = typer.Option(..., "--model", help="recipe alias: models/<alias>.toml or a stock one (`comp models`)"),
    fold: str = typer.Option("all", "--fold", "-k", callback=fold_value,
                             help="fold number, `all`, or `full` (a fit on every labelled row: test logits only)"),
    device: str = typer.Option("auto", "--device", callback=one_of("comp.core.device", "DEVICES"),
                               help="auto | cpu | cuda | mps"),
    overrides: list[str] = typer.Option(None, "--set", help="override a recipe field, e.g. --set lr=3e-4 (repeatable)"),
    force: bool = typer.Option(False, "--force", "-f", help="retrain even if the fold is finished or its inputs "
                               "changed"),
    budget: str = typer.Option(None, "--budget", help="wall-clock time for the whole command (e.g. 2h, 5m): times "
                               "the first steps, then picks image side, epochs, how many folds and whether to add "
                               "a full fit, for the best expected score that fits (it prints what it weighed)"),
    pseudo: str = typer.Option(None, "--pseudo", help="a stack (submissions/NAME.json) whose confident test "
                               "predictions join every fold's training rows as pseudo-labels"),
    pseudo_threshold: float = typer.Option(None, "--pseudo-threshold", help="stacked probability a test image "
                                           "needs to join (default 0.9)"),
    fold_parallel: bool = typer.Option(False, "--fold-parallel", help="under torchrun: each process trains its own "
                                       "folds on its own device (no DDP)"),
) -> None:
    """Train one backbone on one fold (or all): best checkpoint, resumable state, OOF and test logits.

    Trains on the other folds, scores the held-out fold every epoch with the competition's metric and writes
    models/<alias>/fold<k>/. `--fold full` trains on every labelled row (no OOF; the epochs and img_size of the
    model's folds when they exist) and writes test logits to models/<alias>/full/; `comp stack` uses them.
    Verifies the data first when it has not been verified since it last changed. Run the
    same command again after an interruption (Ctrl-C, a killed process) to resume from the last finished epoch; a
    finished fold is skipped, and one made from another recipe, folds or comp.toml is refused (--force retrains).

        comp train --model tiny --fold 0
        comp train --model convnext --device cuda --set epochs=20 --set lr=3e-4
        torchrun --nproc_per_node 4 -m comp train --model swag --fold 0
        comp train --model effnet-lite0 --budget 5m                 # side, epochs, folds, full fit: within 5 min
        comp train --model effnet-lite0 --fold full                 # every labelled row, the folds' settings
        comp train --model effnet-pl --pseudo effnet_mean --pseudo-threshold 0.95
        torchrun --nproc_per_node 4 -m comp train --model convnext --fold-parallel   # 4 folds at once
    """
    from comp.training.budget import process_started
    from comp.training.train import train as run_train

    ws = Workspace.here()
    # Under torchrun only rank 0 reports, except with --fold-parallel, where each process reports its own folds.
    rank0 = int(os.environ.get("RANK", 0)) == 0 or fold_parallel
    overrides = [*(overrides or []), *([f"pseudo={pseudo}"] if pseudo else []),
                 *([f"pseudo_threshold={pseudo_threshold}"] if pseudo_threshold is not None else [])]
    again = " ".join(["comp train --model", model, "--fold", fold, *(["--device", device] if device != "auto" else []),
                      *(f"--set {o}" for o in overrides or []),
                      *(["--budget", budget] if budget else [])])
    try:
        summaries = run_train(ws.load(), ws, model, fold, device=device, overrides=overrides, force=force,
                              budget=budget, fold_parallel=fold_parallel, pseudo_source=_pseudo_labels,
                              started=process_started())
    except KeyboardInterrupt:
        if rank0:
            _say_interrupted(ws, model, again)
        raise SystemExit(130) from None  # past typer, which would return 130 for `main` to explain again
    if not rank0:
        return
    trained = [s for s in summaries if s.get("status") != "skipped"]
    skipped = [str(s["fold"]) for s in summaries if s.get("status") == "skipped"]
    scores = [s["oof_score"] for s in summaries if isinstance(s.get("oof_score"), int | float)]
    full = [s for s in trained if s.get("fold") == "full"]
    trained = [s for s in trained if s.get("fold") != "full"]
    if trained:  # each fold already printed its own line; the summary says where the folds stand together
        import numpy as np

        metric = trained[0]["metric"]
        per_fold = ", ".join(f"fold {s['fold']} {s['oof_score']:.4f}" for s in summaries
                             if isinstance(s.get("oof_score"), int | float))
        spread = f"; mean {np.mean(scores):.4f} ± {np.std(scores):.4f} over {len(scores)} folds" if len(scores) > 1 \
            else ""
        console.print(f"[bold]{escape(model)}[/]: OOF {metric} {per_fold}{spread}", highlight=False, soft_wrap=True)
    if full:
        console.print(f"[bold]{escape(model)}[/]: full fit on {full[0].get('n_train', 'every')} labelled rows, test "
                      f"logits (tta {full[0].get('tta')}) -> {ws.run(model, 'full').test.relative_to(ws.root)}",
                      highlight=False, soft_wrap=True)
    if skipped:
        console.print(f"{escape(model)}: run(s) {', '.join(skipped)} already finished (--force retrains them)",
                      highlight=False)
    _say_next_after_train(ws, model, overrides, budget)


def _say_interrupted(ws: Workspace, model: str, again: str) -> None:
    """Ctrl-C: what each fold kept (the last finished epoch is saved after every epoch) and the command to resume."""
    folds = sorted(int(d.name[4:]) for d in ws.model_dir(model).glob("fold*") if d.name[4:].isdigit())
    saved = [k for k in folds if ws.run(model, k).last.exists() and not ws.run(model, k).oof.exists()]
    done = [k for k in folds if ws.run(model, k).oof.exists()]
    full = ws.run(model, "full")
    if full.last.exists() and not full.test.exists():
        saved.append("full")
    elif full.test.exists():
        done.append("full")
    kept = []
    if done:
        kept.append(f"finished fold(s) {', '.join(map(str, done))}")
    if saved:
        kept.append(f"the last finished epoch of fold(s) {', '.join(map(str, saved))} "
                    f"({ws.run(model, saved[0]).last.relative_to(ws.root)})")
    what = " and ".join(kept) if kept else "nothing of this run yet (no epoch had finished)"
    err_console.print(f"[bold yellow]interrupted[/]: kept {escape(what)}; resume with `{escape(again)}`",
                      highlight=False, soft_wrap=True)


def _say_next_after_train(ws: Workspace, model: str, overrides: list[str], budget: str | None) -> None:
    from comp.report import status

    try:
        grid = status(ws.load(), ws)
    except Exception:  # noqa: BLE001 - a hint must never turn a finished training into an error
        return
    row = next((m for m in grid.models if m.alias == model), None)
    if row is None:
        return
    missing = [k for k, c in enumerate(row.cells) if c.state != "trained" and k in row.planned]
    if missing:
        from comp.runs import train_command

        command = train_command(model, missing[0] if len(missing) == 1 else "all", overrides)
        say_next(command + (f" --budget {budget}" if budget else ""),
                 f"fold(s) {', '.join(map(str, missing))} not trained yet")
    else:
        say_next("comp stack", f"blend {model} (and any other finished model) into a submission; "
                 "`comp report` plots it")


def predict_command(
    model: str = typer.Option(..., "--model", help="model alias (a trained models/<alias>/)"),
    fold: str = typer.Option("all", "--fold", "-k", callback=fold_value,
                             help="fold number, `all` (every fold with a checkpoint, and the full fit), or `full`"),
    tta: str = typer.Option("none", "--tta", callback=one_of("comp.vision.tta", "PRESETS", "auto"),
                            help="none | hflip | vflip | d4 | five_crop | multiscale | auto"),
    merge: str = typer.Option("mean", "--merge", callback=one_of("comp.vision.tta", "MERGES"),
                              help="mean (of logits) | prob (mean of probabilities)"),
    device: str = typer.Option("auto", "--device", callback=one_of("comp.core.device", "DEVICES"),
                               help="auto | cpu | cuda | mps"),
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

    ws = Workspace.here()
    result = predict_model(ws.load(), ws, model, fold, tta, device=device, merge=merge)
    if result.tta_scores:
        from rich.table import Table

        table = Table(title=f"{model}: TTA presets on OOF ({result.metric})", title_justify="left")
        table.add_column("tta")
        table.add_column(result.metric, justify="right")
        for preset, value in result.tta_scores.items():
            table.add_row(preset + (" [bold green]<- chosen[/]" if preset == result.tta else ""), f"{value:.4f}")
        for preset, why in result.unavailable.items():
            table.add_row(f"{preset} [dim](skipped)[/]", escape(why[:80]))
        console.print(table)
    for f in result.folds:
        console.print(f"[bold]{escape(model)}[/] fold {f.fold}: OOF {result.metric} {f.oof_score:.4f} "
                      f"(tta {result.tta}, {f.n_oof} OOF + {f.n_test} test rows)", highlight=False)
    if result.full:
        console.print(f"[bold]{escape(model)}[/] full fit: test logits (tta {result.tta})", highlight=False)
    if result.missing:
        console.print(f"[yellow]not trained yet:[/] fold(s) {', '.join(map(str, result.missing))}", highlight=False)


def _pseudo_labels(*args, **kwargs):
    # Imported only when a run asks for pseudo-labels: comp.ensemble (stack, sklearn) costs a `comp train` ~2 s of a
    # CPU core to import, which a short --budget would otherwise take from training.
    from comp.ensemble.pseudo import pseudo_labels

    return pseudo_labels(*args, **kwargs)
