"""What the trained models look like: the models x folds status grid, and per-model reports.

`status(ws)` reads only small files (metrics.json, provenance.json, the logits' metadata) to say, per model and
fold, whether it is trained, running, missing or stale (made from other folds or another comp.toml than those in
force). `report(ws, alias)` joins a model's OOF logits with the folds.csv labels on id and writes, under
`reports/<alias>/`: the confusion matrix (PNG), per-class accuracy and the most confused pairs (CSV), the learning
curves of every fold (PNG) and a summary (JSON) with the CV per fold, as mean +- std, and on the whole OOF.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from comp.core import atomic, metrics
from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.provenance import competition_hash
from comp.core.workspace import Workspace

TOP_PAIRS = 10  # confused pairs listed in the report
ANNOTATE_MAX = 20  # write counts inside the confusion-matrix cells up to this many classes
TICKS_MAX = 60  # label the axes with class names up to this many classes


# ---------------------------------------------------------------------------------------------------------------
# status


@dataclass
class Cell:
    """One (model, fold): state is trained | running | missing | stale."""

    state: str
    score: float | None = None
    tta: str = ""
    why: str = ""  # stale: what changed (folds | comp.toml); running: epochs done ("e3")


@dataclass
class ModelStatus:
    alias: str
    cells: list[Cell]
    cv: dict[str, Any] | None = None  # per_fold, mean, std, oof when every fold is trained and current


@dataclass
class Status:
    metric: str
    n_folds: int
    folds_hash: str | None  # None when there are no folds yet
    models: list[ModelStatus] = field(default_factory=list)


def model_aliases(ws: Workspace) -> list[str]:
    """Aliases with at least one run directory under models/."""
    if not ws.models_dir.is_dir():
        return []
    return sorted(d.name for d in ws.models_dir.iterdir() if d.is_dir() and any(d.glob("fold*")))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _cell(ws: Workspace, alias: str, k: int, folds_hash: str | None, comp_hash: str) -> Cell:
    paths = ws.run(alias, k)
    provenance = _read_json(paths.provenance) or {}
    if provenance and folds_hash is not None and provenance.get("folds_hash") != folds_hash:
        return Cell("stale", why="folds")
    if provenance and provenance.get("competition_hash") != comp_hash:
        return Cell("stale", why="comp.toml")
    record = _read_json(paths.metrics)
    if record is not None and paths.oof.exists():
        return Cell("trained", record.get("oof_score"), str(record.get("tta", "")))
    if provenance or paths.last.exists():
        history = pd.read_csv(paths.history) if paths.history.exists() else None
        return Cell("running", why=f"e{len(history)}" if history is not None else "")
    return Cell("missing")


def cv_summary(metric: str, y: np.ndarray, logits: np.ndarray, fold: np.ndarray, top_k: int = 5) -> dict[str, Any]:
    """The metric per fold, their mean and std, and the metric on the whole OOF."""
    fold = np.asarray(fold)
    per_fold = [metrics.score(metric, y[fold == k], logits[fold == k], top_k) for k in np.unique(fold)]
    return {"per_fold": per_fold, "mean": float(np.mean(per_fold)), "std": float(np.std(per_fold)),
            "oof": metrics.score(metric, y, logits, top_k)}


def status(ws: Workspace) -> Status:
    """The models x folds grid of the workspace (reads metadata only, except the OOF of fully trained models)."""
    comp = ws.load()
    folds_hash, n_folds = None, comp.n_folds
    if ws.folds_csv.exists():
        from comp.folds import load_folds

        folds = load_folds(ws)
        folds_hash, n_folds = folds.hash, folds.n_folds
    comp_hash = competition_hash(comp)
    result = Status(comp.metric, n_folds, folds_hash)
    for alias in model_aliases(ws):
        cells = [_cell(ws, alias, k, folds_hash, comp_hash) for k in range(n_folds)]
        model = ModelStatus(alias, cells)
        if folds_hash is not None and all(c.state == "trained" for c in cells):
            try:
                y, values, fold = oof_table(comp, ws, alias)
                model.cv = cv_summary(comp.metric, y, values, fold, comp.top_k)
            except CompError:
                pass  # the grid still shows the per-fold scores; `comp report` names the problem
        result.models.append(model)
    return result


# ---------------------------------------------------------------------------------------------------------------
# report


def oof_table(comp: Competition, ws: Workspace, alias: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, logits, fold) of `alias` over every OOF row, joined with folds.csv on id (never on position)."""
    from comp.folds import load_folds
    from comp.logits import load

    folds = load_folds(ws)
    frame = folds.frame.set_index("id")
    class_index = {c: i for i, c in enumerate(comp.classes)}
    ys, values, fold_ids = [], [], []
    for k in range(folds.n_folds):
        path = ws.run(alias, k).oof
        if not path.exists():
            raise CompError(f"{alias} fold {k} has no OOF logits ({path}); run `comp train --model {alias} --fold {k}`")
        part = load(path)
        if part.meta.get("folds_hash") not in (None, folds.hash):
            raise CompError(f"{alias} fold {k}: its OOF logits were made from other folds; retrain it with --force")
        if list(part.classes) != list(comp.classes):
            raise CompError(f"{alias} fold {k}: logits columns {part.classes} differ from comp.toml classes")
        unknown = [i for i in part.ids if i not in frame.index]
        if unknown:
            raise CompError(f"{path}: {len(unknown)} id(s) are not in folds.csv, e.g. {unknown[:3]}")
        labels = frame.loc[part.ids, "label"].astype(str)
        ys.append(labels.map(class_index).to_numpy())
        values.append(part.values)
        fold_ids.append(np.full(len(part.ids), k))
    y = np.concatenate(ys)
    if np.isnan(y.astype(float)).any():
        raise CompError("folds.csv holds labels outside comp.toml `classes`; run `comp folds --force`")
    return y.astype(np.int64), np.concatenate(values), np.concatenate(fold_ids)


@dataclass
class Report:
    alias: str
    metric: str
    cv: dict[str, Any]
    per_class: pd.DataFrame  # class, n, correct, accuracy
    pairs: pd.DataFrame  # true, predicted, count, share_of_true
    files: dict[str, Path]


def report_paths(ws: Workspace, alias: str) -> dict[str, Path]:
    """The files of `reports/<alias>/` (the one place their names are chosen)."""
    base = ws.reports_dir / alias
    return {name: base / file for name, file in (
        ("confusion", "confusion.png"), ("per_class", "per_class.csv"), ("pairs", "confused_pairs.csv"),
        ("curves", "curves.png"), ("summary", "summary.json"),
    )}


def report(ws: Workspace, alias: str) -> Report:
    """Write `alias`'s confusion matrix, per-class accuracy, confused pairs, learning curves and CV summary."""
    from sklearn.metrics import confusion_matrix

    comp = ws.load()
    y, values, fold = oof_table(comp, ws, alias)
    cv = cv_summary(comp.metric, y, values, fold, comp.top_k)
    predicted = np.argmax(values, axis=1)
    n_classes = comp.num_classes
    matrix = confusion_matrix(y, predicted, labels=np.arange(n_classes))
    support = matrix.sum(axis=1)
    per_class = pd.DataFrame({
        "class": comp.classes, "n": support, "correct": np.diag(matrix),
        "accuracy": np.where(support > 0, np.diag(matrix) / np.maximum(support, 1), np.nan),
    })
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:TOP_PAIRS]
    pairs = pd.DataFrame([
        {"true": comp.classes[i], "predicted": comp.classes[j], "count": int(off[i, j]),
         "share_of_true": float(off[i, j] / support[i]) if support[i] else 0.0}
        for i, j in zip(*np.unravel_index(order, off.shape), strict=True) if off[i, j] > 0
    ], columns=["true", "predicted", "count", "share_of_true"])
    files = report_paths(ws, alias)
    _plot_confusion(files["confusion"], matrix, comp.classes, f"{alias}: OOF confusion ({len(y)} images)")
    atomic.write_csv(files["per_class"], per_class)
    atomic.write_csv(files["pairs"], pairs)
    curves = _plot_curves(files["curves"], ws, alias, comp.metric, int(fold.max()) + 1)
    if not curves:
        files.pop("curves")
    summary = {"model": alias, "metric": comp.metric, "cv": cv, "n_oof": len(y),
               "per_class_accuracy": dict(zip(comp.classes, per_class["accuracy"].astype(float), strict=True)),
               "confused_pairs": pairs.to_dict(orient="records")}
    atomic.write_json(files["summary"], summary)
    return Report(alias, comp.metric, cv, per_class, pairs, files)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _plot_confusion(path: Path, matrix: np.ndarray, classes: list[str], title: str) -> None:
    plt = _pyplot()
    n = len(classes)
    side = min(20.0, max(5.0, 0.35 * n + 2))
    fig, ax = plt.subplots(figsize=(side, side))
    # Rows normalised by the true class: colour = recall share, so rare classes are as visible as common ones.
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= TICKS_MAX:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
    if n <= ANNOTATE_MAX:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    _save(fig, path)


def _plot_curves(path: Path, ws: Workspace, alias: str, metric: str, n_folds: int) -> bool:
    """Train/validation loss and the validation metric per epoch, one colour per fold; False when no history."""
    histories = {k: pd.read_csv(ws.run(alias, k).history) for k in range(n_folds) if ws.run(alias, k).history.exists()}
    if not histories:
        return False
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for k, frame in histories.items():
        colour = f"C{k % 10}"
        if "train_loss" in frame:
            left.plot(frame["epoch"], frame["train_loss"], "--", color=colour, label=f"fold {k} train")
        if "val_loss" in frame:
            left.plot(frame["epoch"], frame["val_loss"], "-", color=colour, label=f"fold {k} val")
        if f"val_{metric}" in frame:
            right.plot(frame["epoch"], frame[f"val_{metric}"], "-o", color=colour, label=f"fold {k}")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend(fontsize=7)
    right.set_xlabel("epoch")
    right.set_ylabel(f"validation {metric}")
    right.legend(fontsize=7)
    fig.suptitle(f"{alias}: learning curves")
    _save(fig, path)
    return True
