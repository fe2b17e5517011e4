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


# ---------------------------------------------------------------------------------------------------------------
# comp check: what Kaggle accepts but mirror graders may not, and --fix


def _binary_workspace(ws: Workspace, n: int, metric: str = "roc_auc"):
    ids = [f"i{j}" for j in range(n)]
    (ws.root / "sample.csv").write_text("id,label\n" + "".join(f"{i},0.5\n" for i in ids))
    return _comp("binary", metric, ["0", "1"], positive_class="1", sample_submission="sample.csv"), ids


def test_binary_scores_outside_0_1_are_warned_and_fixed_by_rank_keeping_the_auc(workspace):
    from comp.submission.check import check_file
    from comp.submission.fix import fix_file

    ws = Workspace(workspace)
    comp, ids = _binary_workspace(ws, 300)
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) * 40 + 20 * y, 2)  # logits, some far apart (a sigmoid would tie them at 1.0)
    s[:3] = [80.0, 80.0, 95.5]
    _write(ws, {"id": ids, "label": s}, "logits.csv")
    answers = _write(ws, {"id": ids, "label": y}, "answers.csv")
    report = check_file(comp, ws, ws.root / "logits.csv")
    assert report.ok and any("reject values outside [0, 1]" in w and "--fix OUT" in w for w in report.warnings)
    fixed = fix_file(comp, ws, ws.root / "logits.csv", ws.root / "fixed.csv")
    assert fixed.ok and any("by rank" in c for c in fixed.changes)
    written = pd.read_csv(ws.root / "fixed.csv")["label"].to_numpy()
    assert ((written > 0) & (written < 1)).all() and written[0] == written[1] and written[2] > written[0]
    assert score_file(comp, ws, ws.root / "fixed.csv", answers) == score_file(comp, ws, ws.root / "logits.csv",
                                                                             answers)
    assert check_file(comp, ws, ws.root / "fixed.csv").warnings == []


def test_probability_rows_off_by_more_than_1e_5_are_warned_with_the_fix(workspace):
    from comp.submission.check import check_file

    ws = Workspace(workspace)
    classes = ["cat", "dog", "frog"]
    (ws.root / "sample.csv").write_text("id,cat,dog,frog\na,0.3,0.3,0.4\nb,0.3,0.3,0.4\n")
    comp = _comp("class_probs", "log_loss", classes, sample_submission="sample.csv")
    (ws.root / "near.csv").write_text("id,cat,dog,frog\na,0.2,0.3,0.5\nb,0.1,0.6,0.30002\n")
    (ws.root / "exact.csv").write_text("id,cat,dog,frog\na,0.2,0.3,0.5\nb,0.1,0.6,0.300001\n")
    warned = check_file(comp, ws, ws.root / "near.csv").warnings
    assert any("Kaggle rescales each row" in w and "may score the values as written" in w and "--fix OUT" in w
               for w in warned)
    assert check_file(comp, ws, ws.root / "exact.csv").warnings == []


@pytest.mark.parametrize("kind", ["binary", "class_probs"])
def test_a_large_plain_file_is_checked_by_the_fast_path_with_the_same_verdicts(kind, workspace, monkeypatch):
    """The vectorised path (large files; lowered here to 64 KiB) gives the exact path's verdict and warnings on a
    valid file, and hands every file with a problem to the exact path, whose messages name the line and id."""
    import comp.submission.check as check

    ws = Workspace(workspace)
    rng = np.random.default_rng(5)
    n = 8000
    monkeypatch.setattr(check, "FAST_BYTES", 1 << 16)
    ids = [f"img_{j:06d}" for j in range(n)]
    classes = ["cat", "dog", "frog", "eel"] if kind == "class_probs" else ["0", "1"]
    if kind == "binary":
        (ws.root / "sample.csv").write_text("id,label\n" + "".join(f"{i},0.5\n" for i in ids))
        comp = _comp("binary", "roc_auc", classes, positive_class="1", sample_submission="sample.csv")
        good = {"id": ids, "label": rng.normal(size=n) * 3}
    else:
        pd.DataFrame({"id": ids, **dict.fromkeys(classes, 0.25)}).to_csv(ws.root / "sample.csv", index=False)
        comp = _comp("class_probs", "log_loss", classes, sample_submission="sample.csv")
        p = rng.dirichlet(np.ones(4), n)
        p[7] *= 1.01  # one row off: a warning
        good = {"id": ids, **{c: p[:, j] for j, c in enumerate(classes)}}
    path = _write(ws, good, "good.csv")
    assert (ws.root / "good.csv").stat().st_size >= check.FAST_BYTES
    calls = []
    original = check._check_plain_numbers
    monkeypatch.setattr(check, "_check_plain_numbers", lambda *a: calls.append(r := original(*a)) or r)
    fast = check.check_file(comp, ws, path)
    assert calls and calls[-1] is not None  # it took the fast path
    monkeypatch.setattr(check, "FAST_BYTES", 1 << 40)
    exact = check.check_file(comp, ws, path)
    assert (fast.errors, fast.warnings) == (exact.errors, exact.warnings) and fast.ok and fast.warnings
    monkeypatch.setattr(check, "FAST_BYTES", 1 << 16)
    text = (ws.root / "good.csv").read_text().splitlines()
    text[500] = text[500].rsplit(",", 1)[0] + ",nan"
    (ws.root / "bad.csv").write_text("\n".join(text) + "\n")
    report = check.check_file(comp, ws, ws.root / "bad.csv")
    assert not report.ok and any("line 501" in e and ids[499] in e for e in report.errors), report.errors
