"""`comp init` on the layouts real competitions use beyond "labels CSV + flat folder" and "train/<class>/": labels only
in file names (dogs-vs-cats), one-hot label CSVs (plant-pathology-2020), groups from a second CSV (StateFarm's
drivers), and images nested under folders that are not their classes (hotel-id). Each is generated here with 8 px
images in the real competition's file and column names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from comp.cli import app
from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.folds import make_folds
from comp.setup.items import train_items

runner = CliRunner()


def _init(*args: str):
    result = runner.invoke(app, ["init", *map(str, args)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    ws = Workspace.here()
    return ws.load(), ws, result.output


def _refused(*args: str) -> str:
    result = runner.invoke(app, ["init", *map(str, args)])
    assert result.exit_code != 0
    assert isinstance(result.exception, CompError), repr(result.exception)
    return str(result.exception)


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(path)


# -- labels in file names


@pytest.fixture
def dogs_vs_cats(workspace) -> Path:
    """dogs-vs-cats-redux: train/cat.0.jpg, train/dog.0.jpg; test/1.jpg; sample `id,label` (P(dog))."""
    data = workspace / "data"
    for animal, n in (("cat", 7), ("dog", 5)):
        for i in range(n):
            _image(data / "train" / f"{animal}.{i}.jpg")
    for i in range(1, 5):
        _image(data / "test" / f"{i}.jpg")
    pd.DataFrame({"id": range(1, 5), "label": 0.5}).to_csv(data / "sample_submission.csv", index=False)
    return data


def test_dogs_vs_cats_labels_come_from_the_file_names(dogs_vs_cats):
    _image(dogs_vs_cats / "train" / "readme.jpg")  # fits no pattern: left out, and said so
    comp, ws, out = _init(dogs_vs_cats)
    assert (comp.layout, comp.train_dirs, comp.classes) == ("names", ["data/train"], ["cat", "dog"])
    assert (comp.kind, comp.positive_class) == ("binary", "dog")  # "the probability that the image is a dog"
    items = train_items(comp, ws)
    assert dict(zip(items["id"], items["label"], strict=True))["dog.3.jpg"] == "dog"
    assert len(items) == 12 and "readme.jpg" not in set(items["id"])
    assert "cat 7, dog 5" in out and "labels from file names: cat.0.jpg -> 'cat'" in " ".join(out.split())
    assert "1 image(s) in data/train do not fit" in " ".join(out.split())
    folds, _ = make_folds(comp, ws, n_folds=2)
    assert sorted(folds.frame["id"]) == sorted(items["id"])


def test_class_underscore_number_names_and_a_pattern_given_by_hand(workspace):
    data = workspace / "data"
    for breed in ("Abyssinian", "great_pyrenees"):  # Oxford pets: the class itself may hold underscores
        for i in range(1, 5):
            _image(data / "train" / f"{breed}_{i}.jpg")
    comp, ws, _ = _init(data)
    assert (comp.layout, comp.classes) == ("names", ["Abyssinian", "great_pyrenees"])
    # A pattern comp does not know: `<n>-<class>.png`, given as a regex with a group `label`.
    other = workspace / "other"
    for i, label in enumerate(["a", "b", "a", "b", "a", "b"]):
        _image(other / "train" / f"{i}-{label}.png")
    comp, ws, _ = _init(other, "--force", "--label-pattern", r"\d+-(?P<label>\w+)\.png")
    assert comp.classes == ["a", "b"] and set(train_items(comp, ws)["label"]) == {"a", "b"}
    # no folder named train: the images folder (or DATA_DIR itself) is read the same way
    flat = workspace / "flat"
    for i in range(4):
        for animal in ("cat", "dog"):
            _image(flat / "images" / f"{animal}.{i}.jpg")
    comp, ws, _ = _init(flat, "--force")
    assert (comp.layout, comp.train_dirs, comp.classes) == ("names", ["flat/images"], ["cat", "dog"])


def test_names_that_are_ids_not_labels_are_not_read_as_classes(workspace):
    data = workspace / "data"
    for i in range(12):
        _image(data / "train" / f"img_{i}.jpg")  # one "class": an id prefix, not a label
    for i in range(12):
        _image(data / "train2" / f"x{i}_{i}.jpg")  # as many "classes" as files: ids
    for i in range(9):
        _image(data / "train3" / f"{'IMG' if i % 3 else 'DSC'}_{i:04d}.jpg")  # a camera's numbering
    message = _refused(data)
    assert "found no training labels" in message and "--label-pattern" in message


def test_a_hand_edited_label_pattern_without_a_label_group_is_named(dogs_vs_cats):
    comp, ws, _ = _init(dogs_vs_cats)
    broken = Competition(**{**comp.__dict__, "label_pattern": r"(.+)\.\d+\.jpg"})
    with pytest.raises(CompError, match="no group named `label`"):
        train_items(broken, ws)


# -- one-hot label CSVs


def _plant_pathology(workspace: Path, rows: list[tuple[int, int, int, int]]) -> Path:
    """plant-pathology-2020: images/Train_<n>.jpg and images/Test_<n>.jpg in one folder; train.csv one-hot."""
    data = workspace / "data"
    columns = ["healthy", "multiple_diseases", "rust", "scab"]
    train = pd.DataFrame(rows, columns=columns)
    train.insert(0, "image_id", [f"Train_{i}" for i in range(len(rows))])
    for image_id in train["image_id"]:
        _image(data / "images" / f"{image_id}.jpg")
    train.to_csv(data / "train.csv", index=False)
    sample = pd.DataFrame({"image_id": [f"Test_{i}" for i in range(3)], **{c: 0.25 for c in columns}})
    for image_id in sample["image_id"]:
        _image(data / "images" / f"{image_id}.jpg")
    sample.to_csv(data / "sample_submission.csv", index=False)
    return data


ONE_HOT = [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)] * 3


def test_plant_pathology_one_hot_labels_read_as_one_class_per_image(workspace):
    data = _plant_pathology(workspace, ONE_HOT)
    comp, ws, out = _init(data)
    assert comp.train_label_columns == ["healthy", "multiple_diseases", "rust", "scab"]
    assert comp.classes == comp.submission_labels == ["healthy", "multiple_diseases", "rust", "scab"]
    assert (comp.layout, comp.kind, comp.image_ext, comp.test_dir) == ("csv", "class_probs", ".jpg", "data/images")
    items = train_items(comp, ws)
    assert list(items["label"][:4]) == ["healthy", "multiple_diseases", "rust", "scab"]
    assert "(one-hot)" in out and "healthy 3" in out


def test_plant_pathology_with_several_ones_in_a_row_is_named_multi_label(workspace):
    data = _plant_pathology(workspace, [*ONE_HOT, (0, 0, 1, 1)])
    message = _refused(data)
    assert "multi-label" in message and "line 14: rust, scab" in message and "multilabel_probs" in message
    assert not (workspace / "comp.toml").exists()
    comp, ws, _ = _init(data, "--kind", "multilabel_probs")  # what the message says to run
    assert (comp.kind, comp.train_label_columns) == ("multilabel_probs", ["healthy", "multiple_diseases", "rust",
                                                                          "scab"])
    assert train_items(comp, ws)["label"].iloc[-1] == "rust scab"


def test_one_hot_columns_named_by_hand_and_a_row_without_a_class(workspace):
    data = workspace / "data"
    frame = pd.DataFrame({"file": [f"{i}.png" for i in range(6)], "is_a": [1, 0, 1, 0, 1, 0],
                          "is_b": [0, 1, 0, 1, 0, 1], "source": list("xyzxyz")})
    for name in frame["file"]:
        _image(data / "train" / name)
    frame.to_csv(data / "train.csv", index=False)
    comp, ws, _ = _init(data, "--label-column", "is_a,is_b")
    assert comp.train_label_columns == ["is_a", "is_b"] and comp.classes == ["is_a", "is_b"]
    frame.loc[2, "is_a"] = 0
    frame.to_csv(data / "train.csv", index=False)
    with pytest.raises(CompError, match="mark no class .line 4"):
        train_items(comp, ws)


# -- groups from a second CSV (StateFarm)


@pytest.fixture
def state_farm(workspace) -> Path:
    """state-farm-distracted-driver-detection: imgs/train/c0..c2/img_<n>.jpg, imgs/test/, driver_imgs_list.csv
    (subject,classname,img), sample `img,c0,c1,c2`. Each driver appears in every class."""
    data = workspace / "data"
    rows = []
    for k, cls in enumerate(("c0", "c1", "c2")):
        for i in range(12):
            name = f"img_{k * 100 + i}.jpg"
            _image(data / "imgs" / "train" / cls / name)
            rows.append((f"p{i % 6:03d}", cls, name))
    pd.DataFrame(rows, columns=["subject", "classname", "img"]).to_csv(data / "driver_imgs_list.csv", index=False)
    test = [f"img_9{i}.jpg" for i in range(3)]
    for name in test:
        _image(data / "imgs" / "test" / name)
    pd.DataFrame({"img": test, "c0": 0.3, "c1": 0.3, "c2": 0.4}).to_csv(data / "sample_submission.csv", index=False)
    return data


def _one_fold_per_group(ws: Workspace, groups_csv: Path) -> pd.Series:
    folds = pd.read_csv(ws.folds_csv)
    folds["img"] = folds["id"].str.rsplit("/", n=1).str[-1]
    merged = folds.merge(pd.read_csv(groups_csv), on="img", validate="one_to_one")
    return merged.groupby("subject")["fold"].nunique()


def test_state_farm_without_groups_names_the_csv_it_does_not_read(state_farm):
    comp, ws, out = _init(state_farm)
    assert (comp.layout, comp.group_column, comp.classes) == ("folders", "", ["c0", "c1", "c2"])
    flat = " ".join(out.split())
    assert "CSVs not read │ driver_imgs_list.csv" in flat or "driver_imgs_list.csv" in flat.split("CSVs not read")[1]
    assert "--groups data/driver_imgs_list.csv --group-column subject" in flat  # the hint names the fix


def test_state_farm_groups_keep_each_driver_in_one_fold(state_farm, cli):
    comp, ws, out = _init(state_farm, "--groups", "driver_imgs_list.csv", "--group-column", "subject")
    assert (comp.groups_csv, comp.groups_id_column, comp.group_column) == (
        "data/driver_imgs_list.csv", "img", "subject")
    assert "6 groups" in out
    assert cli("folds", "--n-folds", "3")[0] == 0
    per_driver = _one_fold_per_group(ws, state_farm / "driver_imgs_list.csv")
    assert len(per_driver) == 6 and (per_driver == 1).all()
    assert pd.read_csv(ws.folds_csv)["fold"].nunique() == 3


def test_group_column_alone_finds_the_one_csv_holding_it(state_farm):
    comp, ws, out = _init(state_farm, "--group-column", "subject")
    assert comp.groups_csv == "data/driver_imgs_list.csv"
    items = train_items(comp, ws)
    assert items.set_index("id").loc["imgs/train/c1/img_103.jpg", "group"] == "p003"


def test_unresolvable_groups_are_clear_errors_not_key_errors(state_farm, cli):
    message = _refused(state_farm, "--group-column", "driver")
    assert "no CSV here has it" in message and "--groups FILE" in message
    message = _refused(state_farm, "--groups", "driver_imgs_list.csv")
    assert "needs --group-column" in message and "subject" in message
    comp, ws, _ = _init(state_farm)
    # group_column written by hand into comp.toml for a class-folder layout: `comp folds` says where to read it.
    ws.save(Competition(**{**comp.__dict__, "group_column": "subject"}))
    code, output = cli("folds")
    assert code == 1 and "groups_csv" in output and "--group-column" in output and "Traceback" not in output
    ws.save(Competition(**{**comp.__dict__, "group_column": "driver", "groups_csv": "data/driver_imgs_list.csv",
                           "groups_id_column": "img"}))
    code, output = cli("folds")
    assert code == 1 and "no column 'driver'" in output


def test_images_missing_from_the_groups_csv_are_their_own_groups(state_farm):
    listing = pd.read_csv(state_farm / "driver_imgs_list.csv")
    listing.iloc[2:].to_csv(state_farm / "driver_imgs_list.csv", index=False)
    comp, ws, out = _init(state_farm, "--groups", "driver_imgs_list.csv", "--group-column", "subject")
    assert "2 of 36 training images have no row" in " ".join(out.split())
    groups = train_items(comp, ws)["group"]
    assert groups.nunique() == 6 + 2


# -- images nested under folders that are not classes


def test_hotel_id_chain_folders_are_not_the_classes(workspace):
    """hotel-id-2021: train_images/<chain>/<image>.jpg; train.csv image,chain,hotel_id; top-5 hotel ids."""
    data = workspace / "data"
    rows = []
    for i in range(18):
        # Chain 0 holds 2/3 of the images: matching ids against one chain folder alone must not win.
        chain, hotel = f"{int(i >= 12)}", f"{1000 + i % 6}"
        _image(data / "train_images" / chain / f"{i:04x}.jpg")
        rows.append((f"{i:04x}.jpg", chain, hotel, "2018-01-01"))
    pd.DataFrame(rows, columns=["image", "chain", "hotel_id", "timestamp"]).to_csv(data / "train.csv", index=False)
    for name in ("t1.jpg", "t2.jpg"):
        _image(data / "test_images" / name)
    pd.DataFrame({"image": ["t1.jpg", "t2.jpg"], "hotel_id": "1000 1001 1002 1003 1004"}).to_csv(
        data / "sample_submission.csv", index=False)
    comp, ws, out = _init(data)
    assert (comp.layout, comp.train_subfolders, comp.train_label_column) == ("csv", True, "hotel_id")
    assert comp.classes == [str(1000 + k) for k in range(6)] and (comp.kind, comp.top_k) == ("topk", 5)
    items = train_items(comp, ws)
    assert items.set_index("id").loc["000d.jpg", "path"] == str(data / "train_images" / "1" / "000d.jpg")
    assert all(Path(p).exists() for p in items["path"])
    assert "are not the classes" in " ".join(out.split())


def test_nested_class_folders_ask_for_the_level_unless_it_is_clear(workspace):
    data = workspace / "data"
    for chain in ("a", "b"):
        for hotel in range(3):
            for i in range(2):
                _image(data / "train" / chain / f"{chain}{hotel}" / f"{i}.jpg")
    message = _refused(data)
    assert "--class-depth" in message and "level 1: 2 folders" in message and "level 2: 6 folders" in message
    comp, ws, out = _init(data, "--class-depth", "2")
    assert (comp.class_depth, comp.classes) == (2, ["a0", "a1", "a2", "b0", "b1", "b2"])
    items = train_items(comp, ws)
    assert dict(zip(items["id"], items["label"], strict=True))["train/b/b1/0.jpg"] == "b1"
    # tiny-imagenet: train/<class>/images/*.JPEG - one name repeated under every class is structure, not a class
    tiny = workspace / "tiny"
    for cls in ("n01", "n02"):
        for i in range(3):
            _image(tiny / "train" / cls / "images" / f"{cls}_{i}.JPEG")
    comp, ws, _ = _init(tiny, "--force")
    assert (comp.class_depth, comp.classes) == (1, ["n01", "n02"])
    assert len(train_items(comp, ws)) == 6
    # a zip that wrapped each class in a folder of its own name: train/<class>/<class>/
    wrapped = workspace / "wrapped"
    for cls in ("ants", "bees"):
        for i in range(3):
            _image(wrapped / "train" / cls / cls / f"{i}.jpg")
    comp, ws, _ = _init(wrapped, "--force")
    assert (comp.class_depth, comp.classes) == (1, ["ants", "bees"])


def test_verify_names_the_fix_of_a_small_class_in_file_name_labels(workspace):
    from comp.setup.verify import verify

    data = workspace / "data"
    for name in [f"cat.{i}.jpg" for i in range(7)] + ["dog.0.jpg"]:
        _image(data / "train" / name)
    comp, ws, _ = _init(data)
    report, _ = verify(comp, ws, workers=1)
    (issue,) = [i for i in report.errors if i.kind == "single-image-class"]
    assert issue.path == "dog" and "images named like 'dog'" in issue.detail and "label_pattern" in issue.detail


def test_a_labels_csv_column_named_like_a_group_is_pointed_out(workspace):
    """siim-isic-melanoma: train.csv image_name,patient_id,...,target - a patient's images must not span folds."""
    data = workspace / "data"
    frame = pd.DataFrame({"image_name": [f"ISIC_{i:07d}" for i in range(12)],
                          "patient_id": [f"IP_{i // 3}" for i in range(12)], "target": [0, 1] * 6})
    for name in frame["image_name"]:
        _image(data / "train" / f"{name}.jpg")
    frame.to_csv(data / "train.csv", index=False)
    comp, ws, out = _init(data)
    assert comp.group_column == "" and "--group-column patient_id" in " ".join(out.split())
    comp, ws, out = _init(data, "--force", "--group-column", "patient_id")
    assert (comp.group_column, comp.groups_csv) == ("patient_id", "")
    assert "--group-column patient_id" not in " ".join(out.split())


def test_folds_are_not_kept_when_the_groups_change(state_farm, cli):
    comp, ws, _ = _init(state_farm, "--groups", "driver_imgs_list.csv", "--group-column", "subject")
    assert cli("folds", "--n-folds", "3")[0] == 0
    assert "up to date" in cli("folds")[1]
    listing = pd.read_csv(state_farm / "driver_imgs_list.csv")
    listing.loc[0, "subject"] = "p005"  # one image moves to another driver
    listing.to_csv(state_farm / "driver_imgs_list.csv", index=False)
    code, output = cli("folds")
    assert code == 1 and "differs" in output
    assert cli("folds", "--force")[0] == 0
    assert (_one_fold_per_group(ws, state_farm / "driver_imgs_list.csv") == 1).all()


def test_a_metadata_csv_beside_class_folders_does_not_replace_them(workspace):
    data = workspace / "data"
    rows = []
    for cls in ("ants", "bees"):
        for i in range(4):
            _image(data / "train" / cls / f"{cls}{i}.jpg")
            rows.append((f"{cls}{i}.jpg", "camera_a" if i % 2 else "camera_b"))
    pd.DataFrame(rows, columns=["image", "source"]).to_csv(data / "train_metadata.csv", index=False)
    comp, ws, out = _init(data)
    assert (comp.layout, comp.classes) == ("folders", ["ants", "bees"])
    # the same CSV with a column named as a label that is not the folders: the CSV labels the images
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(data / "train_metadata.csv", index=False)
    comp, ws, out = _init(data, "--force")
    assert (comp.layout, comp.train_subfolders, comp.classes) == ("csv", True, ["camera_a", "camera_b"])


def test_an_image_in_two_groups_is_refused_by_name(state_farm):
    comp, ws, _ = _init(state_farm, "--groups", "driver_imgs_list.csv", "--group-column", "subject")
    listing = pd.read_csv(state_farm / "driver_imgs_list.csv")
    twice = pd.concat([listing, listing.iloc[[4]].assign(subject="p999"), listing.iloc[[5]]])  # 5: same group twice
    twice.to_csv(state_farm / "driver_imgs_list.csv", index=False)
    with pytest.raises(CompError, match=r"image 'img_4.jpg' has rows in different groups \(subject: p004, p999\)"):
        train_items(comp, ws)


def test_csvs_that_cannot_be_read_do_not_stop_a_folder_layout(state_farm):
    (state_farm / "train_notes.csv").write_bytes(b"")  # empty: pandas cannot read it
    (state_farm / "extra.csv").write_bytes(b"\xff\xfe\x00garbage\x00")
    comp, ws, out = _init(state_farm, "--group-column", "subject")
    assert (comp.layout, comp.groups_csv) == ("folders", "data/driver_imgs_list.csv")
    assert "extra.csv" in out and "train_notes.csv" in out  # still listed as not read
