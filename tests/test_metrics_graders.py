"""Scores equal to the graders' to 1e-9: `comp score` on a file, and the metrics the stack chooses its blend by.

The graders here are what the competitions' scorers run on the same file: sklearn's roc_auc_score on the raw column,
sklearn's log_loss on the probability columns (its own clipping at float64's epsilon), and Kaggle's classic `apk` for
MAP@k (a row's listed labels only). Hand-computed cases pin the arithmetic independently of sklearn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from comp.core import metrics
from comp.core.config import Competition
from comp.core.workspace import Workspace
from comp.ensemble.stack import score_file

TOL = 1e-9


def apk(actual: str, predicted: list[str], k: int) -> float:
    """Kaggle's ml_metrics apk with one true label (the graders' MAP@k): a repeat of a wrong label holds its place."""
    score, hits = 0.0, 0
    for i, p in enumerate(predicted[:k]):
        if p == actual and p not in predicted[:i]:
            hits += 1
            score += hits / (i + 1.0)
    return score


def _write(ws: Workspace, rows: dict[str, list], name: str) -> str:
    path = ws.root / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def _comp(kind: str, metric: str, classes: list[str], **more) -> Competition:
    return Competition(name="toy", data_dir="data", classes=classes, submission_labels=classes, kind=kind,
                       metric=metric, **more)


# ---------------------------------------------------------------------------------------------------------------
# comp score on a file vs the grader on the same file


def test_binary_auc_ranks_the_raw_scores_as_the_grader_does(workspace):
    """alaska2-like: the file holds logits, most outside [0, 1]; clipping them tied every score above 1."""
    ws = Workspace(workspace)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = rng.normal(size=400) * 3 + 1.5 * y
    ids = [f"i{j}" for j in range(400)]
    answers = _write(ws, {"id": ids, "label": y.astype(str)}, "answers.csv")
    sub = _write(ws, {"id": ids, "label": s}, "sub.csv")
    comp = _comp("binary", "roc_auc", ["0", "1"], positive_class="1")
    grader = skm.roc_auc_score(y, pd.read_csv(sub)["label"])
    assert abs(score_file(comp, ws, sub, answers) - grader) <= TOL
    clipped = skm.roc_auc_score(y, np.clip(s, 0, 1))
    assert grader - clipped > 0.02  # what clipping cost before
    weighted = metrics.weighted_auc(y, np.stack([1 - s, s], axis=1), written=True)
    assert abs(_comp_score(ws, "weighted_auc", sub, answers) - weighted) <= TOL


def _comp_score(ws: Workspace, metric: str, sub: str, answers: str) -> float:
    return score_file(_comp("binary", metric, ["0", "1"], positive_class="1"), ws, sub, answers)


def test_binary_auc_with_the_first_class_positive(workspace):
    ws = Workspace(workspace)
    y = np.array(["cat", "dog", "cat", "dog", "cat"])
    s = np.array([0.9, 0.2, 1e-20, 2e-20, 5.0])  # 1 - s would tie the two tiny scores
    answers = _write(ws, {"id": list("abcde"), "label": y}, "answers.csv")
    sub = _write(ws, {"id": list("abcde"), "label": s}, "sub.csv")
    comp = _comp("binary", "roc_auc", ["cat", "dog"], positive_class="cat")
    assert abs(score_file(comp, ws, sub, answers) - skm.roc_auc_score(y == "cat", s)) <= TOL


def test_map_at_k_scores_listed_labels_only(workspace):
    """One wrong label per row scores 0 (filling the empty ranks with unlisted classes gave 0.062); short lists,
    full lists and a repeated wrong label each score as Kaggle's apk does."""
    ws = Workspace(workspace)
    classes = [f"w{j}" for j in range(20)]
    comp = _comp("topk", "map@k", classes, top_k=5)
    rng = np.random.default_rng(1)
    truth = rng.choice(classes, 300)
    wrong = [classes[(classes.index(t) + 1) % 20] for t in truth]
    answers = _write(ws, {"id": range(300), "label": truth}, "answers.csv")
    one_wrong = _write(ws, {"id": range(300), "label": wrong}, "one_wrong.csv")
    assert score_file(comp, ws, one_wrong, answers) == 0.0
    lists = []
    for j, t in enumerate(truth):
        others = [c for c in rng.permutation(classes) if c != t]
        n = 1 + j % 5
        row = others[:n]
        if j % 3:
            row.insert(rng.integers(0, n + 1), t)
        lists.append(row[:5])
    mixed = _write(ws, {"id": range(300), "label": [" ".join(r) for r in lists]}, "mixed.csv")
    grader = float(np.mean([apk(t, r, 5) for t, r in zip(truth, lists, strict=True)]))
    assert abs(score_file(comp, ws, mixed, answers) - grader) <= TOL
    # by hand: truth second after a wrong label -> 1/2; third -> 1/3; listed after k -> 0
    y = np.array([0, 0, 0])
    z = np.array([[-1, 0, -np.inf, -np.inf], [-2, 0, -1, -np.inf], [-5, 0, -1, -2]], dtype=float)
    assert metrics.map_at_k(y, z, 5, written=True) == pytest.approx((1 / 2 + 1 / 3 + 0) / 3, abs=1e-15)


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard-0-1"])
def test_log_loss_clips_as_sklearn_does(workspace, hard):
    """Hard 0/1 probabilities: the grader's sklearn clips at float64's eps (36.04 per wrong row), not 1e-15 (34.54)."""
    ws = Workspace(workspace)
    rng = np.random.default_rng(2)
    classes = ["cat", "dog", "frog"]
    y = rng.integers(0, 3, 200)
    probs = rng.dirichlet(np.ones(3), 200)
    if hard:
        probs = np.eye(3)[np.where(rng.random(200) < 0.8, y, (y + 1) % 3)]
    ids = [f"i{j}" for j in range(200)]
    answers = _write(ws, {"id": ids, "label": np.array(classes)[y]}, "answers.csv")
    sub = _write(ws, {"id": ids, **{c: probs[:, j] for j, c in enumerate(classes)}}, "sub.csv")
    written = pd.read_csv(sub)[classes].to_numpy()
    grader = skm.log_loss(y, written, labels=[0, 1, 2])
    assert abs(score_file(_comp("class_probs", "log_loss", classes), ws, sub, answers) - grader) <= TOL
    if hard:
        wrong = np.mean(written[np.arange(200), y] == 0)
        assert grader == pytest.approx(-wrong * np.log(np.finfo(np.float64).eps), rel=1e-12)


def test_binary_log_loss_as_the_grader_reads_one_column(workspace):
    ws = Workspace(workspace)
    y = np.array([1, 0, 1, 0, 1, 1])
    s = np.array([1.0, 0.0, 0.0, 0.3, 0.99, 0.5])
    answers = _write(ws, {"id": range(6), "label": y}, "answers.csv")
    sub = _write(ws, {"id": range(6), "label": s}, "sub.csv")
    got = score_file(_comp("binary", "log_loss", ["0", "1"], positive_class="1"), ws, sub, answers)
    assert abs(got - skm.log_loss(y, s)) <= TOL


# ---------------------------------------------------------------------------------------------------------------
# The metrics on models' logits: what the stack's CV and blend choice use


def test_binary_auc_of_logits_does_not_saturate():
    """softmax rounds logit margins beyond ~37 to probability 1.0 exactly; the margin keeps them apart."""
    y = np.array([0, 1, 0, 1, 1, 0])
    margin = np.array([40.0, 45.0, 50.0, 60.0, -3.0, -5.0])
    z = np.stack([np.zeros(6), margin], axis=1)
    assert metrics.roc_auc(y, z) == pytest.approx(skm.roc_auc_score(y, margin), abs=1e-15)
    saturated = skm.roc_auc_score(y, metrics.softmax(z)[:, 1])
    assert saturated != pytest.approx(metrics.roc_auc(y, z))


def test_logit_metrics_equal_sklearn_on_the_probabilities():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 300)
    z = rng.normal(size=(300, 4)) + 2 * np.eye(4)[y]
    p = metrics.softmax(z)
    assert abs(metrics.log_loss(y, z) - skm.log_loss(y, p, labels=range(4))) <= TOL
    assert abs(metrics.roc_auc(y, z) - skm.roc_auc_score(y, p, multi_class="ovr", labels=range(4))) <= TOL
    assert metrics.map_at_k(y, z, 3) == pytest.approx(
        np.mean([apk(t, list(np.argsort(-r, kind="stable")), 3) for t, r in zip(y, z, strict=True)]), abs=TOL)
    fold = np.arange(300) % 5
    cv = metrics.fold_scores("log_loss", y, z, fold)
    assert cv["oof"] == metrics.score("log_loss", y, z)
    assert cv["per_fold"][2] == metrics.score("log_loss", y[fold == 2], z[fold == 2])


# ---------------------------------------------------------------------------------------------------------------
# Messages that name the values as they are


def _cells(values: list[str]):
    from comp.kinds.base import Cells

    return Cells(["label"], np.array(values, dtype=object)[:, None], [f"i{j}" for j in range(len(values))],
                 list(range(2, len(values) + 2)))


def test_class_id_messages_name_the_real_ids_and_values():
    from comp.kinds.single import check_class_ids, check_names

    gaps = _comp("class_id", "accuracy", ["0", "2", "5", "7"])
    (error,) = check_class_ids(gaps, "label", ["9", "0"], _cells(["9", "0"]))
    assert "the known ids are 0, 2, 5, ... (4 in all)" in error and "0..7" not in error
    contiguous = _comp("class_id", "accuracy", [str(i) for i in range(15)])
    (error,) = check_class_ids(contiguous, "label", ["15"], _cells(["15"]))
    assert "the known ids are 0..14" in error
    (error,) = check_class_ids(contiguous, "label", ["007"], _cells(["007"]))
    assert "like '7', not '007'" in error and "'3'" not in error
    names = _comp("class_name", "accuracy", ["cat", "dog"])
    (error,) = check_names(names, "label", ["8"], _cells(["8"]))
    assert "indices '8'," in error and "'8'..'8'" not in error
