"""The submission writer: probabilities keyed by id -> the sample's exact format, for every real format we know.

Each format is built around the real file in ../shared/formats when present ("real") and around a small synthetic
copy with the same header, id form and label representation otherwise ("synthetic"), so the core always runs.
`build_format` and `valid_submission` are shared with tests/test_check_battery.py.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.submission.check import check_bytes, check_file
from comp.submission.parse import read_sample
from comp.submission.write import float_digits, to_csv_bytes, to_frame, write

FORMATS_DIR = "formats"
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# name -> (kind, does a real file exist in ../shared/formats)
FORMATS = {
    "dog-breed": ("class_probs", True),  # id + 120 breed columns, ids without .jpg
    "aerial-cactus": ("binary", True),  # id,has_cactus; ids keep .jpg
    "alaska2": ("binary", True),  # Id,Label; rows not sorted
    "cifar-10": ("class_name", True),  # id,label with class names; integer ids
    "humpback": ("topk", True),  # Image,Id; up to 5 space-separated whale ids
    "cassava": ("class_id", True),  # image_id,label; integer labels; ids keep .jpg
    "nycu": ("class_id", False),  # image_name,pred_label; labels = folder names 0-99, ids without extension
    "paddy": ("class_name", False),  # class names with spaces, folder names with underscores
}
REAL = [name for name, (_, real) in FORMATS.items() if real]


def _write_sample(ws: Path, header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    (ws / "sample_submission.csv").write_text(buf.getvalue(), encoding="utf-8")
    return "sample_submission.csv"


def build_format(name: str, ws: Path, shared: Path | None) -> Competition:
    """A Competition around format `name`: its real sample under `shared` when given, else a small synthetic one."""
    formats = shared / FORMATS_DIR if shared else None
    rng = np.random.default_rng(7)
    hexes = [f"{rng.integers(16**12):012x}" for _ in range(24)]
    if name == "dog-breed":
        if formats:
            sample = str(formats / "dog-breed-identification__sample_submission.csv")
            header = pd.read_csv(sample, nrows=0).columns.tolist()
        else:
            header = ["id", "affenpinscher", "afghan_hound", "african_hunting_dog", "black-and-tan_coonhound", "yorkie"]
            sample = _write_sample(ws, header, [[h] + ["0.2"] * 5 for h in hexes])
        return Competition(name=name, sample_submission=sample, kind="class_probs", metric="log_loss",
                           classes=sorted(header[1:]), label_columns=header[1:])
    if name == "aerial-cactus":
        if formats:
            sample = str(formats / "aerial-cactus-identification__sample_submission.csv")
        else:
            sample = _write_sample(ws, ["id", "has_cactus"], [[f"{h}.jpg", "0.5"] for h in hexes])
        return Competition(name=name, sample_submission=sample, kind="binary", metric="roc_auc", classes=["0", "1"],
                           positive_class="1", label_columns=["has_cactus"], id_has_extension=True)
    if name == "alaska2":
        if formats:
            sample = str(formats / "alaska2-image-steganalysis__real_submission_example.csv")
        else:
            ids = [f"{i:04d}.jpg" for i in rng.permutation(5000)[:24]]
            sample = _write_sample(ws, ["Id", "Label"], [[i, f"{rng.random():.6f}"] for i in ids])
        return Competition(name=name, sample_submission=sample, kind="binary", metric="roc_auc", id_column="Id",
                           classes=["cover", "stego"], positive_class="stego", label_columns=["Label"],
                           id_has_extension=True)
    if name == "cifar-10":
        if formats:
            labels = pd.read_csv(formats / "cifar-10__trainLabels_head.csv", dtype=str, keep_default_na=False)
            ids = labels["id"].tolist()
        else:
            ids = [str(i) for i in range(1, 25)]
        sample = _write_sample(ws, ["id", "label"], [[i, "cat"] for i in ids])
        return Competition(name=name, sample_submission=sample, kind="class_name", classes=CIFAR)
    if name == "humpback":
        if formats:
            train = pd.read_csv(formats / "humpback-whale-identification__train_labels_sample.csv", dtype=str)
            ids, classes = train["Image"].tolist(), sorted(set(train["Id"]))
        else:
            ids, classes = [f"{h[:9]}.jpg" for h in hexes], ["new_whale"] + [f"w_{h[:7]}" for h in hexes[:9]]
        sample = _write_sample(ws, ["Image", "Id"], [[i, "new_whale w_1287fbc w_98baff9 w_7554f44 w_1eafe46"]
                                                     for i in ids])
        return Competition(name=name, sample_submission=sample, kind="topk", metric="map@k", top_k=5,
                           id_column="Image", label_columns=["Id"], classes=classes, id_has_extension=True)
    if name == "cassava":
        if formats:
            mapping = json.loads((formats / "cassava-leaf-disease-classification__label_num_to_disease_map.json")
                                 .read_text())
            classes = sorted(mapping, key=int)
        else:
            classes = ["0", "1", "2", "3", "4"]
        ids = [f"{1000015157 + 7919 * i}.jpg" for i in range(24)]
        sample = _write_sample(ws, ["image_id", "label"], [[i, "4"] for i in ids])
        return Competition(name=name, sample_submission=sample, kind="class_id", id_column="image_id",
                           classes=classes, id_has_extension=True)
    if name == "nycu":
        # Folder names 0..99 in numeric order: the logits column of class "10" is 10, not ImageFolder's text order.
        classes = [str(i) for i in range(100)]
        ids = [f"{i:04d}" for i in rng.permutation(3000)[:30]]
        sample = _write_sample(ws, ["image_name", "pred_label"], [[i, "0"] for i in ids])
        return Competition(name=name, platform="codabench", sample_submission=sample, kind="class_id",
                           id_column="image_name", label_columns=["pred_label"], classes=classes)
    if name == "paddy":
        classes = ["bacterial_leaf_blight", "brown_spot", "normal", "tungro"]
        ids = [f"{200001 + i}.jpg" for i in range(24)]
        sample = _write_sample(ws, ["image_id", "label"], [[i, "normal"] for i in ids])
        return Competition(name=name, sample_submission=sample, kind="class_name", id_column="image_id",
                           classes=classes, submission_labels=[c.replace("_", " ") for c in classes],
                           id_has_extension=True)
    raise KeyError(name)


def random_probs(comp: Competition, ws: Workspace, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """The sample's ids in a shuffled order (the writer must restore the sample's) with peaked probabilities."""
    rng = np.random.default_rng(seed)
    ids = read_sample(comp, ws).column(comp.id_column)
    ids = [ids[i] for i in rng.permutation(len(ids))]
    return ids, rng.dirichlet(np.full(comp.num_classes, 0.3), size=len(ids))


def valid_submission(comp: Competition, ws: Workspace) -> bytes:
    ids, probs = random_probs(comp, ws)
    return to_csv_bytes(comp, to_frame(comp, ws, ids, probs))


def _source(request: pytest.FixtureRequest, source: str) -> Path | None:
    return request.getfixturevalue("shared") if source == "real" else None


CASES = [(n, "synthetic") for n in FORMATS] + [(n, "real") for n in REAL]


@pytest.mark.parametrize(("name", "source"), CASES)
def test_writer_round_trips_every_format(name, source, request, workspace):
    ws = Workspace(workspace)
    comp = build_format(name, workspace, _source(request, source))
    ids, probs = random_probs(comp, ws)
    frame = to_frame(comp, ws, ids, probs)
    path = write(comp, ws, "blend", frame)

    report = check_file(comp, ws, path)
    assert report.errors == [] and report.ok

    sample = read_sample(comp, ws)
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert back.columns.tolist() == sample.header  # exact header, names and order
    assert back[comp.id_column].tolist() == sample.column(comp.id_column)  # the sample's row order, its id form
    by_id = dict(zip(ids, probs, strict=True))
    expected = np.stack([by_id[i] for i in back[comp.id_column]])  # joined on id, never on position
    labels = comp.submission_labels or comp.classes
    label_cols = sample.header[1:]
    if comp.kind == "class_probs":
        values = back[label_cols].astype(float).to_numpy()
        order = [comp.classes.index(c) for c in label_cols]
        np.testing.assert_allclose(values, expected[:, order], atol=1e-8)
        assert np.abs(values.sum(axis=1) - 1).max() <= 1e-6
    elif comp.kind == "binary":
        positive = comp.classes.index(comp.positive_class)
        np.testing.assert_allclose(back[label_cols[0]].astype(float), expected[:, positive], atol=1e-8)
    elif comp.kind == "topk":
        best = np.argsort(-expected, axis=1)[:, :5]
        assert back[label_cols[0]].tolist() == [" ".join(labels[j] for j in row) for row in best]
    else:
        assert back[label_cols[0]].tolist() == [labels[j] for j in expected.argmax(axis=1)]
    assert frame[comp.id_column].tolist() == back[comp.id_column].tolist()


def test_class_ids_are_folder_names_in_numeric_order(workspace):
    ws = Workspace(workspace)
    comp = build_format("nycu", workspace, None)
    ids = read_sample(comp, ws).column(comp.id_column)
    probs = np.zeros((len(ids), 100))
    probs[:, comp.classes.index("10")] = 1.0  # logits column 10 is folder "10" (text order would put "2" there)
    frame = to_frame(comp, ws, ids, probs)
    assert frame["pred_label"].tolist() == [10] * len(ids)
    text = write(comp, ws, "ten", frame).read_text()
    assert text.splitlines()[1].endswith(",10")  # written as an integer, not "10.0"


def test_class_names_keep_their_spaces(workspace):
    ws = Workspace(workspace)
    comp = build_format("paddy", workspace, None)
    ids = read_sample(comp, ws).column(comp.id_column)
    probs = np.tile(np.eye(4)[0], (len(ids), 1))
    frame = to_frame(comp, ws, ids, probs)
    assert set(frame["label"]) == {"bacterial leaf blight"}


@pytest.mark.parametrize("num_classes", [120, 1000])
def test_rounded_probabilities_still_sum_to_one(num_classes, workspace):
    ws = Workspace(workspace)
    classes = [f"c{j:04d}" for j in range(num_classes)]
    sample = _write_sample(workspace, ["id", *classes], [[f"r{i}"] + ["0"] * num_classes for i in range(20)])
    comp = Competition(name="many", sample_submission=sample, kind="class_probs", classes=classes,
                       label_columns=classes)
    probs = np.random.default_rng(1).dirichlet(np.full(num_classes, 0.05), size=20)
    path = write(comp, ws, "many", to_frame(comp, ws, [f"r{i}" for i in range(20)], probs))
    sums = pd.read_csv(path, dtype={"id": str}).drop(columns="id").sum(axis=1)
    assert (sums - 1).abs().max() <= 1e-6
    assert check_file(comp, ws, path).ok
    assert float_digits(num_classes) >= 9


def test_class_probs_columns_follow_the_sample_not_the_classes(workspace):
    ws = Workspace(workspace)
    sample = _write_sample(workspace, ["id", "frog", "cat", "dog"], [["a", "0", "0", "1"], ["b", "1", "0", "0"]])
    comp = Competition(name="t", sample_submission=sample, kind="class_probs", classes=["cat", "dog", "frog"],
                       label_columns=["frog", "cat", "dog"])
    frame = to_frame(comp, ws, ["b", "a"], np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    assert frame.columns.tolist() == ["id", "frog", "cat", "dog"]
    np.testing.assert_allclose(frame.loc[frame["id"] == "b", ["frog", "cat", "dog"]].to_numpy(), [[0.1, 0.7, 0.2]])


def _toy(workspace: Path, kind: str = "class_name") -> tuple[Competition, Workspace]:
    sample = _write_sample(workspace, ["id", "label"], [["t1.png", "cat"], ["t2.png", "cat"], ["t3.png", "cat"]])
    comp = Competition(name="toy", sample_submission=sample, kind=kind, classes=["cat", "dog"], id_has_extension=True)
    return comp, Workspace(workspace)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (["t1", "t2", "t3"], "ids lack the '.png' extension the sample uses"),
        (["t1.png", "t2.png"], "1 sample id(s) have no prediction ('t3.png')"),
        (["t1.png", "t2.png", "t3.png", "t4.png"], "not in the sample ('t4.png')"),
        (["t1.png", "t1.png", "t3.png"], "test ids repeat ('t1.png')"),
    ],
)
def test_writer_refuses_ids_that_do_not_match_the_sample(ids, message, workspace):
    comp, ws = _toy(workspace)
    with pytest.raises(CompError, match="submission writer") as err:
        to_frame(comp, ws, ids, np.full((len(ids), 2), 0.5))
    assert message in str(err.value)


def test_writer_refuses_logits_bad_shapes_and_bad_settings(workspace):
    comp, ws = _toy(workspace)
    ids = ["t1.png", "t2.png", "t3.png"]
    with pytest.raises(CompError, match="pass softmax"):
        to_frame(comp, ws, ids, np.array([[2.0, -1.0]] * 3))
    with pytest.raises(CompError, match=r"expected \(3, 2\)"):
        to_frame(comp, ws, ids, np.full((3, 3), 1 / 3))
    with pytest.raises(CompError, match="NaN"):
        to_frame(comp, ws, ids, np.array([[np.nan, 1.0]] * 3))
    binary = Competition(name="toy", sample_submission=comp.sample_submission, kind="binary", classes=["cat", "dog"])
    with pytest.raises(CompError, match="positive_class"):
        to_frame(binary, ws, ids, np.full((3, 2), 0.5))
    class_id = Competition(name="toy", sample_submission=comp.sample_submission, kind="class_id",
                           classes=["cat", "dog"])
    with pytest.raises(CompError, match="not integers"):
        to_frame(class_id, ws, ids, np.full((3, 2), 0.5))
    topk = Competition(name="toy", sample_submission=comp.sample_submission, kind="topk", classes=["cat", "dog"],
                       submission_labels=["big cat", "dog"])
    with pytest.raises(CompError, match="space-separated"):
        to_frame(topk, ws, ids, np.full((3, 2), 0.5))
    missing = Competition(name="toy", sample_submission="nowhere.csv", classes=["cat", "dog"])
    with pytest.raises(CompError, match="not found"):
        to_frame(missing, ws, ids, np.full((3, 2), 0.5))


def test_write_refuses_bad_names_and_bad_frames_without_leaving_a_file(workspace):
    comp, ws = _toy(workspace)
    frame = to_frame(comp, ws, ["t1.png", "t2.png", "t3.png"], np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    for bad in ("../escape", "a/b", "x.csv", ""):
        with pytest.raises(CompError, match="submission name"):
            write(comp, ws, bad, frame)
    broken = frame.copy()
    broken.loc[1, "label"] = "horse"
    with pytest.raises(CompError, match="was not written.*unknown class"):
        write(comp, ws, "broken", broken)
    assert not ws.submission_csv("broken").exists()
    assert write(comp, ws, "good", frame).read_text() == "id,label\nt1.png,cat\nt2.png,dog\nt3.png,cat\n"


def test_check_bytes_agrees_with_check_file(workspace):
    comp, ws = _toy(workspace)
    data = b"id,label\nt1.png,cat\nt2.png,dog\n"
    (workspace / "short.csv").write_bytes(data)
    assert check_bytes(comp, ws, data).errors == check_file(comp, ws, workspace / "short.csv").errors != []


@pytest.mark.parametrize(
    ("layout", "kind", "ids_with_ext"),
    [("csv", "class_name", False), ("csv", "class_probs", True), ("csv", "binary", False), ("folders", "", False)],
)
def test_writer_accepts_what_init_and_test_items_produce(
    make_folder_competition, make_kaggle_competition, layout, kind, ids_with_ext, workspace
):
    from comp.setup.init import InitOptions, init_workspace
    from comp.setup.items import test_items

    if layout == "csv":
        classes = ("0", "1") if kind == "binary" else ("cat", "dog", "frog")
        data = make_kaggle_competition(workspace / "data" / "toy", classes=classes, kind=kind,
                                       ids_with_ext=ids_with_ext, n_per_class=2)
    else:
        data = make_folder_competition(workspace / "data" / "toy", n_per_class=2)
    ws = Workspace(workspace)
    comp = init_workspace(data, ws, InitOptions()).competition
    ids = test_items(comp, ws)["id"].tolist()[::-1]
    probs = np.random.default_rng(0).dirichlet(np.ones(comp.num_classes), size=len(ids))
    path = write(comp, ws, "first", to_frame(comp, ws, ids, probs))
    assert check_file(comp, ws, path).errors == []
    assert pd.read_csv(path, dtype=str, keep_default_na=False).columns.tolist() == read_sample(comp, ws).header
