"""Checkpoints to logits: recompute a trained model's OOF and test logits with another TTA, without retraining.

`predict_model(comp, ws, alias, fold, tta)` rebuilds each fold's model from the resolved `recipe.toml` and
`best.safetensors` beside it, reads the images through the same cache and evaluation view as training, and rewrites
the fold's `comp.logits` files and `metrics.json` (with the TTA recorded). `tta="auto"` scores every preset on the
OOF rows and keeps the best by the competition metric, the cheaper one on a tie.

The TTA engine itself lives in `comp.vision.tta`; `predict_logits` is re-exported here for callers that know it as
`comp.predict.predict_logits`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from comp.core import atomic, metrics
from comp.core.config import Competition, from_dict, load_toml
from comp.core.errors import CompError
from comp.core.provenance import code_version, competition_hash
from comp.core.workspace import FULL, Workspace
from comp.kinds import kind_of
from comp.runs import Run, inputs_now, read_run, recipe_fields, require_current
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
    full: bool = False  # the full fit's test logits were rewritten too (--fold full, or --fold all when it exists)
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
    """(folds to predict, folds without a checkpoint) for `--fold K|all` (`--fold full`: no fold)."""
    have = [k for k in range(n_folds) if ws.run(alias, k).best.exists()]
    missing = [k for k in range(n_folds) if k not in have]
    if fold == FULL:
        if not ws.run(alias, FULL).best.exists():
            raise CompError(f"{alias} has no full fit ({ws.run(alias, FULL).best} is missing): run "
                            f"`comp train --model {alias} --fold full` first")
        return [], []
    if fold == "all":
        if not have and not ws.run(alias, FULL).best.exists():
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


def _check_inputs(ws: Workspace, alias: str, k: int | str, folds_hash: str, comp_hash: str) -> Run:
    """The run's record, refusing a run trained on other folds (its OOF would leak), another comp.toml, or from a
    recipe file edited since."""
    paths = ws.run(alias, k)
    record = read_run(paths)
    if record is None or not paths.recipe.exists():
        raise CompError(
            f"{paths.dir} has weights but no provenance.json/recipe.toml, so how they were made is unknown; "
            f"retrain with `comp train --model {alias} --fold {k} --force`"
        )

    def fix(changed: list[str]) -> str:
        if changed in (["recipe_file_hash"], ["recipe_hash"]):
            return (f"Retrain with `comp train --model {alias} --fold all --force`, or restore the recipe file as "
                    "it was")
        why = " (its OOF rows would include images it trained on)" if "folds_hash" in changed else ""
        return f"Retrain it{why}: `comp train --model {alias} --fold {k} --force`"

    # The recipe as the run resolved it, now: a comment edited in the file is not a change (training agrees); the
    # full fit holds out no fold, so the folds do not make it stale.
    now = inputs_now(ws, alias, k, folds_hash, comp_hash, record)
    compared = ("competition_hash",) if k == FULL else ("folds_hash", "competition_hash")
    require_current(record, now, f"{alias} {_name(k)}", fix, fields=(*compared, *recipe_fields(now)),
                    required=compared)
    return dataclasses.replace(record, model=alias, fold=k)  # as the directory says, whatever the file holds


class _FoldModel:
    """One fold's rebuilt model, its data config and the cached images it reads (shared across folds)."""

    def __init__(self, ws: Workspace, alias: str, k: int | str, num_classes: int, image_cache: dict) -> None:
        from comp.modeling.models import build_model, data_config, load_weights
        from comp.modeling.recipe import Recipe

        paths = ws.run(alias, k)
        self.recipe = from_dict(Recipe, load_toml(paths.recipe), str(paths.recipe))
        self.model = build_model(self.recipe, num_classes, pretrained=False, ws=ws)
        load_weights(paths.best, self.model)
        self.config = data_config(self.model, self.recipe)
        self.ws, self.cache = ws, image_cache
        self.batch = self.recipe.eval_batch_size or 2 * self.recipe.batch_size

    def images(self, paths: list[str]) -> np.ndarray:
        from comp.setup.verify import load_cached
        from comp.vision import images

        key = (tuple(paths), self.config["cache_size"])
        if key not in self.cache:
            verified = load_cached(self.ws)  # truncated test images let through by `comp verify --allow-broken-test`
            broken = verified.broken_test if verified is not None else []
            self.cache[key] = images.cached_images(self.ws, paths, self.config["cache_size"], truncated_ok=broken)
        return self.cache[key]

    def predict(self, paths: list[str], rows: np.ndarray, tta: str, merge: str, device, label: str) -> np.ndarray:
        from comp.vision.tta import eval_view

        view = eval_view(self.images(paths), self.config, tta)  # training's evaluation crop, so logits match
        return predict_logits(self.model, view, self.config, tta, self.batch, device, merge, description=label,
                              indices=rows)

    def test(self, paths: list[str], tta: str, merge: str, device, label: str) -> np.ndarray | None:
        return self.predict(paths, np.arange(len(paths)), tta, merge, device, label) if paths else None


@dataclass
class _Inputs:
    """What every fold of one `comp predict` reads: the training rows with their folds and labels, the test rows."""

    items: pd.DataFrame  # train_items joined with folds.csv (id, path, label, fold)
    y: np.ndarray  # class index of each row
    test: pd.DataFrame  # test_items (id, path)
    folds_hash: str
    comp_hash: str

    def rows(self, k: int) -> np.ndarray:
        return np.flatnonzero(self.items["fold"].to_numpy() == k)

    @property
    def train_paths(self) -> list[str]:
        return self.items["path"].astype(str).tolist()

    @property
    def test_paths(self) -> list[str]:
        return self.test["path"].astype(str).tolist()


def predict_model(
    comp: Competition,
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
    from comp.setup.items import class_indices, test_items, train_items, with_folds

    if tta != "auto" and tta not in PRESETS:
        raise CompError(f"--tta {tta!r}: choose one of {', '.join(PRESETS)} or auto")
    if merge not in MERGES:
        raise CompError(f"--merge {merge!r}: choose mean (of logits) or prob (mean of probabilities)")
    merge = kind_of(comp).merge(merge)  # `prob` averages the probabilities the kind makes (softmax or sigmoid)
    folds = load_folds(ws, comp)
    comp_hash = competition_hash(comp)  # what training records
    todo, missing = fold_list(ws, alias, fold, folds.n_folds)
    full = fold in (FULL, "all") and ws.run(alias, FULL).best.exists()
    if tta == "auto" and not todo:
        raise CompError("--tta auto chooses the preset on OOF rows, and a full fit has none: run `comp predict "
                        f"--model {alias} --fold all --tta auto` (its full fit takes the preset its folds choose)")
    records = {k: _check_inputs(ws, alias, k, folds.hash, comp_hash) for k in [*todo, *([FULL] if full else [])]}
    items = with_folds(train_items(comp, ws), folds.frame)
    inputs = _Inputs(items, class_indices(comp, items["label"], "training labels"), test_items(comp, ws),
                     folds.hash, comp_hash)
    run_device = resolve_device(device)
    cache: dict = {}
    started = time.time()
    oof, test_logits, unavailable = _predict_folds(ws, alias, comp.num_classes, todo, inputs, tta, merge, run_device,
                                                   cache)
    all_rows = np.concatenate([inputs.rows(k) for k in todo]) if todo else np.zeros(0, np.int64)
    scores = {
        p: metrics.score(comp.metric, inputs.y[all_rows], np.concatenate([oof[p][k] for k in todo]), comp.top_k)
        for p in oof if p not in unavailable
    } if todo else {}
    chosen = choose_preset(comp.metric, scores) if tta == "auto" else tta
    results = []
    for k in todo:
        if k not in test_logits:  # auto: the preset is known only now
            model = _FoldModel(ws, alias, k, comp.num_classes, cache)
            test_logits[k] = model.test(inputs.test_paths, chosen, merge, run_device, f"{alias} f{k} test {chosen}")
        results.append(_write_fold(ws, comp, records[k], inputs, oof[chosen][k], test_logits[k], chosen, merge,
                                   scores if tta == "auto" else None, (time.time() - started) / len(todo)))
    if full:  # test logits only: the full fit has no OOF rows
        model = _FoldModel(ws, alias, FULL, comp.num_classes, cache)
        test = model.test(inputs.test_paths, chosen, merge, run_device, f"{alias} full test {chosen}")
        _write_full(ws, comp, records[FULL], inputs, test, chosen, merge, time.time() - started)
    return PredictResult(alias, comp.metric, chosen, merge, results, missing, full=full,
                         tta_scores=scores if tta == "auto" else {}, unavailable=unavailable)


def _name(k: int | str) -> str:
    return "full fit" if k == FULL else f"fold {k}"


def _write_full(ws: Workspace, comp, record: Run, inputs: _Inputs, test: np.ndarray | None, tta: str, merge: str,
                seconds: float) -> None:
    """The full fit's new test logits (its record's hashes, this TTA) and its metrics.json's TTA."""
    from comp.logits import Logits, save

    paths = ws.run(record.model, FULL)
    run = dataclasses.replace(record, competition_hash=inputs.comp_hash, code_version=code_version())
    if test is not None:
        save(paths.test, Logits(inputs.test["id"].to_numpy(), test, comp.classes, run.meta(tta, tta_merge=merge)))
    try:
        recorded = json.loads(paths.metrics.read_text(encoding="utf-8")) if paths.metrics.exists() else {}
    except (OSError, ValueError):
        recorded = {}
    recorded.update(tta=tta, tta_merge=merge, predicted_by="comp predict", predict_s=round(seconds, 2))
    atomic.write_json(paths.metrics, recorded)


def _predict_folds(ws: Workspace, alias: str, num_classes: int, todo: list[int], inputs: _Inputs, tta: str,
                   merge: str, device, cache: dict) -> tuple[dict, dict[int, np.ndarray | None], dict[str, str]]:
    """OOF logits per candidate preset (every preset under auto) and fold, {preset: {fold: logits}}; test logits per
    fold when the preset is fixed; the presets the model refused under auto (e.g. a fixed-size ViT refusing
    multiscale) and why."""
    candidates = auto_order() if tta == "auto" else [tta]
    oof: dict[str, dict[int, np.ndarray]] = {p: {} for p in candidates}
    test_logits: dict[int, np.ndarray | None] = {}
    unavailable: dict[str, str] = {}
    for k in todo:
        model = _FoldModel(ws, alias, k, num_classes, cache)
        if tta != "auto":  # the preset is known: test logits now, without rebuilding the model later
            test_logits[k] = model.test(inputs.test_paths, tta, merge, device, f"{alias} f{k} test {tta}")
        for preset in candidates:
            if preset in unavailable:
                continue
            try:
                oof[preset][k] = model.predict(inputs.train_paths, inputs.rows(k), preset, merge, device,
                                               f"{alias} f{k} oof {preset}")
            except CompError as err:
                if tta != "auto":
                    raise
                unavailable[preset] = str(err)
        del model
    return oof, test_logits, unavailable


def _write_fold(ws: Workspace, comp, record: Run, inputs: _Inputs, oof: np.ndarray, test: np.ndarray | None,
                tta: str, merge: str, tta_scores: dict[str, float] | None, seconds: float) -> FoldResult:
    """Fold `record.fold`'s new OOF and test logits (with the run's hashes and the TTA in their meta) and its
    metrics.json; returns the fold's OOF score."""
    from comp.logits import Logits, save

    k, paths, rows = record.fold, ws.run(record.model, record.fold), inputs.rows(record.fold)
    # The run's record, with the inputs checked just now (folds, competition) and this command's code and TTA.
    run = dataclasses.replace(record, folds_hash=inputs.folds_hash, competition_hash=inputs.comp_hash,
                              code_version=code_version())
    meta = run.meta(tta, tta_merge=merge, tta_scores=tta_scores)
    save(paths.oof, Logits(inputs.items["id"].to_numpy()[rows], oof, comp.classes, meta))
    if test is not None:
        save(paths.test, Logits(inputs.test["id"].to_numpy(), test, comp.classes, meta))
    score = metrics.score(comp.metric, inputs.y[rows], oof, comp.top_k)
    _update_metrics(paths.metrics, comp.metric, score, tta, merge, tta_scores, seconds)
    return FoldResult(k, score, len(rows), len(inputs.test))


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

    model = _FoldModel(ws, alias, k, num_classes, {})
    out = model.test(paths, tta, merge, resolve_device(device), f"{alias} f{k} test {tta}")
    return out if out is not None else np.zeros((0, num_classes), np.float32)
