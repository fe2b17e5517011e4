"""Items and submission formats: train_items/test_items against hand-written comp.toml fields, detect_format on the
headers of real samples (../shared/formats)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.kinds import detect_format
from comp.setup.items import test_items, train_items
from comp.setup.scan import read_table, sort_classes


def _image(path: Path, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 127, np.uint8)).save(path)


def _frame(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns).astype(str)


# -- classes


def test_numeric_classes_sort_as_numbers_not_text():
    assert sort_classes(["10", "2", "1", "0", "2"]) == ["0", "1", "2", "10"]
    assert sort_classes(["b", "a", "10", "9"]) == ["10", "9", "a", "b"]


# -- train_items / test_items


def test_csv_items_keep_ids_as_written_and_missing_files(workspace):
    data = workspace / "data"
    for i in ("007", "8"):
        _image(data / "train" / f"{i}.png")
    _image(data / "test" / "b.png")
    _image(data / "test" / "a.png")
    # "9" has no image: the row stays, with the path it should have, for `comp verify` to report.
    pd.DataFrame({"id": ["007", "8", "9"], "label": ["cat", "dog", "cat"], "site": ["x", "y", "x"]}).to_csv(
        data / "train.csv", index=False)
    pd.DataFrame({"id": ["b", "a"], "label": ["cat", "cat"]}).to_csv(data / "sample.csv", index=False)
    comp = Competition(name="t", data_dir="data", train_dirs=["data/train"], labels_csv="data/train.csv",
                       group_column="site", image_ext=".png", test_dir="data/test", sample_submission="data/sample.csv",
                       classes=["cat", "dog"])
    ws = Workspace(workspace)
    train = train_items(comp, ws)
    assert list(train.columns) == ["id", "path", "label", "group"]
    assert list(train["id"]) == ["007", "8", "9"]  # "007" not turned into 7
    assert train["path"].iloc[2] == str(workspace / "data/train/9.png")
    assert list(train["group"]) == ["x", "y", "x"]
    test = test_items(comp, ws)
    assert list(test["id"]) == ["b", "a"]  # the sample's order, not sorted
    assert all(Path(p).exists() for p in test["path"])


def test_train_items_reject_labels_outside_classes(workspace):
    data = workspace / "data"
    _image(data / "train" / "1.png")
    pd.DataFrame({"id": ["1"], "label": ["bird"]}).to_csv(data / "train.csv", index=False)
    comp = Competition(name="t", train_dirs=["data/train"], labels_csv="data/train.csv", image_ext=".png",
                       classes=["cat", "dog"])
    with pytest.raises(CompError, match="'bird'.*comp init"):
        train_items(comp, Workspace(workspace))


def test_train_items_name_a_missing_column(workspace):
    data = workspace / "data"
    data.mkdir()
    pd.DataFrame({"image": ["1"], "label": ["cat"]}).to_csv(data / "train.csv", index=False)
    comp = Competition(name="t", train_dirs=["data"], labels_csv="data/train.csv", classes=["cat"])
    with pytest.raises(CompError, match="no column 'id'.*train_id_column"):
        train_items(comp, Workspace(workspace))


def test_folder_items_pool_roots_and_id_by_relative_path(workspace):
    data = workspace / "data"
    for split in ("train", "val"):
        for cls in ("ants", "bees"):
            _image(data / split / cls / "0000.jpg")  # the same file name in every folder
    (data / "train" / "ants" / "placeholder.gif").write_bytes(b"GIF89a")
    comp = Competition(name="t", data_dir="data", layout="folders", train_dirs=["data/train", "data/val"],
                       classes=["ants", "bees"])
    train = train_items(comp, Workspace(workspace))
    assert sorted(train["id"]) == ["train/ants/0000.jpg", "train/bees/0000.jpg", "val/ants/0000.jpg",
                                   "val/bees/0000.jpg"]
    assert train["id"].is_unique
    assert dict(zip(train["id"], train["label"], strict=True))["val/bees/0000.jpg"] == "bees"


def test_test_items_without_test_images_is_empty_and_duplicates_are_refused(workspace):
    ws = Workspace(workspace)
    assert test_items(Competition(name="t"), ws).empty
    (workspace / "test").mkdir()
    pd.DataFrame({"id": ["a", "a"], "label": ["x", "x"]}).to_csv(workspace / "s.csv", index=False)
    comp = Competition(name="t", test_dir="test", sample_submission="s.csv")
    with pytest.raises(CompError, match="'a' appears more than once"):
        test_items(comp, ws)


def test_headerless_labels_read_as_id_label(shared):
    frame = read_table(shared / "data/cifar10-kaggle-small/image_data_format_1/trainLabels.csv", header=False)
    assert list(frame.columns) == ["id", "label"]
    assert frame.iloc[0].tolist() == ["1.png", "frog"]


# -- submission formats


def test_class_name_spelled_like_the_sample():
    sample = _frame(id=["a", "b"], label=["golden retriever", "Pug"])
    fmt = detect_format(sample, "id", ["golden_retriever", "pug"])
    assert fmt.kind == "class_name"
    assert fmt.submission_labels == ["golden retriever", "Pug"]


def test_sample_values_that_are_not_classes_are_refused():
    sample = _frame(id=["a"], label=["zebra"])
    with pytest.raises(CompError, match="'zebra'.*--label-column"):
        detect_format(sample, "id", ["cat", "dog", "frog"])
    # --kind says the values are placeholders
    assert detect_format(sample, "id", ["cat", "dog", "frog"], kind="class_name").submission_labels == [
        "cat", "dog", "frog"]


def test_integer_placeholders_of_many_classes_are_class_ids():
    sample = _frame(image_id=["1.jpg", "2.jpg"], label=["4", "4"])
    assert detect_format(sample, "image_id", ["0", "1", "2", "3", "4"]).kind == "class_id"
    with pytest.raises(CompError, match="--kind class_id"):
        detect_format(sample, "image_id", ["a", "b", "c"])
    forced = detect_format(sample, "image_id", ["a", "b", "c"], kind="class_id")
    assert forced.submission_labels == ["0", "1", "2"]


def test_binary_positive_class_is_named_by_the_column_or_second():
    named = detect_format(_frame(id=["a"], cat=["0.5"]), "id", ["cat", "dog"])
    assert (named.kind, named.positive_class) == ("binary", "cat")
    unnamed = detect_format(_frame(id=["a"], label=["0"]), "id", ["0", "1"])  # histopathology: placeholder 0
    assert (unnamed.kind, unnamed.positive_class) == ("binary", "1")
    with pytest.raises(CompError, match="exactly 2 classes"):
        detect_format(_frame(id=["a"], label=["0.5"]), "id", ["a", "b", "c"], kind="binary")


def test_real_sample_headers(shared):
    formats = shared / "formats"
    dog = read_table(formats / "dog-breed-identification__sample_submission.csv")
    breeds = [c.replace("_", " ") for c in dog.columns[1:]]  # folder names spelled with spaces still pair
    fmt = detect_format(dog, "id", sort_classes(breeds))
    assert fmt.kind == "class_probs" and len(fmt.submission_labels) == 120
    assert fmt.submission_labels[breeds.index("black-and-tan coonhound")] == "black-and-tan_coonhound"

    cactus = read_table(formats / "aerial-cactus-identification__sample_submission.csv")
    fmt = detect_format(cactus, "id", ["0", "1"])
    assert (fmt.kind, fmt.label_columns, fmt.positive_class) == ("binary", ["has_cactus"], "1")

    real = read_table(formats / "aerial-cactus-identification__real_submission_example.csv")  # a model's output
    assert detect_format(real, "id", ["0", "1"]).kind == "binary"

    alaska = read_table(formats / "alaska2-image-steganalysis__real_submission_example.csv")
    assert detect_format(alaska, "Id", ["0", "1"]).kind == "binary"

    whales = read_table(formats / "humpback-whale-identification__train_labels_sample.csv")
    classes = sort_classes(set(whales["Id"]))
    sample = _frame(Image=["x.jpg", "y.jpg"], Id=[" ".join(classes[:5]), " ".join(classes[:3])])
    fmt = detect_format(sample, "Image", classes)
    assert (fmt.kind, fmt.top_k) == ("topk", 5)
    with pytest.raises(CompError, match="probability columns do not pair"):
        detect_format(dog, "id", ["affenpinscher", "not_a_breed"])


def test_trailing_comma_columns_are_not_predictions(workspace):
    (workspace / "s.csv").write_text("id,label,\na,cat,\nb,dog,\n")
    fmt = detect_format(read_table(workspace / "s.csv"), "id", ["cat", "dog", "frog"])
    assert (fmt.kind, fmt.label_columns) == ("class_name", ["label"])
