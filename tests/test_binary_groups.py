"""A binary competition over more than two training folders (alaska2: Cover/ JMiPOD/ JUNIWARD/ UERD/ Test/, a
submission `Id,Label` holding any real score, weighted AUC): `comp init --positive/--negative` groups the folders,
comp.toml keeps the grouping in `class_map`, and the weighted AUC matches the competition's own formula."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn import metrics as skm

from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.metrics import score, weighted_auc
from comp.core.workspace import Workspace
from comp.setup.discover import binary_groups
from comp.setup.items import train_items
from comp.submission.check import check_file
from comp.submission.write import to_frame, write

FOLDERS = ("Cover", "JMiPOD", "JUNIWARD", "UERD")


@pytest.fixture
def alaska(workspace):
    rng = np.random.default_rng(0)
    data = workspace / "data" / "alaska2"
    for k, folder in enumerate(FOLDERS):
        (data / folder).mkdir(parents=True)
        for i in range(1, 5 + k):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(data / folder / f"{i:05d}.jpg")
    (data / "Test").mkdir()
    ids = [f"{i:04d}.jpg" for i in (7, 3, 1, 8, 2, 6, 5, 4)]  # not sorted, as the real file
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(data / "Test" / i)
    pd.DataFrame({"Id": ids, "Label": 0}).to_csv(data / "sample_submission.csv", index=False)
    return data


def test_init_groups_cover_against_the_rest(alaska, cli, workspace):
    code, out = cli("init", str(alaska))
    assert code == 1 and "--negative" in out and "--positive" in out  # says how to set it up
    code, out = cli("init", str(alaska), "--negative", "Cover", "--metric", "weighted_auc")
    assert code == 0, out
    comp = Workspace(workspace).load()
    assert comp.kind == "binary" and comp.metric == "weighted_auc"
    assert comp.classes == ["Cover", "JMiPOD+JUNIWARD+UERD"] and comp.positive_class == "JMiPOD+JUNIWARD+UERD"
    assert comp.class_map == {f: "JMiPOD+JUNIWARD+UERD" for f in FOLDERS[1:]}
    items = train_items(comp, Workspace(workspace))
    assert items["label"].value_counts().to_dict() == {"JMiPOD+JUNIWARD+UERD": 5 + 6 + 7, "Cover": 4}
    assert items["path"].str.contains("/Test/").sum() == 0


def test_the_same_set_up_from_positive_labels(alaska, cli, workspace):
    code, out = cli("init", str(alaska), "--positive", "JMiPOD,JUNIWARD", "--positive", "UERD")
    assert code == 0, out
    comp = Workspace(workspace).load()
    assert comp.classes == ["Cover", "JMiPOD+JUNIWARD+UERD"] and comp.metric == "roc_auc"


@pytest.mark.parametrize(("positive", "negative", "message"), [
    (["JMiPOD"], ["Cover"], "on neither side"),
    (["Cover"], ["Cover"], "on both sides"),
    (["cover"], [], "not a training label"),
    (list(FOLDERS), [], "one side empty"),
])
def test_groupings_that_leave_doubt_are_refused(positive, negative, message):
    with pytest.raises(CompError, match=message):
        binary_groups(list(FOLDERS), positive, negative)


def test_two_classes_choose_the_positive_and_order_it_last():
    assert binary_groups(["bee", "ant"], ["ant"], []) == (["bee", "ant"], {}, "ant")


def test_a_grouped_competition_writes_and_accepts_any_real_score(alaska, cli, workspace):
    assert cli("init", str(alaska), "--negative", "Cover", "--metric", "weighted_auc")[0] == 0
    ws = Workspace(workspace)
    comp = ws.load()
    sample = pd.read_csv(ws.path(comp.sample_submission), dtype=str)
    probs = np.random.default_rng(1).dirichlet([1, 1], len(sample))
    frame = to_frame(comp, ws, sample["Id"].tolist(), probs)
    assert np.allclose(frame["Label"].astype(float), probs[:, 1])  # the positive group's probability
    path = write(comp, ws, "probs", frame)
    assert check_file(comp, ws, path).errors == []
    frame["Label"] = np.log(probs[:, 1] / probs[:, 0])  # logits rank the same: valid under AUC
    frame.to_csv(workspace / "logits.csv", index=False)
    assert check_file(comp, ws, workspace / "logits.csv").errors == []


def test_class_map_written_by_hand_is_checked_against_classes():
    with pytest.raises(CompError, match="class_map maps labels to 'stego'"):
        Competition(name="x", classes=["Cover", "JMiPOD+UERD"], class_map={"JMiPOD": "stego"})


def _kernel_weighted_auc(y_true, y_score):
    """The competition's published metric (alaska2 evaluation kernel), for comparison."""
    tpr_thresholds, weights = [0.0, 0.4, 1.0], [2, 1]
    fpr, tpr, _ = skm.roc_curve(y_true, y_score, pos_label=1)
    normalization = np.dot(np.diff(tpr_thresholds), weights)
    total = 0.0
    for idx, weight in enumerate(weights):
        y_min, y_max = tpr_thresholds[idx], tpr_thresholds[idx + 1]
        mask = (y_min < tpr) & (tpr < y_max)
        x_padding = np.linspace(fpr[mask][-1], 1, 100)
        x = np.concatenate([fpr[mask], x_padding])
        y = np.concatenate([tpr[mask], [y_max] * len(x_padding)]) - y_min
        total += skm.auc(x, y) * weight
    return total / normalization


@pytest.mark.parametrize("n", [200, 5000])
def test_weighted_auc_equals_the_competitions_formula(n):
    rng = np.random.default_rng(n)
    y = rng.integers(0, 2, n)
    s = y + rng.normal(0, 1.3, n)
    logits = np.stack([np.zeros(n), s], axis=1)
    assert weighted_auc(y, logits) == pytest.approx(_kernel_weighted_auc(y, s), abs=1e-9)
    assert score("weighted_auc", y, logits) == pytest.approx(weighted_auc(y, logits))
    assert score("weighted_auc", y, np.stack([np.zeros(n), y * 5.0], axis=1)) == pytest.approx(1.0)
    assert score("weighted_auc", y, np.stack([np.zeros(n), -y * 5.0], axis=1)) == pytest.approx(0.0)
    with pytest.raises(CompError, match="binary"):
        weighted_auc(y, rng.normal(size=(n, 3)))


def test_a_labels_csv_is_grouped_the_same_way(make_kaggle_competition, cli, workspace):
    data = make_kaggle_competition(workspace / "data" / "pets", classes=("cat", "dog", "frog"), n_per_class=5,
                                   n_test=6, kind="binary")
    code, out = cli("init", str(data), "--positive", "cat")
    assert code == 0, out
    ws = Workspace(workspace)
    comp = ws.load()
    assert comp.layout == "csv" and comp.classes == ["dog+frog", "cat"] and comp.positive_class == "cat"
    assert train_items(comp, ws)["label"].value_counts().to_dict() == {"dog+frog": 10, "cat": 5}
    code, out = cli("folds")
    assert code == 0, out
