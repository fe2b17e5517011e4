"""Pseudo-labels: a stack's confident test predictions join every fold's training rows (never the held-out rows),
with the stack's label; provenance records the stack; the rows added per class are reported."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from comp import logits
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.modeling.recipe import load_recipe, recipe_file
from comp.runs import read_run
from comp.training.pseudo import PSEUDO_FOLD, PseudoLabels, add_pseudo_rows


def _pseudo(n: int) -> PseudoLabels:
    frame = pd.DataFrame({"id": [f"t{i}" for i in range(n)], "path": [f"/x/t{i}.png" for i in range(n)],
                          "label": ["cat", "dog", "cat", "frog"][:n], "prob": [0.99, 0.95, 0.93, 0.91][:n]})
    return PseudoLabels(stack="s", threshold=0.9, source="s (sha256 abc)", frame=frame, n_test=10)


def test_pseudo_rows_train_in_every_fold_and_are_held_out_in_none():
    items = pd.DataFrame({"id": ["a", "b", "c", "d"], "path": ["/a", "/b", "/c", "/d"],
                          "label": ["cat", "dog", "frog", "cat"], "fold": [0, 1, 2, 0]})
    merged = add_pseudo_rows(items, _pseudo(4))
    assert len(merged) == 8 and merged["fold"].tolist()[4:] == [PSEUDO_FOLD] * 4
    assert merged["id"].tolist()[4:] == ["pseudo:t0", "pseudo:t1", "pseudo:t2", "pseudo:t3"]
    fold = merged["fold"].to_numpy()
    for k in range(3):
        held_out, train = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        assert set(range(4, 8)) <= set(train) and not set(range(4, 8)) & set(held_out)
    text = _pseudo(4).describe(["cat", "dog", "frog"])
    assert "4 of 10 test images" in text and "cat 2, dog 1, frog 1" in text


@pytest.mark.slow
def test_train_with_a_stacks_pseudo_labels(make_toy_workspace, workspace, cli):
    ws, comp = make_toy_workspace(workspace, n_per_class=8, n_folds=2, n_test=9)
    code, out = cli("train", "--model", "tiny", "--device", "cpu", "--set", "epochs=2", "--set", "num_workers=0")
    assert code == 0, out
    code, out = cli("stack", "--models", "tiny", "--method", "mean", "--name", "round1")
    assert code == 0, out
    code, out = cli("train", "--model", "tiny2", "--device", "cpu", "--pseudo", "nosuch")
    assert code == 1 and "no stack" in out and "comp stack --name nosuch" in out

    # A second model learns from the stack's labels; threshold 0 takes every test image.
    ws.models_dir.mkdir(exist_ok=True)
    shutil.copy(recipe_file(ws, "tiny"), ws.recipe_path("tiny_pl"))
    code, out = cli("train", "--model", "tiny_pl", "--device", "cpu", "--set", "epochs=1", "--set", "num_workers=0",
                    "--pseudo", "round1", "--pseudo-threshold", "0.000001")
    assert code == 0, out
    assert "pseudo-labels from stack 'round1': 9 of 9 test images" in out
    assert "cat " in out and "dog " in out and "frog " in out
    for k in (0, 1):
        run = read_run(ws.run("tiny_pl", k))
        assert run.pseudo_labels.startswith("round1 (sha256 ") and run.recipe["pseudo"] == "round1"
        oof = logits.load(ws.run("tiny_pl", k).oof)
        assert not any(str(i).startswith("pseudo:") for i in oof.ids)  # held-out rows are real rows only
    # Training with the same alias without --pseudo is other inputs: refused by name, not silently mixed.
    code, out = cli("train", "--model", "tiny_pl", "--device", "cpu", "--set", "epochs=1", "--set", "num_workers=0")
    assert code == 1 and "pseudo" in out
    # The threshold keeps exactly the test images at or above it, with the same labels.
    from comp.ensemble.pseudo import pseudo_labels

    every = pseudo_labels(comp, Workspace(workspace), "round1", 1e-6).frame.set_index("id")
    threshold = float(np.sort(every["prob"].to_numpy())[4])
    some = pseudo_labels(comp, Workspace(workspace), "round1", threshold).frame.set_index("id")
    assert len(some) == int((every["prob"] >= threshold).sum()) and 0 < len(some) <= 5
    assert (some["label"] == every.loc[some.index, "label"]).all() and (some["prob"] >= threshold).all()
    with pytest.raises(CompError, match="pseudo_threshold"):
        load_recipe(Workspace(workspace), "tiny", ["pseudo_threshold=0"])
