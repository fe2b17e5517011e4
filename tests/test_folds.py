"""`comp folds`: stratified, reproducible, grouped when asked, written once, refused when tampered with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from comp.core.config import Competition
from comp.core.errors import CompError, StaleError
from comp.core.workspace import Workspace
from comp.folds import assign_folds, load_folds, make_folds


@pytest.fixture
def kaggle_workspace(make_kaggle_competition):
    """The factory kaggle_workspace(root, **kwargs) -> (Competition, Workspace)."""

    def make(root, **kwargs) -> tuple[Competition, Workspace]:
        """A generated Kaggle-layout competition with a hand-written comp.toml (as `comp init` would write it)."""
        classes = kwargs.pop("classes", ("cat", "dog", "frog"))
        make_kaggle_competition(root / "data" / "toy", classes=classes, **kwargs)
        comp = Competition(
            name="toy", data_dir="data/toy", layout="csv", train_dirs=["data/toy/train"],
            labels_csv="data/toy/train.csv",
            image_ext=".png", test_dir="data/toy/test", sample_submission="data/toy/sample_submission.csv",
            classes=list(classes), submission_labels=list(classes), n_folds=3,
        )
        ws = Workspace(root)
        ws.save(comp)
        return comp, ws

    return make


def test_every_class_is_spread_evenly_over_the_folds():
    rng = np.random.default_rng(1)
    counts = {"a": 7, "b": 13, "c": 22, "d": 5, "e": 101}
    labels = [c for c, n in counts.items() for _ in range(n)]
    rng.shuffle(labels)
    items = pd.DataFrame({"id": [f"x{i}" for i in range(len(labels))], "label": labels})
    for n_folds in (2, 5):
        fold = assign_folds(items, n_folds, seed=3)
        assert set(fold) == set(range(n_folds))
        table = pd.crosstab(items["label"], fold)
        spread = table.max(axis=1) - table.min(axis=1)
        assert (spread <= 1).all(), table


def test_same_seed_gives_byte_identical_csv_and_rows_keep_train_order(kaggle_workspace, workspace):
    comp, ws = kaggle_workspace(workspace)
    folds, written = make_folds(comp, ws)
    assert written
    first = ws.folds_csv.read_bytes()
    assert folds.frame["id"].tolist() == pd.read_csv(ws.path(comp.labels_csv), dtype=str)["id"].tolist()
    make_folds(comp, ws, force=True)
    assert ws.folds_csv.read_bytes() == first
    make_folds(comp, ws, seed=7, force=True)
    assert ws.folds_csv.read_bytes() != first
    params = load_folds(ws).params
    assert params["seed"] == 7 and params["n_folds"] == 3 and params["method"] == "StratifiedKFold"
    assert params["n_rows"] == 30 and params["competition"] == "toy"


def test_group_folds_never_split_a_group():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), rng.integers(1, 5, size=40))
    labels = np.array(["a", "b", "c"])[groups % 3]
    items = pd.DataFrame({"id": [f"i{k}" for k in range(len(groups))], "label": labels})
    fold = assign_folds(items, 4, seed=0, groups=pd.Series(groups))
    per_group = pd.DataFrame({"g": groups, "fold": fold}).groupby("g")["fold"].nunique()
    assert (per_group == 1).all()
    assert set(fold) == set(range(4))


def test_group_column_in_the_labels_file_is_used(kaggle_workspace, workspace):
    comp, ws = kaggle_workspace(workspace, n_per_class=12)
    labels = pd.read_csv(ws.path(comp.labels_csv), dtype=str)
    labels["patient"] = [f"p{i // 3}" for i in range(len(labels))]  # 3 images per patient
    labels.to_csv(ws.path(comp.labels_csv), index=False)
    comp = Competition(**{**comp.__dict__, "group_column": "patient"})
    folds, _ = make_folds(comp, ws)
    assert folds.params["method"] == "StratifiedGroupKFold"
    merged = folds.frame.assign(patient=labels["patient"])
    assert (merged.groupby("patient")["fold"].nunique() == 1).all()


def test_existing_folds_are_kept_and_replaced_only_with_force(kaggle_workspace, workspace, cli):
    kaggle_workspace(workspace)
    code, out = cli("folds")
    assert code == 0 and "wrote folds/folds.csv" in out and "30 rows in 3 folds" in out
    before = (workspace / "folds" / "folds.csv").read_bytes()
    code, out = cli("folds")  # same parameters: nothing to do
    assert code == 0 and "up to date" in out
    code, out = cli("folds", "--seed", "5")
    assert code == 1 and "--force" in out and "stale" in out and "Traceback" not in out
    assert (workspace / "folds" / "folds.csv").read_bytes() == before
    code, out = cli("folds", "--seed", "5", "--n-folds", "2", "--force")
    assert code == 0 and "2 folds" in out and "comp.toml updated: n_folds = 2, seed = 5 (was 3, 42)" in out
    assert (workspace / "folds" / "folds.csv").read_bytes() != before
    # comp.toml follows the folds, so the next commands agree with them
    assert (Workspace(workspace).load().n_folds, Workspace(workspace).load().seed) == (2, 5)
    code, out = cli("folds")
    assert code == 0 and "up to date" in out and "2 folds" in out


def test_a_class_smaller_than_the_fold_count_is_named(kaggle_workspace, workspace):
    comp, ws = kaggle_workspace(workspace)
    labels = pd.read_csv(ws.path(comp.labels_csv), dtype=str)
    labels.loc[labels["label"] == "frog", "label"] = ["frog", "frog"] + ["dog"] * 8  # frog: 2 images
    labels.to_csv(ws.path(comp.labels_csv), index=False)
    with pytest.raises(CompError, match=r"'frog' \(2 images\).*--n-folds 2.*merge"):
        make_folds(comp, ws, n_folds=5)
    assert not ws.folds_csv.exists()


def test_load_folds_refuses_missing_edited_and_stale_folds(kaggle_workspace, workspace):
    comp, ws = kaggle_workspace(workspace)
    with pytest.raises(CompError, match="comp folds"):
        load_folds(ws)
    folds, _ = make_folds(comp, ws)
    again = load_folds(ws, comp)
    assert again.hash == folds.hash and again.frame["id"].dtype != np.int64
    pd.testing.assert_frame_equal(again.frame.astype(str), folds.frame.astype(str))

    labels = pd.read_csv(ws.path(comp.labels_csv), dtype=str)
    labels.loc[0, "label"] = "dog" if labels.loc[0, "label"] != "dog" else "cat"
    labels.to_csv(ws.path(comp.labels_csv), index=False)
    with pytest.raises(StaleError, match="relabelled"):
        load_folds(ws, comp)

    text = ws.folds_csv.read_text()
    ws.folds_csv.write_text(text.replace(",0\n", ",1\n", 1))
    with pytest.raises(CompError, match="edited by hand"):
        load_folds(ws)


def test_ids_keep_leading_zeros(kaggle_workspace, workspace):
    comp, ws = kaggle_workspace(workspace)
    labels = pd.read_csv(ws.path(comp.labels_csv), dtype=str)
    for i in labels["id"]:
        (ws.path("data/toy/train") / f"{i}.png").rename(ws.path("data/toy/train") / f"00{i}.png")
    labels["id"] = "00" + labels["id"]
    labels.to_csv(ws.path(comp.labels_csv), index=False)
    make_folds(comp, ws)
    assert load_folds(ws, comp).frame["id"].iloc[0] == "001"


def test_an_id_with_two_label_rows_is_refused(kaggle_workspace, workspace):
    comp, ws = kaggle_workspace(workspace)
    labels = pd.read_csv(ws.path(comp.labels_csv), dtype=str)
    pd.concat([labels, labels.iloc[[4]]]).to_csv(ws.path(comp.labels_csv), index=False)
    with pytest.raises(CompError, match="id '5' has more than one labelled row"):
        make_folds(comp, ws)


def test_real_kaggle_cifar_labels_are_balanced(shared, workspace):
    """The real headerless `<id>.png,<label>` file: uneven classes (14-28 images), ids kept as written."""
    data = shared / "data" / "cifar10-kaggle-small" / "image_data_format_1"
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    comp = Competition(name="cifar-10", layout="csv", data_dir=str(data), train_dirs=[str(data / "train")],
                       labels_csv=str(data / "trainLabels.csv"), labels_header=False, classes=classes,
                       submission_labels=classes)
    ws = Workspace(workspace)
    ws.save(comp)
    folds, _ = make_folds(comp, ws)
    assert folds.frame["id"].head(3).tolist() == ["1.png", "2.png", "3.png"]
    table = pd.crosstab(folds.frame["label"], folds.frame["fold"])
    assert table.shape == (10, 5) and ((table.max(axis=1) - table.min(axis=1)) <= 1).all()
    assert table.sum(axis=1).to_dict()["automobile"] == 28
