"""What was accepted silently is refused (or honoured) with a fix: img_size out of range, an empty recipe, a timm
recipe's `weights` file (used, or refused when it cannot be), missing pretrained weights offline (in seconds),
classes with fewer images than folds (fix worded for the layout), and training on data never verified."""

from __future__ import annotations

import time

import pytest
import torch

from comp.core.workspace import Workspace


@pytest.fixture
def toy(make_toy_workspace, workspace):
    ws, comp = make_toy_workspace(workspace)
    ws.models_dir.mkdir(exist_ok=True)
    return ws, comp


@pytest.mark.parametrize(("setting", "message"), [
    ("img_size=7", "img_size = 7 px is outside 16..2048"),
    ("img_size=4096", "img_size = 4096 px is outside 16..2048"),
])
def test_img_size_out_of_range_is_refused_before_training(toy, cli, setting, message):
    code, out = cli("train", "--model", "tiny", "--fold", "0", "--set", setting)
    assert code == 1 and message in out and "0 for the model's own pretrained size" in out, out
    ws, _ = toy
    assert not ws.model_dir("tiny").exists()


@pytest.mark.parametrize(("text", "message"), [("", "is empty"), ("# nothing yet\n", "is empty"),
                                               ("epochs = 2\n", "has no `name` (it sets epochs)")])
def test_a_recipe_without_a_backbone_is_refused(toy, cli, text, message):
    ws, _ = toy
    ws.recipe_path("mine").write_text(text)
    started = time.perf_counter()
    code, out = cli("train", "--model", "mine", "--fold", "0")
    assert code == 1 and message in out and 'name = "resnet50.a1_in1k"' in out, out
    assert time.perf_counter() - started < 20  # no hub download retries


def test_a_timm_recipe_weights_file_is_used(toy):
    """`weights` on a timm recipe loads that file (it used to be ignored: training started from scratch)."""
    import timm
    from safetensors.torch import save_file

    from comp.modeling.models import build_model
    from comp.modeling.recipe import load_recipe

    ws, _ = toy
    source = timm.create_model("test_resnet", pretrained=False, num_classes=1000)
    with torch.no_grad():
        for p in source.parameters():
            p.fill_(0.123)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(ws.root / "my_weights.safetensors"))
    ws.recipe_path("mine").write_text('source = "timm"\nname = "test_resnet"\nweights = "my_weights.safetensors"\n'
                                      "zero_head = false\nimg_size = 32\n")
    model = build_model(load_recipe(ws, "mine"), 3, ws=ws)
    first = next(model.parameters())
    assert torch.allclose(first, torch.full_like(first, 0.123)), "the weights file was not loaded"
    scratch = build_model(load_recipe(ws, "mine", ["pretrained=false", "weights="]), 3, ws=ws)
    assert not torch.allclose(next(scratch.parameters()), first)


def test_a_timm_recipe_weights_file_that_cannot_be_used_is_refused(toy, cli):
    ws, _ = toy
    ws.recipe_path("mine").write_text('name = "test_resnet"\nweights = "nowhere.safetensors"\nimg_size = 32\n')
    code, out = cli("train", "--model", "mine", "--fold", "0")
    assert code == 1 and "nowhere.safetensors not found" in out and "a timm pretrained tag goes in `name`" in out
    code, out = cli("train", "--model", "mine", "--fold", "0", "--set", "pretrained=false")
    assert code == 1 and "with pretrained = false would be ignored" in out, out


def test_offline_without_cached_weights_fails_in_seconds_naming_them(toy, cli, monkeypatch, tmp_path):
    import comp.modeling.models as models

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    ws, _ = toy
    ws.recipe_path("r18").write_text('name = "resnet18.a1_in1k"\nimg_size = 32\n')
    started = time.perf_counter()
    code, out = cli("train", "--model", "r18", "--fold", "0")
    assert code == 1, out
    assert "resnet18.a1_in1k" in out and "timm/resnet18.a1_in1k" in out and "cannot be reached" in out
    assert 'weights = "path/to/model.safetensors"' in out and "pretrained=false" in out
    assert time.perf_counter() - started < 30


def test_verify_reports_a_single_image_class_with_a_folder_fix(make_folder_competition, workspace, cli):
    data = make_folder_competition(workspace / "data" / "toy")
    for extra in sorted((data / "train" / "2").iterdir())[1:]:
        extra.unlink()
    assert cli("init", str(data))[0] == 0
    code, out = cli("verify")
    assert code == 1, out
    assert "single-image-class" in out and "2: 1 image: a class needs at least 2" in out
    assert "add images to" in out and "train/2/" in out and "labels" not in out.split("single-image-class")[1][:200]


def test_verify_reports_a_single_image_class_with_a_labels_csv_fix(make_kaggle_competition, workspace, cli):
    import pandas as pd

    data = make_kaggle_competition(workspace / "data" / "toy")
    labels = pd.read_csv(data / "train.csv", dtype=str)
    labels.drop(labels.index[labels["label"] == "frog"][1:]).to_csv(data / "train.csv", index=False)
    assert cli("init", str(data))[0] == 0
    code, out = cli("verify")
    assert code == 1, out
    assert "frog: 1 image: a class needs at least 2" in out and "train.csv" in out and "relabel or drop" in out


def test_verify_warns_when_a_class_has_fewer_images_than_folds(make_kaggle_competition, workspace, cli):
    data = make_kaggle_competition(workspace / "data" / "toy", n_per_class=4)
    assert cli("init", str(data))[0] == 0  # 5 folds by default
    code, out = cli("verify")
    assert code == 0, out
    assert "too-few-images (3)" in out and "cat: 4 images, fewer than the 5 folds" in out
    assert "`comp folds --n-folds 4 --force`" in out


def test_train_verifies_unverified_data_itself_and_refuses_broken_data(toy, cli):
    ws, comp = toy
    ws.verify_cache.unlink()
    broken = sorted(ws.path(comp.train_dirs[0]).glob("*.png"))[0]
    broken.write_bytes(b"")
    code, out = cli("train", "--model", "tiny", "--fold", "0")
    assert code == 1, out
    assert "verifying the data first (not verified yet)" in out
    assert "verification found 1 error(s)" in out and "zero-byte" in out and "`comp verify` lists them all" in out
    assert ws.verify_cache.exists()  # the result is cached like `comp verify`'s
    assert not ws.model_dir("tiny").exists()


def test_workspace_equality_ignores_how_it_was_found(tmp_path):
    assert Workspace(tmp_path) == Workspace(tmp_path, "found") == Workspace(tmp_path, "COMP_WORKSPACE")


def test_verify_prints_file_names_as_data_not_markup(make_folder_competition, workspace, cli):
    data = make_folder_competition(workspace / "data" / "toy")
    (data / "train" / "0" / "[red]draft.jpg").write_bytes(b"")
    assert cli("init", str(data))[0] == 0
    code, out = cli("verify")
    assert code == 1 and "data/toy/train/0/[red]draft.jpg: the file is empty" in out, out
