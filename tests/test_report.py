"""`comp status` and `comp report` on hand-made runs whose OOF predictions (and so every number) are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from comp import logits
from comp.core import atomic
from comp.core.config import Competition
from comp.core.provenance import competition_hash
from comp.core.workspace import Workspace
from comp.folds import load_folds
from comp.report import report, status


@pytest.fixture
def make_workspace(make_toy_workspace):
    """The factory make_workspace(root) -> (Workspace, Competition)."""

    def make(root: Path) -> tuple[Workspace, Competition]:
        return make_toy_workspace(root, n_per_class=6, n_test=3)

    return make


def write_run(ws: Workspace, comp: Competition, alias: str, k: int, confuse: dict[str, str] | None = None,
              folds_hash: str | None = None, finished: bool = True) -> None:
    """A finished fold whose OOF logits predict the true label, except `confuse` (true -> predicted)."""
    folds = load_folds(ws)
    rows = folds.frame[folds.frame["fold"] == k]
    predicted = [(confuse or {}).get(label, label) for label in rows["label"]]
    values = np.eye(comp.num_classes, dtype=np.float32)[[comp.classes.index(p) for p in predicted]] * 3.0
    paths = ws.run(alias, k)
    meta = {"folds_hash": folds.hash, "model": alias, "fold": k, "tta": "none"}
    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.1, 0.7],
                            f"val_{comp.metric}": [0.5, 0.8]})
    atomic.write_csv(paths.history, history)
    atomic.write_json(paths.provenance, {"folds_hash": folds_hash or folds.hash, "finished": finished,
                                         "competition_hash": competition_hash(comp)})
    if finished:
        logits.save(paths.oof, logits.Logits(rows["id"].to_numpy(), values, list(comp.classes), meta))
        accuracy = float(np.mean(np.array(predicted) == rows["label"].to_numpy()))
        atomic.write_json(paths.metrics, {"oof_score": accuracy, "tta": "none", "metric": comp.metric})


def test_report_writes_confusion_per_class_pairs_curves_and_cv(make_workspace, workspace, cli):
    ws, comp = make_workspace(workspace)
    write_run(ws, comp, "a", 0, confuse={"cat": "dog"})  # fold 0's cats (2 of them) read as dogs
    write_run(ws, comp, "a", 1)
    write_run(ws, comp, "a", 2, confuse={"frog": "cat"})
    code, out = cli("report", "--model", "a")
    assert code == 0, out
    result = report(ws.load(), ws, "a")
    folds = load_folds(ws).frame
    n_cat0 = int(((folds["fold"] == 0) & (folds["label"] == "cat")).sum())
    n_frog2 = int(((folds["fold"] == 2) & (folds["label"] == "frog")).sum())
    assert n_cat0 and n_frog2  # stratified folds: every class in every fold
    per_class = result.per_class.set_index("class")
    assert per_class.loc["cat", "accuracy"] == pytest.approx(1 - n_cat0 / 6)
    assert per_class.loc["dog", "accuracy"] == 1.0
    assert per_class.loc["frog", "accuracy"] == pytest.approx(1 - n_frog2 / 6)
    pairs = {(r["true"], r["predicted"]): r["count"] for _, r in result.pairs.iterrows()}
    assert pairs == {("cat", "dog"): n_cat0, ("frog", "cat"): n_frog2}
    sizes = folds.groupby("fold").size()
    assert result.cv["per_fold"] == pytest.approx([1 - n_cat0 / sizes[0], 1.0, 1 - n_frog2 / sizes[2]])
    assert result.cv["mean"] == pytest.approx(np.mean(result.cv["per_fold"]))
    assert result.cv["std"] == pytest.approx(np.std(result.cv["per_fold"]))
    assert result.cv["oof"] == pytest.approx(1 - (n_cat0 + n_frog2) / 18)
    for name in ("confusion", "curves"):
        assert result.files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(result.files["summary"].read_text())
    assert summary["cv"]["oof"] == pytest.approx(result.cv["oof"])
    assert f"mean {result.cv['mean']:.4f} ± {result.cv['std']:.4f}" in out and "cat -> dog" in out


def test_report_names_a_missing_fold(make_workspace, workspace, cli):
    ws, comp = make_workspace(workspace)
    write_run(ws, comp, "a", 0)
    code, out = cli("report", "--model", "a")
    assert code == 1 and "a fold 1 has no OOF logits" in out
    code, out = cli("report")
    assert code == 1 and "no model has every fold trained" in out


def test_status_grid_shows_scores_running_missing_and_stale(make_workspace, workspace, cli):
    ws, comp = make_workspace(workspace)
    for k in range(3):
        write_run(ws, comp, "a", k)
    write_run(ws, comp, "b", 0, confuse={"cat": "dog"})
    write_run(ws, comp, "b", 1, finished=False)
    write_run(ws, comp, "c", 0, folds_hash="0" * 64)
    grid = status(ws.load(), ws)
    by_alias = {m.alias: m for m in grid.models}
    assert [c.state for c in by_alias["a"].cells] == ["trained"] * 3
    assert by_alias["a"].cv["oof"] == 1.0 and by_alias["a"].cv["std"] == 0.0
    # Started, not finished, and no live process holds its lock: interrupted (not "running" forever).
    assert [c.state for c in by_alias["b"].cells] == ["trained", "interrupted", "missing"]
    assert by_alias["b"].cells[0].score < 1.0 and by_alias["b"].cv is None
    assert by_alias["c"].cells[0].state == "stale" and by_alias["c"].cells[0].why == "folds"
    code, out = cli("status")
    assert code == 0, out
    assert "c fold 0: made from other folds" in out and "1.0000 ± 0.0000" in out
    assert "b fold 1: interrupted; resume with `comp train --model b --fold 1`" in out


def test_status_without_models_says_what_to_do(make_workspace, workspace, cli):
    make_workspace(workspace)
    code, out = cli("status")
    assert code == 0 and "no trained models yet" in out
