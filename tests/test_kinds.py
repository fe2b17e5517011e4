"""The kinds room: every submission kind through the same round trip, and the rule that nothing outside comp/kinds/
branches on a kind's name.

Adding a kind = one class in comp/kinds/ + one row in ROWS below.
"""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from comp import kinds
from comp.core import metrics
from comp.core.config import KINDS, Competition
from comp.core.workspace import Workspace
from comp.ensemble.stack import _submission_scores
from comp.submission.check import check_bytes
from comp.submission.fix import fix_file
from comp.submission.parse import parse_csv
from comp.submission.write import to_csv_bytes, to_frame

PACKAGE = Path(__file__).resolve().parents[1] / "comp"

# kind -> (classes, the sample's header after the id column, a placeholder row of the sample, multi-label labels,
#          positive class)
ROWS = {
    "class_name": (["golden_retriever", "pug", "shiba"], ["breed"], ["golden retriever"], False, ""),
    "class_id": (["0", "1", "2", "3"], ["label"], ["0"], False, ""),
    "binary": (["cat", "dog"], ["dog"], ["0.5"], False, "dog"),
    "class_probs": (["cat", "dog", "frog"], ["cat", "dog", "frog"], ["0.33", "0.33", "0.34"], False, ""),
    "topk": (["new_whale", "w_1", "w_2", "w_3", "w_4", "w_5", "w_6"], ["Id"], ["new_whale w_1 w_2 w_3 w_4"], False,
             ""),
    "tags": (["agriculture", "clear", "haze", "primary", "water"], ["tags"], ["clear primary"], True, ""),
    "multilabel_probs": (["healthy", "rust", "scab"], ["healthy", "rust", "scab"], ["0.5", "0.5", "0.5"], True, ""),
}


def test_every_kind_has_a_row_and_the_registry_is_config_kinds():
    assert tuple(kinds.REGISTRY) == KINDS
    assert set(ROWS) == set(KINDS)


def _setup(root: Path, kind: str, n: int = 40) -> tuple[Competition, Workspace, list[str]]:
    classes, header, placeholder, multilabel, positive = ROWS[kind]
    ids = [f"img_{i:03d}.jpg" for i in range(n)]
    with open(root / "sample.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([["id", *header], *([i, *placeholder] for i in ids)])
    sample = pd.read_csv(root / "sample.csv", dtype=str, keep_default_na=False)
    fmt = kinds.detect_format(sample, "id", classes, multilabel=multilabel, positive=positive)
    assert fmt.kind == kind  # detected from the sample (and, for multi-label, the labels), not forced
    comp = Competition(name=f"k-{kind}", sample_submission="sample.csv", id_column="id",
                       label_columns=fmt.label_columns, kind=fmt.kind, metric=kinds.get(kind).metric,
                       classes=classes, submission_labels=fmt.submission_labels, positive_class=fmt.positive_class,
                       top_k=fmt.top_k)
    return comp, Workspace(root), ids


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_write_check_decode_fix(kind, workspace):
    comp, ws, ids = _setup(workspace, kind)
    k = kinds.get(kind)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (len(ids), comp.num_classes))
    probs = k.probabilities(logits)
    assert probs.shape == logits.shape and ((probs >= 0) & (probs <= 1)).all()
    if not k.multilabel:
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)

    data = to_csv_bytes(comp, to_frame(comp, ws, ids[::-1], probs[::-1]))  # any row order in, the sample's out
    report = check_bytes(comp, ws, data)
    assert report.errors == []

    decoded = _submission_scores(comp, parse_csv(data, "x"), "x")
    assert decoded.shape == probs.shape
    if k.multilabel:
        # what is written is what scores: tags as the classes over 0.5 (at least one per row, as the sample has
        # none empty), probabilities as written
        chosen = probs > 0.5
        chosen[~chosen.any(axis=1), probs[~chosen.any(axis=1)].argmax(axis=1)] = True
        if k.numeric:
            np.testing.assert_allclose(decoded, probs, atol=1e-6)  # as written (the graders' reading)
        else:
            np.testing.assert_array_equal(decoded == 1, chosen)
    else:
        np.testing.assert_array_equal(decoded.argmax(axis=1), probs.argmax(axis=1))

    # the default metric scores the decoded file; a perfect answer key scores as the metric's best
    truth = (probs > 0.5).astype(np.int64) if k.multilabel else probs.argmax(axis=1)
    assert np.isfinite(metrics.score(comp.metric, truth, decoded, comp.top_k, written=True))

    (workspace / "sub.csv").write_bytes(data)
    fixed = fix_file(comp, ws, workspace / "sub.csv", workspace / "fixed.csv")
    assert fixed.ok and fixed.changes == []
    assert (workspace / "fixed.csv").read_bytes() == data


@pytest.mark.parametrize("kind", KINDS)
def test_the_kind_refuses_a_wrong_value(kind, workspace):
    comp, ws, ids = _setup(workspace, kind, n=6)
    k = kinds.get(kind)
    frame = to_frame(comp, ws, ids, k.probabilities(np.random.default_rng(1).normal(size=(6, comp.num_classes))))
    frame = frame.astype(object)
    frame.iloc[2, 1] = "0.5x" if k.numeric else "not_a_class"  # under AUC any real number is a valid score
    report = check_bytes(comp, ws, to_csv_bytes(comp, frame))
    assert report.errors, kind
    assert "line 4" in report.errors[0]  # the row is named


def test_tags_empty_rows_follow_the_sample(workspace):
    comp, ws, ids = _setup(workspace, "tags", n=4)
    probs = np.full((4, comp.num_classes), 0.1)  # no tag is likely: the writer still names the likeliest one
    probs[:, 3] = 0.4
    frame = to_frame(comp, ws, ids, probs)
    assert (frame["tags"] == "primary").all()
    warnings = check_bytes(comp, ws, to_csv_bytes(comp, frame)).warnings
    assert any("every row holds the same tags ('primary')" in w for w in warnings), warnings
    empty = to_csv_bytes(comp, frame.assign(tags=""))
    assert any("empty value" in e for e in check_bytes(comp, ws, empty).errors)
    # a sample with an empty row says an image may have no tags
    rows = [["id", "tags"], *([i, ""] for i in ids)]
    with open(workspace / "sample.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    assert check_bytes(comp, ws, empty).errors == []
    assert (to_frame(comp, ws, ids, probs)["tags"] == "").all()


def test_tags_check_names_unknown_and_repeated_tags_and_fix_respells(workspace):
    comp, ws, ids = _setup(workspace, "tags", n=3)
    body = [["id", "tags"], [ids[0], "clear Primary"], [ids[1], "haze haze"], [ids[2], "water"]]
    with open(workspace / "sub.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(body)
    errors = check_bytes(comp, ws, (workspace / "sub.csv").read_bytes()).errors
    assert any("unknown label(s)" in e and "'Primary'" in e for e in errors)
    assert any("repeats a label" in e for e in errors)
    result = fix_file(comp, ws, workspace / "sub.csv", workspace / "fixed.csv")
    assert result.ok, result.refused
    fixed = pd.read_csv(workspace / "fixed.csv", dtype=str)
    assert fixed["tags"].tolist() == ["clear primary", "haze", "water"]
    body[3][1] = "water ocean"
    with open(workspace / "sub.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(body)
    assert not fix_file(comp, ws, workspace / "sub.csv", workspace / "fixed2.csv").ok  # 'ocean' would be a guess


def test_detect_multilabel_tells_tag_sets_from_names_with_spaces():
    planet = ["agriculture clear primary", "clear primary", "haze primary", "clear primary water", "cloudy",
              "agriculture clear primary road", "haze primary water"]
    tags, counts = kinds.detect_multilabel(planet)
    assert tags == ["agriculture", "clear", "cloudy", "haze", "primary", "road", "water"]
    assert counts["primary"] == 6
    breeds = ["golden retriever", "pug", "shiba inu", "golden retriever", "great dane", "pug"]
    assert kinds.detect_multilabel(breeds) is None
    assert kinds.detect_multilabel(["cat", "dog", "cat"]) is None


def test_f_beta_samples_and_mean_column_auc_equal_sklearn():
    from sklearn.metrics import fbeta_score, roc_auc_score

    rng = np.random.default_rng(3)
    y = (rng.random((200, 6)) < 0.3).astype(int)
    y[np.arange(200), rng.integers(0, 6, 200)] = 1  # every image has a tag, as in Planet
    z = rng.normal(0, 1, (200, 6)) + 1.5 * (y - 0.5)
    for beta in (0.5, 1.0, 2.0):
        want = fbeta_score(y, (z > 0).astype(int), beta=beta, average="samples")
        assert metrics.score(f"f{beta:g}_samples", y, z) == pytest.approx(want, abs=1e-12)
    want = np.mean([roc_auc_score(y[:, c], z[:, c]) for c in range(6)])
    assert metrics.score("mean_column_auc", y, z) == pytest.approx(want, abs=1e-12)
    with pytest.raises(Exception, match="multi-label targets"):
        metrics.score("f2_samples", y[:, 0], z)


def _kind_branches(root: Path) -> list[str]:
    """`x.kind == "topk"`, `kind in ("binary", ...)`, `{...}[comp.kind]`: every test of a kind's name outside
    comp/kinds/, read with ast."""
    names = set(KINDS)
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.is_relative_to(root / "kinds"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            consts: set[str] = set()
            if isinstance(node, ast.Compare):
                for part in [node.left, *node.comparators]:
                    for sub in ast.walk(part):
                        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                            consts.add(sub.value)
            elif isinstance(node, ast.Dict):
                consts = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                consts = consts if len(consts & names) >= 2 else set()
            if consts & names:
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return found


def test_no_module_outside_the_kinds_room_branches_on_a_kind_name():
    assert _kind_branches(PACKAGE) == []


def test_the_branch_finder_finds_a_planted_branch(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text('def f(comp):\n    return 1 if comp.kind == "topk" else 2\n')
    assert _kind_branches(tmp_path / "pkg") == ["pkg/m.py:2"]
