"""What the trained models look like: the models x folds status grid, and per-model reports.

`status(comp, ws)` reads only small files (metrics.json, provenance.json, the logits' metadata) to say, per model and
fold, whether it is trained, running, missing or stale (made from other folds or another comp.toml than those in
force). `report(comp, ws, alias)` joins a model's OOF logits with the folds.csv labels on id and writes, under
`reports/<alias>/`: the confusion matrix (PNG), per-class accuracy and the most confused pairs (CSV), the learning
curves of every fold (PNG) and a summary (JSON) with the CV per fold, as mean +- std, and on the whole OOF.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from comp.core import atomic, metrics
from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.provenance import competition_hash
from comp.core.workspace import FULL, Workspace
from comp.kinds import kind_of
from comp.runs import Run, differences, inputs_now, planned_folds, read_run, recipe_fields
from comp.setup.items import class_indices

TOP_PAIRS = 10  # confused pairs listed in the report
ANNOTATE_MAX = 20  # write counts inside the confusion-matrix cells up to this many classes
TICKS_MAX = 60  # label the axes with class names up to this many classes


# ---------------------------------------------------------------------------------------------------------------
# status


@dataclass
class Cell:
    """One (model, fold): state is trained | running | interrupted | missing | stale."""

    state: str
    score: float | None = None
    tta: str = ""
    why: str = ""  # stale: what changed (folds | comp.toml); running: who trains it (pid N on host)


@dataclass
class ModelStatus:
    alias: str
    cells: list[Cell]
    cv: dict[str, Any] | None = None  # per_fold, mean, std, oof when every fold is trained and current
    full: Cell | None = None  # the full fit (models/<alias>/full/), when it was started
    planned: list[int] = field(default_factory=list)  # the folds it is meant to have (a --budget plan: k of K)

    @property
    def trained_scores(self) -> list[float]:
        return [c.score for c in self.cells if c.state == "trained" and c.score is not None]

    def mean_std(self) -> tuple[float, float, int] | None:
        """(mean, std, n) over the trained folds' OOF scores (all folds once complete); None when none is trained."""
        scores = self.cv["per_fold"] if self.cv else self.trained_scores
        if not scores:
            return None
        return float(np.mean(scores)), float(np.std(scores)), len(scores)

    def to_json(self) -> dict[str, Any]:
        stats = self.mean_std()
        return {"model": self.alias, "folds": [{"fold": k, **asdict(c)} for k, c in enumerate(self.cells)],
                "mean": stats[0] if stats else None, "std": stats[1] if stats else None,
                "n_trained": stats[2] if stats else 0, "cv": self.cv,
                "full": asdict(self.full) if self.full else None, "planned_folds": self.planned}


@dataclass
class Status:
    metric: str
    n_folds: int
    folds_hash: str | None  # None when there are no folds yet
    models: list[ModelStatus] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "n_folds": self.n_folds, "folds_hash": self.folds_hash,
                "models": [m.to_json() for m in self.models]}


def model_aliases(ws: Workspace) -> list[str]:
    """Aliases with at least one run directory under models/."""
    if not ws.models_dir.is_dir():
        return []
    # A lock alone counts: a run killed right after taking it has no run directory yet.
    return sorted(d.name for d in ws.models_dir.iterdir()
                  if d.is_dir() and (any(d.glob("fold*")) or any(d.glob(".fold*.lock")) or (d / FULL).is_dir()
                                     or (d / f".{FULL}.lock").exists()))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def resume_command(alias: str, k: int | str, overrides: list[str] | None = None) -> str:
    from comp.runs import train_command

    return train_command(alias, k, overrides)


def _cell(ws: Workspace, alias: str, k: int | str, folds_hash: str | None, comp_hash: str) -> Cell:
    from comp.core.runlock import holder

    paths = ws.run(alias, k)
    try:
        provenance = read_run(paths)
    except CompError:  # unreadable: `comp train` names it
        provenance = None
    if provenance is not None:
        # The one staleness comparison (comp.runs), reported here instead of raised; folds first, as training does.
        # The full fit holds out no fold: only another comp.toml (or its recipe) makes it stale.
        compared = ("folds_hash", "competition_hash") if folds_hash is not None and k != FULL else \
            ("competition_hash",)
        try:  # the recipe as the run resolved it, now: what train, predict and stack compare
            now = inputs_now(ws, alias, k, folds_hash, comp_hash, provenance)
            recipe = recipe_fields(now)
        except CompError:  # the recipe file no longer loads: `comp train` names why
            now, recipe = Run(folds_hash=folds_hash, competition_hash=comp_hash), ()
        changed = [name for name, _, _ in differences(provenance, now, compared, required=compared)]
        changed += [name for name, _, _ in differences(provenance, now, recipe)]
        if changed:
            why = {"folds_hash": "folds", "competition_hash": "comp.toml"}.get(changed[0], "recipe settings")
            return Cell("stale", why=why)
    record = _read_json(paths.metrics)
    if record is not None and paths.output.exists():
        return Cell("trained", record.get("oof_score"), str(record.get("tta", "")))
    lock = holder(paths)
    if lock is not None and lock.alive:
        return Cell("running", why=f"pid {lock.pid} on {lock.host}")
    if lock is not None or provenance is not None or paths.last.exists():
        # Started but not finished, and no live process holds it: killed, crashed or stopped with Ctrl-C.
        overrides = provenance.overrides if provenance is not None else None
        return Cell("interrupted", why=f"resume: {resume_command(alias, k, overrides)}")
    return Cell("missing")


def status(comp: Competition, ws: Workspace) -> Status:
    """The models x folds grid of the workspace (reads metadata only, except the OOF of fully trained models)."""
    folds_hash, n_folds = None, comp.n_folds
    if ws.folds_csv.exists():
        from comp.folds import load_folds

        folds = load_folds(ws)
        folds_hash, n_folds = folds.hash, folds.n_folds
    comp_hash = competition_hash(comp)
    result = Status(comp.metric, n_folds, folds_hash)
    for alias in model_aliases(ws):
        cells = [_cell(ws, alias, k, folds_hash, comp_hash) for k in range(n_folds)]
        model = ModelStatus(alias, cells, planned=planned_folds(ws, alias, n_folds))
        full = _cell(ws, alias, FULL, folds_hash, comp_hash)
        model.full = None if full.state == "missing" else full
        if folds_hash is not None and all(c.state == "trained" for c in cells):
            try:
                y, values, fold = oof_table(comp, ws, alias)
                model.cv = metrics.fold_scores(comp.metric, y, values, fold, comp.top_k)
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
    ys, values, fold_ids = [], [], []
    for k in range(folds.n_folds):
        path = ws.run(alias, k).oof
        if not path.exists():
            raise CompError(f"{alias} fold {k} has no OOF logits ({path}); run `comp train --model {alias} --fold {k}`")
        part = load(path)
        if part.meta.folds_hash not in (None, folds.hash):
            raise CompError(f"{alias} fold {k}: its OOF logits were made from other folds; retrain it with --force")
        if list(part.classes) != list(comp.classes):
            raise CompError(f"{alias} fold {k}: logits columns {part.classes} differ from comp.toml classes")
        unknown = [i for i in part.ids if i not in frame.index]
        if unknown:
            raise CompError(f"{path}: {len(unknown)} id(s) are not in folds.csv, e.g. {unknown[:3]}")
        labels = frame.loc[part.ids, "label"].astype(str)
        ys.append(class_indices(comp, labels, "folds.csv"))
        values.append(part.values)
        fold_ids.append(np.full(len(part.ids), k))
    return np.concatenate(ys), np.concatenate(values), np.concatenate(fold_ids)


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
        ("confusion", "confusion.png"), ("per_class", "per_class.csv"), ("per_class_plot", "per_class.png"),
        ("pairs", "confused_pairs.csv"),
        ("curves", "curves.png"), ("summary", "summary.json"),
    )}


def confusion(y: np.ndarray, logits: np.ndarray, n_classes: int, multilabel: bool) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class (argmax). Multi-label (y multi-hot, a class
    predicted where its logit > 0): the diagonal counts the images of a class that predict it, cell (i, j) the
    images of class i that predict a class j they do not have; so a row's diagonal over its images is the class's
    recall, as it is for single-label."""
    if not multilabel:
        from sklearn.metrics import confusion_matrix

        return confusion_matrix(y, np.argmax(logits, axis=1), labels=np.arange(n_classes))
    truth, pred = np.asarray(y).astype(bool), np.asarray(logits) > 0
    matrix = truth.T.astype(np.int64) @ (pred & ~truth).astype(np.int64)
    np.fill_diagonal(matrix, (truth & pred).sum(axis=0))
    return matrix


def report(comp: Competition, ws: Workspace, alias: str) -> Report:
    """Write `alias`'s confusion matrix, per-class accuracy, confused pairs, learning curves and CV summary."""
    y, values, fold = oof_table(comp, ws, alias)
    cv = metrics.fold_scores(comp.metric, y, values, fold, comp.top_k)
    matrix = confusion(y, values, comp.num_classes, kind_of(comp).multilabel)
    support = matrix.sum(axis=1) if y.ndim == 1 else y.sum(axis=0)  # images of each class
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
    score = f"{comp.metric} {cv['oof']:.4f} (folds {cv['mean']:.4f} ± {cv['std']:.4f})"
    _plot_confusion(files["confusion"], matrix, comp.classes, f"{alias}: OOF confusion, {len(y)} images\n{score}")
    _plot_per_class(files["per_class_plot"], per_class, f"{alias}: OOF accuracy per class\n{score}")
    atomic.write_csv(files["per_class"], per_class)
    atomic.write_csv(files["pairs"], pairs)
    curves = _plot_curves(files["curves"], ws, alias, comp.metric, int(fold.max()) + 1, score)
    if not curves:
        files.pop("curves")
    summary = {"model": alias, "metric": comp.metric, "cv": cv, "n_oof": len(y),
               "per_class_accuracy": dict(zip(comp.classes, per_class["accuracy"].astype(float), strict=True)),
               "confused_pairs": pairs.to_dict(orient="records")}
    atomic.write_json(files["summary"], summary)
    return Report(alias, comp.metric, cv, per_class, pairs, files)


# Fonts tried after DejaVu Sans for glyphs it lacks (CJK, Arabic, ...); matplotlib falls back per glyph along the list.
FALLBACK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK KR", "Noto Sans CJK TC", "Source Han Sans",
                  "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "AR PL UMing CN", "IPAGothic",
                  "IPAexGothic", "Noto Sans", "Noto Sans Arabic", "Noto Sans Devanagari", "Noto Sans Thai",
                  "Arial Unicode MS", "Unifont")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    families = ["DejaVu Sans", *(f for f in FALLBACK_FONTS if f in _installed_fonts())]
    plt.rcParams["font.family"] = families
    return plt


def _installed_fonts() -> set[str]:
    from matplotlib import font_manager

    return {f.name for f in font_manager.fontManager.ttflist}


def _covered_chars() -> set[int]:
    """Code points some font of the family list can draw (read once from the fonts' character maps)."""
    global _COVERED
    if _COVERED is None:
        from matplotlib import font_manager
        from matplotlib.ft2font import FT2Font

        names = {"DejaVu Sans", *FALLBACK_FONTS}
        covered: set[int] = set()
        for entry in font_manager.fontManager.ttflist:
            if entry.name in names:
                try:
                    covered.update(FT2Font(entry.fname).get_charmap())
                except (OSError, RuntimeError):
                    continue
        _COVERED = covered
    return _COVERED


_COVERED: set[int] | None = None


def display_labels(classes: list[str]) -> list[str]:
    """Class names as a plot can draw them: unchanged when an installed font has every glyph; otherwise the
    characters no font has are written as their code points (U+732B), never as empty boxes with a font warning."""
    covered = _covered_chars()
    out = []
    for name in classes:
        if all(ord(ch) in covered or ch.isspace() for ch in name):
            out.append(name)
        else:
            out.append("".join(ch if ord(ch) in covered else f"U+{ord(ch):04X}" for ch in name))
    return out


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _plot_confusion(path: Path, matrix: np.ndarray, classes: list[str], title: str) -> None:
    plt = _pyplot()
    n = len(classes)
    labels = display_labels(classes)
    side = min(20.0, max(5.0, 0.35 * n + 2))
    fig, ax = plt.subplots(figsize=(side, side))
    # Rows normalised by the true class: colour = recall share, so rare classes are as visible as common ones.
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= TICKS_MAX:
        ax.set_xticks(range(n), labels, rotation=90)
        ax.set_yticks(range(n), labels)
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


def _plot_per_class(path: Path, per_class: pd.DataFrame, title: str) -> None:
    """Horizontal bars of OOF accuracy per class, worst at the top, with each class's image count."""
    plt = _pyplot()
    frame = per_class.assign(label=display_labels([str(c) for c in per_class["class"]]))
    frame = frame.sort_values("accuracy", ascending=False, na_position="first")
    n = len(frame)
    fig, ax = plt.subplots(figsize=(7, min(30.0, max(2.5, 0.28 * n + 1.2))))
    accuracy = frame["accuracy"].fillna(0).to_numpy()
    colours = plt.get_cmap("RdYlGn")(accuracy)
    ax.barh(range(n), accuracy, color=colours, edgecolor="grey", linewidth=0.4)
    ax.set_yticks(range(n), [f"{lab} (n={int(c)})" for lab, c in zip(frame["label"], frame["n"], strict=True)]
                  if n <= TICKS_MAX else [""] * n, fontsize=8 if n > 20 else 9)
    mean = float(np.nanmean(frame["accuracy"])) if frame["accuracy"].notna().any() else 0.0
    ax.axvline(mean, color="black", linestyle="--", linewidth=0.8, label=f"mean over classes {mean:.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("OOF accuracy")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    _save(fig, path)


def _plot_curves(path: Path, ws: Workspace, alias: str, metric: str, n_folds: int, score: str = "") -> bool:
    """Train/validation loss and the validation metric per epoch, one colour per fold; False when no history.

    Every point has a marker (a 1-epoch run is a dot, not an invisible line), epochs are whole-number ticks, and the
    legend names each fold once (line style says train or validation)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    histories = {k: pd.read_csv(ws.run(alias, k).history) for k in range(n_folds) if ws.run(alias, k).history.exists()}
    if not histories:
        return False
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for k, frame in histories.items():
        colour = f"C{k % 10}"
        if "train_loss" in frame:
            left.plot(frame["epoch"], frame["train_loss"], "--", marker="o", markersize=4, color=colour)
        if "val_loss" in frame:
            left.plot(frame["epoch"], frame["val_loss"], "-", marker="s", markersize=4, color=colour)
        if f"val_{metric}" in frame:
            right.plot(frame["epoch"], frame[f"val_{metric}"], "-", marker="o", markersize=4, color=colour,
                       label=f"fold {k}")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    epochs = [e for frame in histories.values() for e in frame["epoch"]]
    if epochs and min(epochs) == max(epochs):  # a single epoch: a readable axis around it, not 0.96 .. 1.04
        for ax in (left, right):
            ax.set_xlim(min(epochs) - 1, max(epochs) + 1)
    left.set_ylabel("loss")
    left.legend(handles=[Line2D([], [], color="grey", linestyle="--", marker="o", label="train"),
                         Line2D([], [], color="grey", linestyle="-", marker="s", label="validation")], fontsize=8)
    right.set_ylabel(f"validation {metric}")
    right.legend(fontsize=8, ncol=2 if len(histories) > 5 else 1)
    fig.suptitle(f"{alias}: learning curves" + (f" — OOF {score}" if score else ""))
    _save(fig, path)
    return True


# ---------------------------------------------------------------------------------------------------------------
# models: every recipe, what is trained from it, and with which settings


@dataclass
class ModelInfo:
    """One recipe alias: its backbone, its trained folds, their CV, and the settings they were trained with that
    differ from the recipe file now (key -> (value when trained, value now))."""

    alias: str
    backbone: str
    origin: str  # workspace (models/<alias>.toml) | stock (shipped with comp) | none (runs without a recipe file)
    trained: list[int]
    n_folds: int
    mean: float | None = None
    std: float | None = None
    differs: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    error: str = ""  # the recipe file does not load (the message says why)
    full: bool = False  # a full fit (`comp train --fold full`) is trained

    @property
    def overrides(self) -> list[str]:
        """`--set` arguments that reproduce the trained settings from the recipe file as it is now."""
        return [f"--set {key}={_set_value(then)}" for key, (then, _now) in self.differs.items()]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["differs"] = {k: {"trained": a, "recipe": b} for k, (a, b) in self.differs.items()}
        return out


def _set_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value)
    return f'"{text}"' if not text or " " in text else text


def models(comp: Competition, ws: Workspace) -> list[ModelInfo]:
    """Every recipe alias (stock, workspace, or with runs) with its trained folds, CV and differing settings."""
    from comp.core.config import tomllib
    from comp.modeling.recipe import STOCK_RECIPES, load_recipe, recipe_dict

    current = status(comp, ws)
    grid, n_folds = {m.alias: m for m in current.models}, current.n_folds
    local = {p.stem for p in ws.models_dir.glob("*.toml")} if ws.models_dir.is_dir() else set()
    stock = {p.stem for p in STOCK_RECIPES.glob("*.toml")}
    out = []
    for alias in sorted(local | stock | set(grid)):
        origin = "workspace" if alias in local else "stock" if alias in stock else "none"
        info = ModelInfo(alias, "", origin, [], n_folds)
        now: dict[str, Any] = {}
        if origin != "none":
            try:
                now = recipe_dict(load_recipe(ws, alias))
                info.backbone = str(now.get("name", ""))
            except CompError as err:
                info.error = str(err)
        row = grid.get(alias)
        if row is not None:
            info.trained = [k for k, c in enumerate(row.cells) if c.state == "trained"]
            info.full = row.full is not None and row.full.state == "trained"
            stats = row.mean_std()
            if stats:
                info.mean, info.std = stats[0], stats[1]
        for k in info.trained:
            try:
                then = tomllib.loads(ws.run(alias, k).recipe.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            info.backbone = info.backbone or str(then.get("name", ""))
            for key, value in then.items():
                if now and now.get(key) != value and key not in info.differs:
                    info.differs[key] = (value, now.get(key))
        out.append(info)
    return out

