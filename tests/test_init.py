"""`comp init` end to end: each layout it must recognise, on generated competitions and on real files from
../shared (data sets, and fake competitions built around real sample/label files), and the refusals."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from comp.cli import app, main
from comp.core.errors import CompError
from comp.core.workspace import STOCK_RECIPES, Workspace
from comp.setup import items as layouts

runner = CliRunner()


def _init(*args: str, ok: bool = True):
    result = runner.invoke(app, ["init", *map(str, args)])
    if ok:
        assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
        ws = Workspace.here()
        return ws.load(), ws, result.output
    assert result.exit_code != 0
    assert isinstance(result.exception, CompError), repr(result.exception)
    return str(result.exception)


def _image(path: Path, ext: str = "") -> None:
    path = path.with_name(path.name + ext)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(path)


def _fake(data: Path, labels: pd.DataFrame, id_col: str, sample: pd.DataFrame | None, sample_id: str,
          ext: str = "", labels_name: str = "train.csv", sample_name: str = "sample_submission.csv") -> Path:
    """A competition around real label/sample rows: an 8 px image for every id (plus `ext` when ids lack it)."""
    for image_id in labels[id_col]:
        _image(data / "train" / str(image_id), ext)
    labels.to_csv(data / labels_name, index=False)
    if sample is not None:
        for image_id in sample[sample_id]:
            _image(data / "test" / str(image_id), ext)
        sample.to_csv(data / sample_name, index=False)
    return data


# -- generated competitions


def test_kaggle_csv_layout(kaggle_data, workspace):
    (kaggle_data / "train" / ".DS_Store").write_bytes(b"\0")
    (kaggle_data / "README.txt").write_text("about")
    comp, ws, out = _init(kaggle_data, "--platform", "kaggle", "--name", "toy", "--n-folds", "3")
    assert (comp.layout, comp.platform, comp.name, comp.n_folds) == ("csv", "kaggle", "toy", 3)
    assert comp.labels_csv == "data/toy/train.csv" and comp.train_dirs == ["data/toy/train"]  # workspace-relative
    assert (comp.image_ext, comp.id_has_extension, comp.kind, comp.metric) == (".png", False, "class_name", "accuracy")
    assert comp.classes == comp.submission_labels == ["cat", "dog", "frog"]
    assert len(layouts.train_items(comp, ws)) == 30
    test = layouts.test_items(comp, ws)
    assert list(test["id"]) == list(pd.read_csv(kaggle_data / "sample_submission.csv")["id"])
    assert all(Path(p).exists() for p in test["path"])
    assert "train/.DS_Store" in out and "csv" in out
    for folder in ("folds", "submissions", "models"):
        assert (workspace / folder).is_dir()
    stock = sorted(p.name for p in STOCK_RECIPES.glob("*.toml"))
    assert sorted(p.name for p in (workspace / "models").glob("*.toml")) == stock


def test_ids_with_extension_and_existing_recipes_kept(make_kaggle_competition, workspace):
    data = make_kaggle_competition(workspace / "data", ids_with_ext=True, ext=".jpg")
    (workspace / "models").mkdir()
    (workspace / "models" / "tiny.toml").write_text("# mine\n")
    comp, ws, _ = _init(data)
    assert (comp.image_ext, comp.id_has_extension) == ("", True)
    assert all(Path(p).exists() for p in layouts.train_items(comp, ws)["path"])
    assert (workspace / "models" / "tiny.toml").read_text() == "# mine\n"


@pytest.mark.parametrize(("kind", "classes", "expected"), [
    ("class_probs", ("Golden Retriever", "pug", "beagle"), "class_probs"),
    ("binary", ("cat", "dog"), "binary"),
])
def test_probability_samples(make_kaggle_competition, workspace, kind, classes, expected):
    data = make_kaggle_competition(workspace / "data", classes=classes, kind=kind, n_per_class=2, n_test=2)
    comp, _, _ = _init(data)
    assert comp.kind == expected and comp.metric == {"binary": "roc_auc", "class_probs": "log_loss"}[kind]
    if kind == "binary":
        assert comp.positive_class == "dog"
    else:
        assert comp.label_columns == list(classes) and comp.submission_labels == sorted(classes)


def test_metric_and_group_column_flags(make_kaggle_competition, workspace):
    data = make_kaggle_competition(workspace / "data", n_per_class=2, n_test=2)
    labels = pd.read_csv(data / "train.csv", dtype=str)
    labels.assign(patient=[f"p{i // 2}" for i in range(len(labels))]).to_csv(data / "train.csv", index=False)
    comp, ws, _ = _init(data, "--metric", "f1_macro", "--group-column", "patient", "--seed", "7")
    assert (comp.metric, comp.group_column, comp.seed, comp.train_label_column) == ("f1_macro", "patient", 7, "label")
    assert layouts.train_items(comp, ws)["group"].iloc[-1] == "p2"


def test_numeric_class_folders_are_codabench_style(make_folder_competition, workspace):
    data = make_folder_competition(workspace / "data", classes=("0", "1", "2", "10"), n_per_class=2, n_test=3)
    (data / "train" / "1" / "notes.txt").write_text("x")
    comp, ws, out = _init(data, "--platform", "codabench")
    assert comp.layout == "folders" and comp.classes == ["0", "1", "2", "10"]  # numeric, not text order
    assert comp.kind == "class_id" and comp.submission_labels == comp.classes
    sample = pd.read_csv(ws.path(comp.sample_submission), dtype=str)
    assert list(sample.columns) == ["image_name", "pred_label"] and sample["image_name"][0] == "img000"
    assert (comp.id_column, comp.id_has_extension, comp.image_ext) == ("image_name", False, ".jpg")
    assert all(Path(p).exists() for p in layouts.test_items(comp, ws)["path"])
    train = layouts.train_items(comp, ws)
    assert set(train["label"]) == {"0", "1", "2", "10"} and len(train) == 8
    assert "notes.txt" in out and "sample_submission.csv" in out
    comp, ws, _ = _init(data, "--force", "--kind", "class_probs", "--platform", "kaggle")
    assert (comp.label_columns, comp.id_column) == (["0", "1", "2", "10"], "id")


def test_val_pooled_spaces_mapped_and_labelled_test(make_folder_competition, workspace):
    data = make_folder_competition(workspace / "data", classes=("golden_retriever", "pug"), n_per_class=2)
    shutil.copytree(data / "train", data / "val")
    shutil.rmtree(data / "test")
    for cls in ("golden_retriever", "pug"):
        _image(data / "test" / cls / "0000.jpg")
    comp, ws, _ = _init(data)
    assert comp.train_dirs == ["data/train", "data/val"] and len(layouts.train_items(comp, ws)) == 8
    assert comp.test_answers == ".comp/test_answers.csv"
    answers = pd.read_csv(ws.path(comp.test_answers))
    assert list(answers["label"]) == ["golden_retriever", "pug"]
    assert list(layouts.test_items(comp, ws)["id"]) == list(answers["id"])
    # A shipped sample spelling the class with a space: classes stay folder names, the submission uses its spelling.
    shutil.rmtree(data / "test")
    for i in range(2):
        _image(data / "test" / f"x{i}.jpg")
    pd.DataFrame({"id": ["x0.jpg", "x1.jpg"], "label": "golden retriever"}).to_csv(data / "sample.csv", index=False)
    comp, ws, out = _init(data, "--force")
    assert comp.classes == ["golden_retriever", "pug"] and comp.submission_labels == ["golden retriever", "pug"]
    assert comp.test_answers == "" and "golden_retriever -> golden retriever" in out


# -- real data and real formats


def test_real_folder_datasets(shared):
    comp, ws, out = _init(shared / "data/hymenoptera")
    assert comp.layout == "folders" and len(comp.train_dirs) == 2 and comp.classes == ["ants", "bees"]
    assert len(layouts.train_items(comp, ws)) == 397  # 123 + 121 + 70 + 83: the GIF placeholder is skipped
    assert "imageNotFound.gif" in out and "no test images" in out and comp.sample_submission == ""
    comp, ws, _ = _init(shared / "data/cifar10-small", "--force")
    assert comp.test_answers and len(layouts.test_items(comp, ws)) == 200
    assert layouts.test_items(comp, ws)["id"].is_unique  # 0000.jpg is in every class folder


def test_real_headerless_labels(shared):
    comp, ws, _ = _init(shared / "data/cifar10-kaggle-small/image_data_format_1")
    assert (comp.layout, comp.labels_header, comp.image_ext) == ("csv", False, "")
    train = layouts.train_items(comp, ws)
    assert len(train) == 200 and train.iloc[0]["label"] == "frog" and Path(train.iloc[0]["path"]).exists()


def test_fake_cifar10_with_real_label_header(shared, workspace):
    labels = pd.read_csv(shared / "formats/cifar-10__trainLabels_head.csv", dtype=str, keep_default_na=False)
    labels = labels.head(20)  # header "id,label,index," with empty extra columns; ids without ".png"
    sample = pd.DataFrame({"id": ["1", "2"], "label": "cat"})
    data = _fake(workspace / "data", labels, "id", sample, "id", ext=".png", labels_name="trainLabels.csv",
                 sample_name="sampleSubmission.csv")
    comp, ws, _ = _init(data)
    assert (comp.train_label_column, comp.image_ext, comp.kind) == ("label", ".png", "class_name")
    assert len(layouts.train_items(comp, ws)) == 20


def test_fake_dog_breeds_with_real_sample(shared, workspace):
    sample = pd.read_csv(shared / "formats/dog-breed-identification__sample_submission.csv").head(3)
    breeds = list(sample.columns[1:])
    labels = pd.DataFrame({"id": [f"tr{i}" for i in range(len(breeds))], "breed": breeds})
    data = _fake(workspace / "data", labels, "id", sample, "id", ext=".jpg", labels_name="labels.csv")
    comp, ws, _ = _init(data)
    assert comp.kind == "class_probs" and comp.train_label_column == "breed" and comp.num_classes == 120
    assert comp.submission_labels == comp.classes and comp.image_ext == ".jpg"
    assert len(layouts.test_items(comp, ws)) == 3


def test_fake_binary_competitions_with_real_samples(shared, workspace):
    cactus = pd.read_csv(shared / "formats/aerial-cactus-identification__sample_submission.csv", dtype=str).head(4)
    labels = pd.DataFrame({"id": [f"a{i}.jpg" for i in range(4)], "has_cactus": ["0", "1", "1", "0"]})
    comp, _, _ = _init(_fake(workspace / "cactus", labels, "id", cactus, "id"))
    assert (comp.kind, comp.positive_class, comp.label_columns, comp.id_has_extension) == (
        "binary", "1", ["has_cactus"], True)
    alaska = pd.read_csv(shared / "formats/alaska2-image-steganalysis__real_submission_example.csv", dtype=str)
    labels = pd.DataFrame({"Id": ["c1.jpg", "c2.jpg"], "Label": ["0", "1"]})
    comp, _, _ = _init(_fake(workspace / "alaska", labels, "Id", alaska.head(3), "Id"), "--force")
    assert (comp.kind, comp.id_column, comp.metric) == ("binary", "Id", "roc_auc")


def test_fake_whales_topk_with_real_labels(shared, workspace):
    labels = pd.read_csv(shared / "formats/humpback-whale-identification__train_labels_sample.csv", dtype=str)
    labels = pd.concat([labels.head(3), labels.drop_duplicates("Id").head(12)]).drop_duplicates("Image")
    top = " ".join(["new_whale", *labels["Id"].drop_duplicates()[1:5]])
    sample = pd.DataFrame({"Image": ["q1.jpg", "q2.jpg"], "Id": top})
    comp, ws, _ = _init(_fake(workspace / "data", labels, "Image", sample, "Image"), "--metric", "map@k")
    assert (comp.kind, comp.top_k, comp.train_id_column, comp.train_label_column) == ("topk", 5, "Image", "Id")
    assert "new_whale" in comp.classes and len(layouts.train_items(comp, ws)) == len(labels)


def test_fake_cassava_integer_labels(shared, workspace):
    diseases = json.loads((shared / "formats/cassava-leaf-disease-classification__label_num_to_disease_map.json")
                          .read_text())
    labels = pd.DataFrame({"image_id": [f"{i}.jpg" for i in range(10)], "label": [str(i % 5) for i in range(10)]})
    sample = pd.DataFrame({"image_id": ["t.jpg"], "label": ["4"]})
    comp, _, _ = _init(_fake(workspace / "data", labels, "image_id", sample, "image_id"))
    assert comp.kind == "class_id" and comp.classes == sorted(diseases) == comp.submission_labels


# -- refusals: a message naming what was seen and the flag that settles it, never a traceback


def test_refuses_ambiguous_or_wrong_input(make_kaggle_competition, workspace):
    data = make_kaggle_competition(workspace / "data", n_per_class=2, n_test=2)
    assert "not a folder" in _init(workspace / "nowhere", ok=False)
    shutil.copy(data / "train.csv", data / "labels.csv")
    assert "--labels-csv" in _init(data, ok=False)
    (data / "labels.csv").unlink()
    pd.DataFrame({"id": ["t000"], "label": ["zebra"]}).to_csv(data / "sample_submission.csv", index=False)
    assert "'zebra'" in _init(data, ok=False)
    labels = pd.read_csv(data / "train.csv", dtype=str)
    labels.assign(note=labels["id"] + "x", label2=labels["label"]).rename(columns={"label": "kind_a"}).to_csv(
        data / "train.csv", index=False)
    assert "--label-column" in _init(data, ok=False)
    assert "--group-column" in _init(data, "--label-column", "kind_a", "--group-column", "nope", ok=False)
    assert "--kind" in _init(data, "--kind", "bogus", ok=False)
    assert "--platform" in _init(data, "--platform", "kagle", ok=False)
    assert "--n-folds 1" in _init(data, "--n-folds", "1", ok=False)
    assert "unknown metric 'acc'" in _init(data, "--metric", "acc", ok=False)
    assert not (workspace / "comp.toml").exists() and not (workspace / ".comp").exists()  # nothing half-written


def test_refuses_to_overwrite_and_main_prints_no_traceback(kaggle_data, monkeypatch, capsys):
    _init(kaggle_data)
    monkeypatch.setattr(sys, "argv", ["comp", "init", str(kaggle_data)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "comp.toml already exists" in err and "--force" in err and "Traceback" not in err
    shutil.copy(kaggle_data / "train.csv", kaggle_data / "trainLabels.csv")
    monkeypatch.setattr(sys, "argv", ["comp", "init", str(kaggle_data), "--force"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "--labels-csv" in err and "Traceback" not in err


def test_ambiguous_id_column_is_refused(make_kaggle_competition, workspace):
    data = make_kaggle_competition(workspace / "data", n_per_class=2, n_test=2)
    sample = pd.read_csv(data / "sample_submission.csv", dtype=str)
    sample.insert(1, "file", sample["id"] + ".png")
    sample.to_csv(data / "sample_submission.csv", index=False)
    assert "--id-column" in _init(data, ok=False)
    sample.drop(columns="file").to_csv(data / "sample_submission.csv", index=False)
    labels = pd.read_csv(data / "train.csv", dtype=str)
    labels.insert(1, "file", labels["id"] + ".png")
    labels.to_csv(data / "train.csv", index=False)
    assert "several columns name the image files (id, file); pass --id-column" in _init(data, ok=False)
    assert _init(data, "--id-column", "file")[0].train_id_column == "file"
    labels[["id"]].to_csv(data / "train.csv", index=False)  # no label column at all
    assert "cannot tell which column is the label" in _init(data, "--force", ok=False)


def test_other_real_world_shapes(make_folder_competition, workspace):
    """Nested zips (train/train/), top-level class folders beside Test/ (alaska2), every image in one folder
    (leaf-classification), class folders beside a train.csv (paddy)."""
    nested = workspace / "nested"
    for i in range(4):
        _image(nested / "train" / "train" / f"{i}.jpg")
    _image(nested / "test" / "test" / "q.jpg")
    pd.DataFrame({"id": [f"{i}.jpg" for i in range(4)], "label": ["a", "b"] * 2}).to_csv(nested / "train.csv",
                                                                                      index=False)
    pd.DataFrame({"id": ["q.jpg"], "label": "a"}).to_csv(nested / "sample_submission.csv", index=False)
    comp, ws, _ = _init(nested)
    assert (comp.train_dirs, comp.test_dir) == (["nested/train/train"], "nested/test/test")

    top = workspace / "top"
    for cls in ("Cover", "JMiPOD", "Test"):
        _image(top / cls / "0001.jpg")
    pd.DataFrame({"Id": ["0001.jpg"], "Label": "Cover"}).to_csv(top / "sample_submission.csv", index=False)
    comp, ws, out = _init(top, "--force")
    assert (comp.layout, comp.train_dirs, comp.test_dir, comp.classes) == (
        "folders", ["top"], "top/Test", ["Cover", "JMiPOD"])
    assert len(layouts.train_items(comp, ws)) == 2 and "sample_submission.csv" not in out.split("ignored")[1][:60]

    leaf = workspace / "leaf"
    for i in range(1, 7):
        _image(leaf / "images" / f"{i}.jpg")
    pd.DataFrame({"id": ["1", "2", "3", "4"], "species": ["Acer_Mono", "Quercus Rubra"] * 2,
                  "margin1": ["0.1", "0.2", "0.3", "0.4"]}).to_csv(leaf / "train.csv", index=False)
    pd.DataFrame({"id": ["5", "6"], "margin1": "0.1"}).to_csv(leaf / "test.csv", index=False)
    pd.DataFrame({"id": ["5", "6"], "Acer_Mono": 0.5, "Quercus_Rubra": 0.5}).to_csv(leaf / "sample_submission.csv",
                                                                                     index=False)
    comp, ws, _ = _init(leaf, "--force")
    assert (comp.train_label_column, comp.test_dir, comp.kind) == ("species", "leaf/images", "class_probs")
    assert comp.submission_labels == ["Acer_Mono", "Quercus_Rubra"]
    assert [Path(p).name for p in layouts.test_items(comp, ws)["path"]] == ["5.jpg", "6.jpg"]

    paddy = make_folder_competition(workspace / "paddy", classes=("blast", "normal"), n_per_class=2, n_test=2)
    pd.DataFrame({"image_id": ["0000.jpg"], "label": ["blast"]}).to_csv(paddy / "train.csv", index=False)
    comp, _, out = _init(paddy, "--force")
    assert comp.layout == "folders" and "train.csv ignored" in out


def test_label_in_file_name_is_refused_with_a_hint(make_kaggle_competition, workspace):
    for name in ("cat.0.jpg", "dog.0.jpg"):
        _image(workspace / "dvc" / "train" / name)
    _image(workspace / "dvc" / "test1" / "1.jpg")
    message = _init(workspace / "dvc", ok=False)
    assert "found no training labels" in message and "--labels-csv" in message
    make_kaggle_competition(workspace / "k", n_per_class=2, n_test=2)
    assert "'ID'" in _init(workspace / "k", "--id-column", "ID", ok=False)


def test_ids_that_are_paths_from_the_data_folder(workspace):
    data = workspace / "paths"
    for i in range(4):
        _image(data / "train_images" / "part1" / f"{i}.png")
    pd.DataFrame({"filepath": [f"train_images/part1/{i}" for i in range(4)], "target": ["a", "b"] * 2}).to_csv(
        data / "train.csv", index=False)
    comp, ws, _ = _init(data)
    assert (comp.train_dirs, comp.train_id_column, comp.train_label_column, comp.image_ext) == (
        ["paths"], "filepath", "target", ".png")
    assert all(Path(p).exists() for p in layouts.train_items(comp, ws)["path"])
