"""Checkpoints to logits: recompute a trained model's OOF and test logits with another TTA, without retraining.

`predict_model(ws, alias, fold, tta)` rebuilds each fold's model from the resolved `recipe.toml` and
`best.safetensors` beside it, reads the images through the same cache and evaluation view as training, and rewrites
the fold's `comp.logits` files and `metrics.json` (with the TTA recorded). `tta="auto"` scores every preset on the
OOF rows and keeps the best by the competition metric, the cheaper one on a tie.

The TTA engine itself lives in `comp.tta`; `predict_logits` is re-exported here for callers that know it as
`comp.predict.predict_logits`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from comp.core import atomic, metrics
from comp.core.config import from_dict, load_toml
from comp.core.errors import CompError, StaleError
from comp.core.provenance import code_version, competition_hash
from comp.core.workspace import Workspace
from comp.vision.tta import MERGES, PRESETS, VIEWS, predict_logits

__all__ = ["MERGES", "PRESETS", "VIEWS", "FoldResult", "PredictResult", "auto_order", "choose_preset",
           "fold_test_logits", "predict_logits", "predict_model"]


@dataclass
class FoldResult:
    """One fold's outcome: its OOF score with the TTA used, and how many rows were written."""

    fold: int
    oof_score: float
    n_oof: int
    n_test: int


@dataclass
class PredictResult:
    """What `predict_model` did, for the CLI summary."""

    alias: str
    metric: str
    tta: str  # the preset used (the chosen one under auto)
    merge: str
    folds: list[FoldResult]
    missing: list[int]  # folds without a checkpoint (skipped under --fold all)
    tta_scores: dict[str, float] = field(default_factory=dict)  # auto: OOF score of each preset tried
    unavailable: dict[str, str] = field(default_factory=dict)  # auto: presets the model refused, and why


def auto_order() -> list[str]:
    """Presets from the cheapest to the most expensive (forward passes per image); ties keep PRESETS order."""
    return sorted(PRESETS, key=lambda p: (VIEWS[p], PRESETS.index(p)))


def choose_preset(metric: str, scores: dict[str, float]) -> str:
    """The best-scoring preset; a tie goes to the cheaper one (only a strictly better score displaces it)."""
    best, best_score = None, None
    for preset in auto_order():
        if preset in scores and (best is None or metrics.is_better(metric, scores[preset], best_score)):
            best, best_score = preset, scores[preset]
    if best is None:
        raise CompError("--tta auto: no preset could be scored on the OOF rows")
    return best


def fold_list(ws: Workspace, alias: str, fold: int | str, n_folds: int) -> tuple[list[int], list[int]]:
    """(folds to predict, folds without a checkpoint) for `--fold K|all`."""
    have = [k for k in range(n_folds) if ws.run(alias, k).best.exists()]
    missing = [k for k in range(n_folds) if k not in have]
    if fold == "all":
        if not have:
            raise CompError(
                f"{alias} has no trained fold under {ws.model_dir(alias)}: run `comp train --model {alias}` first"
            )
        return have, missing
    from comp.folds import parse_fold

    (k,) = parse_fold(fold, n_folds)
    if k not in have:
        raise CompError(
            f"{alias} fold {k} has no checkpoint ({ws.run(alias, k).best} is missing): run "
            f"`comp train --model {alias} --fold {k}` first"
        )
    return [k], []


def _check_inputs(ws: Workspace, alias: str, k: int, folds_hash: str, comp_hash: str) -> dict[str, Any]:
    """The run's provenance, refusing a run trained on other folds or another comp.toml (its OOF would leak)."""
    from comp.runs import read_provenance

    paths = ws.run(alias, k)
    record = read_provenance(paths)
    if record is None or not paths.recipe.exists():
        raise CompError(
            f"{paths.dir} has weights but no provenance.json/recipe.toml, so how they were made is unknown; "
            f"retrain with `comp train --model {alias} --fold {k} --force`"
        )
    if record.get("folds_hash") != folds_hash:
        raise StaleError(
            f"{alias} fold {k} was trained on other folds than folds/folds.csv now holds: its OOF rows would include "
            f"images it trained on. Retrain it: `comp train --model {alias} --fold {k} --force`"
        )
    from comp.modeling.recipe import refuse_edited_recipe

    refuse_edited_recipe(ws, alias, record.get("recipe_file_hash"), f"{alias} fold {k}")
    if record.get("competition_hash") != comp_hash:
        raise StaleError(
            f"{alias} fold {k} was trained with another comp.toml (classes or data changed since); retrain it: "
            f"`comp train --model {alias} --fold {k} --force`"
        )
    return record


class _Fold:
    """One fold's rebuilt model, its data config and the cached images it reads (shared across folds)."""

    def __init__(self, ws: Workspace, alias: str, k: int, num_classes: int, image_cache: dict) -> None:
        from comp.modeling.models import build_model, data_config, load_weights
        from comp.modeling.recipe import Recipe
        from comp.vision import images

        paths = ws.run(alias, k)
        self.recipe = from_dict(Recipe, load_toml(paths.recipe), str(paths.recipe))
        self.model = build_model(self.recipe, num_classes, pretrained=False, ws=ws)
        load_weights(paths.best, self.model)
        self.config = data_config(self.model)
        side = images.cache_size(int(self.config["input_size"][-1]), float(self.config.get("crop_pct") or 1.0))
        self.side, self.ws, self.cache = side, ws, image_cache
        self.batch = self.recipe.eval_batch_size or 2 * self.recipe.batch_size

    def images(self, paths: list[str]) -> np.ndarray:
        from comp.vision import images

        key = (tuple(paths), self.side)
        if key not in self.cache:
            self.cache[key] = images.cached_images(self.ws, paths, self.side)
        return self.cache[key]

    def predict(self, paths: list[str], rows: np.ndarray, tta: str, merge: str, device, label: str) -> np.ndarray:
        from comp.vision.tta import eval_view

        view = eval_view(self.images(paths), self.config, tta)  # training's evaluation crop, so logits match
        return predict_logits(self.model, view, self.config, tta, self.batch, device, merge, description=label,
                              indices=rows)


def predict_model(
    ws: Workspace,
    alias: str,
    fold: int | str = "all",
    tta: str = "none",
    device: str = "auto",
    merge: str = "mean",
) -> PredictResult:
    """Recompute `alias`'s OOF and test logits for fold `fold` (or every trained fold) with TTA `tta` (or auto)."""
    from comp.core.device import resolve_device
    from comp.folds import load_folds
    from comp.items import test_items, train_items
    from comp.logits import Logits, load, save

    if tta != "auto" and tta not in PRESETS:
        raise CompError(f"--tta {tta!r}: choose one of {', '.join(PRESETS)} or auto")
    if merge not in MERGES:
        raise CompError(f"--merge {merge!r}: choose mean (of logits) or prob (mean of probabilities)")
    comp = ws.load()
    folds = load_folds(ws, comp)
    comp_hash = competition_hash(comp)  # what comp.train records
    todo, missing = fold_list(ws, alias, fold, folds.n_folds)
    records = {k: _check_inputs(ws, alias, k, folds.hash, comp_hash) for k in todo}
    items = train_items(comp, ws).merge(folds.frame[["id", "fold"]], on="id", how="left", validate="one_to_one")
    if items["fold"].isna().any():
        raise StaleError("some training ids are not in folds.csv; run `comp folds --force` (then retrain)")
    class_index = {c: i for i, c in enumerate(comp.classes)}
    y = items["label"].astype(str).map(class_index).to_numpy(dtype=np.int64)
    test = test_items(comp, ws)
    train_paths, test_paths = items["path"].astype(str).tolist(), test["path"].astype(str).tolist()
    run_device = resolve_device(device)
    cache: dict = {}
    fold_rows = {k: np.flatnonzero(items["fold"].to_numpy() == k) for k in todo}

    # OOF logits for every candidate preset (one under a fixed --tta), per fold.
    candidates = auto_order() if tta == "auto" else [tta]
    oof: dict[str, dict[int, np.ndarray]] = {p: {} for p in candidates}
    test_logits: dict[int, np.ndarray | None] = {}
    unavailable: dict[str, str] = {}
    started = time.time()
    for k in todo:
        run = _Fold(ws, alias, k, comp.num_classes, cache)
        if tta != "auto":  # the preset is known: test logits now, without rebuilding the model later
            test_logits[k] = _test(run, test_paths, tta, merge, run_device, f"{alias} f{k} test {tta}")
        for preset in candidates:
            if preset in unavailable:
                continue
            try:
                oof[preset][k] = run.predict(train_paths, fold_rows[k], preset, merge, run_device,
                                             f"{alias} f{k} oof {preset}")
            except CompError as err:
                if tta != "auto":
                    raise
                unavailable[preset] = str(err)  # e.g. a fixed-size ViT refusing multiscale
        del run
    all_rows = np.concatenate([fold_rows[k] for k in todo])
    scores = {
        p: metrics.score(comp.metric, y[all_rows], np.concatenate([oof[p][k] for k in todo]), comp.top_k)
        for p in candidates if p not in unavailable
    }
    chosen = choose_preset(comp.metric, scores) if tta == "auto" else tta

    results = []
    for k in todo:
        paths = ws.run(alias, k)
        if k not in test_logits:
            run = _Fold(ws, alias, k, comp.num_classes, cache)
            test_logits[k] = _test(run, test_paths, chosen, merge, run_device, f"{alias} f{k} test {chosen}")
        old_meta = load(paths.oof).meta if paths.oof.exists() else {}
        meta = {**old_meta, "folds_hash": folds.hash, "recipe_hash": records[k].get("recipe_hash", ""),
                "competition_hash": comp_hash, "code_version": code_version(), "model": alias, "fold": k,
                "tta": chosen, "tta_merge": merge}
        if tta == "auto":
            meta["tta_scores"] = scores
        save(paths.oof, Logits(items["id"].to_numpy()[fold_rows[k]], oof[chosen][k], comp.classes, meta))
        if test_logits[k] is not None:
            save(paths.test, Logits(test["id"].to_numpy(), test_logits[k], comp.classes, meta))
        score = metrics.score(comp.metric, y[fold_rows[k]], oof[chosen][k], comp.top_k)
        _update_metrics(paths.metrics, comp.metric, score, chosen, merge, scores if tta == "auto" else None,
                        (time.time() - started) / len(todo))
        results.append(FoldResult(k, score, len(fold_rows[k]), len(test)))
    return PredictResult(alias, comp.metric, chosen, merge, results, missing,
                         scores if tta == "auto" else {}, unavailable)


def _test(run: _Fold, paths: list[str], tta: str, merge: str, device, label: str) -> np.ndarray | None:
    return run.predict(paths, np.arange(len(paths)), tta, merge, device, label) if paths else None


def _update_metrics(path, metric: str, score: float, tta: str, merge: str, tta_scores: dict | None,
                    seconds: float) -> None:
    """metrics.json keeps what training wrote; the OOF score and the TTA that produced it are replaced."""
    try:
        record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError):
        record = {}
    record.update(metric=metric, oof_score=score, tta=tta, tta_merge=merge, predicted_by="comp predict",
                  predict_s=round(seconds, 2))  # this fold's share of the command's time
    if tta_scores is not None:
        record["tta_scores"] = tta_scores
    else:
        record.pop("tta_scores", None)
    atomic.write_json(path, record)


def fold_test_logits(ws: Workspace, alias: str, k: int, num_classes: int, paths: list[str], tta: str,
                     merge: str = "mean", device: str = "auto") -> np.ndarray:
    """Fold `k` of `alias` on the images at `paths`, rebuilt from its saved recipe and weights exactly as
    `predict_model` does for the test set (same cache, evaluation view and TTA): the code a code-competition kernel
    runs (`comp.bundle.kernel`)."""
    from comp.core.device import resolve_device

    run = _Fold(ws, alias, k, num_classes, {})
    out = _test(run, paths, tta, merge, resolve_device(device), f"{alias} f{k} test {tta}")
    return out if out is not None else np.zeros((0, num_classes), np.float32)
