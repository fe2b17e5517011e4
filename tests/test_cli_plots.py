"""Plots worth looking at: markers and whole-epoch ticks, the score in titles, a per-class accuracy chart, class
names in any script without font warnings, and the CV-vs-public plot opened as an image."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from comp import logits
from comp.core import atomic
from comp.core.provenance import competition_hash
from comp.folds import load_folds

CJK = ("猫", "狗", "蛙")


def looks_like_a_plot(path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 150
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels.std() > 5, f"{path} is blank"


@pytest.fixture
def cjk_workspace(make_kaggle_competition, workspace, cli):
    data = make_kaggle_competition(workspace / "data" / "toy", classes=CJK, n_per_class=6, n_test=3)
    assert cli("init", str(data), "--n-folds", "3")[0] == 0
    assert cli("folds")[0] == 0
    from comp.core.workspace import Workspace

    ws = Workspace(workspace)
    return ws, ws.load()


def fake_runs(ws, comp, alias: str, epochs: int = 1) -> None:
    """Every fold of `alias` trained for `epochs` epochs; fold 0 reads half its first class as the second."""
    folds = load_folds(ws)
    index = {c: i for i, c in enumerate(comp.classes)}
    for k in range(folds.n_folds):
        rows = folds.frame[folds.frame["fold"] == k]
        y = rows["label"].map(index).to_numpy()
        predicted = y.copy()
        if k == 0:
            first = np.flatnonzero(y == 0)[:1]
            predicted[first] = 1
        paths = ws.run(alias, k)
        meta = {"folds_hash": folds.hash, "model": alias, "fold": k, "tta": "none"}
        values = np.eye(len(comp.classes), dtype=np.float32)[predicted] * 3
        logits.save(paths.oof, logits.Logits(rows["id"].to_numpy(), values, list(comp.classes), meta))
        atomic.write_json(paths.metrics, {"oof_score": float(np.mean(predicted == y)), "tta": "none"})
        atomic.write_json(paths.provenance, {"folds_hash": folds.hash, "competition_hash": competition_hash(comp),
                                             "finished": True})
        history = pd.DataFrame({"epoch": np.arange(1, epochs + 1), "train_loss": np.linspace(1.0, 0.5, epochs),
                                "val_loss": np.linspace(1.1, 0.6, epochs),
                                f"val_{comp.metric}": np.linspace(0.5, 0.9, epochs)})
        atomic.write_csv(paths.history, history)


def test_report_with_non_latin_class_names_draws_them_without_font_warnings(cjk_workspace, cli):
    ws, comp = cjk_workspace
    fake_runs(ws, comp, "a")
    code, out = cli("report", "--model", "a")
    assert code == 0, out
    assert "Glyph" not in out and "missing from font" not in out, out
    for name in ("confusion.png", "per_class.png", "curves.png"):
        looks_like_a_plot(ws.reports_dir / "a" / name)
    per_class = pd.read_csv(ws.reports_dir / "a" / "per_class.csv")
    assert sorted(per_class["class"]) == sorted(CJK)  # the data keeps the real names


def test_labels_fall_back_to_code_points_only_for_glyphs_no_font_has():
    from comp.report import _covered_chars, display_labels

    covered = _covered_chars()
    shown = display_labels(["cat", "猫"])
    assert shown[0] == "cat"
    assert shown[1] == ("猫" if ord("猫") in covered else "U+732B")


def _capture_figures(monkeypatch) -> list:
    import comp.report as report

    figures = []

    def keep(fig, path):
        figures.append((path.name, fig))

    monkeypatch.setattr(report, "_save", keep)
    return figures


def test_curves_have_markers_whole_epoch_ticks_a_compact_legend_and_the_score(cjk_workspace, monkeypatch):
    from comp.report import report

    ws, comp = cjk_workspace
    fake_runs(ws, comp, "a", epochs=1)  # a 1-epoch run: single points, the case that used to look empty
    captured = _capture_figures(monkeypatch)
    result = report(ws.load(), ws, "a")
    figures = dict(captured)
    assert set(figures) >= {"curves.png", "confusion.png", "per_class.png"}, figures
    curves = figures["curves.png"]
    left, right = curves.axes[:2]
    for ax in (left, right):
        assert all(line.get_marker() not in (None, "", "None") for line in ax.get_lines()), "a line has no marker"
        visible = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert visible and all(float(t).is_integer() for t in visible), visible
    assert len(left.get_legend().get_texts()) == 2  # train / validation, not one entry per fold and curve
    assert len(right.get_legend().get_texts()) == 3  # one per fold
    assert f"{result.cv['oof']:.4f}" in curves._suptitle.get_text()
    for name in ("confusion.png", "per_class.png"):
        title = figures[name].axes[0].get_title()
        assert f"{comp.metric} {result.cv['oof']:.4f}" in title and "±" in title, title


def test_per_class_chart_puts_the_weakest_class_on_top(cjk_workspace, monkeypatch):
    from comp.report import report

    ws, comp = cjk_workspace
    fake_runs(ws, comp, "a")
    captured = _capture_figures(monkeypatch)
    result = report(ws.load(), ws, "a")
    figures = dict(captured)
    ax = figures["per_class.png"].axes[0]
    widths = [bar.get_width() for bar in ax.patches]
    assert len(widths) == 3 and widths[-1] == pytest.approx(result.per_class["accuracy"].min())  # top bar = last
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert all("(n=6)" in label for label in labels)


def test_cv_vs_public_plot_is_written_and_is_a_real_image(make_toy_workspace, workspace, cli):
    from comp.submission import ledger

    ws, _ = make_toy_workspace(workspace)
    for i, (cv, public) in enumerate([(0.81, 0.80), (0.85, 0.83), (0.88, 0.84)]):
        ledger.append(ws, {"time": f"2026-11-30T12:0{i}:00", "file": f"submissions/s{i}.csv", "message": f"v{i}",
                           "cv": str(cv), "platform": "kaggle", "ref": str(100 + i), "status": "complete",
                           "public_score": str(public)})
    code, out = cli("submissions")
    assert code == 0 and "CV vs public score:" in out, out
    looks_like_a_plot(ws.ledger_plot)
    code, out = cli("submissions", "--json")
    rows = json.loads(out) if out.startswith("[") else None
    assert rows is not None and [r["ref"] for r in rows] == ["100", "101", "102"]
