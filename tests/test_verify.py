"""`comp verify`: every broken file is named with its kind, odd-but-valid images pass, the result is cached, and
training's gate (`require_verified`) refuses unverified, failed or changed data."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import comp.setup.verify as verify_mod
from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.setup.verify import require_verified, verify


@pytest.fixture
def toy(make_kaggle_competition):
    """The factory toy(root, n_per_class=4, n_test=3) -> (Competition, Workspace)."""

    def make(root, n_per_class: int = 4, n_test: int = 3) -> tuple[Competition, Workspace]:
        classes = ("cat", "dog", "frog")
        make_kaggle_competition(root / "data" / "toy", classes=classes, n_per_class=n_per_class, n_test=n_test)
        comp = Competition(
            name="toy", data_dir="data/toy", layout="csv", train_dirs=["data/toy/train"],
            labels_csv="data/toy/train.csv",
            image_ext=".png", test_dir="data/toy/test", sample_submission="data/toy/sample_submission.csv",
            classes=list(classes), submission_labels=list(classes),
        )
        ws = Workspace(root)
        ws.save(comp)
        return comp, ws

    return make


def add_train(ws: Workspace, rows: dict[str, str]) -> None:
    """Append labelled rows (id -> label) to the toy labels file."""
    labels = pd.read_csv(ws.path("data/toy/train.csv"), dtype=str)
    extra = pd.DataFrame({"id": list(rows), "label": list(rows.values())})
    pd.concat([labels, extra]).to_csv(ws.path("data/toy/train.csv"), index=False)


def odd_but_valid(folder) -> list[str]:
    """Write images in every awkward-but-legal form; returns their ids (file stems)."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    rgb.convert("L").save(folder / "gray.png")
    rgb.convert("P").save(folder / "palette.png")
    rgb.convert("P").save(folder / "palette_alpha.png", transparency=0)
    rgb.convert("RGBA").save(folder / "rgba.png")
    Image.new("CMYK", (30, 20), (10, 200, 30, 5)).save(folder / "cmyk.png", format="JPEG")  # JPEG named .png
    Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16)).save(folder / "deep16.png")
    Image.new("RGB", (4000, 3000), (90, 120, 30)).save(folder / "huge.png", format="JPEG", quality=50)
    assert Image.open(folder / "deep16.png").mode.startswith("I")
    assert Image.open(folder / "cmyk.png").mode == "CMYK"
    return ["gray", "palette", "palette_alpha", "rgba", "cmyk", "deep16", "huge"]


def broken(folder) -> dict[str, str]:
    """Write one file of each broken kind; returns id -> the kind verify must report."""
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (folder / "empty.png").write_bytes(b"")
    img.save(folder / "cut_png.png")
    data = (folder / "cut_png.png").read_bytes()
    (folder / "cut_png.png").write_bytes(data[: len(data) // 2])
    img.save(folder / "cut_jpg.png", format="JPEG")
    data = (folder / "cut_jpg.png").read_bytes()
    (folder / "cut_jpg.png").write_bytes(data[: len(data) // 2])
    (folder / "page.png").write_text("<!DOCTYPE html><html><body>Access denied</body></html>")
    (folder / "notes.png").write_text("this is not a picture\n")
    return {"empty": "zero-byte", "cut_png": "truncated", "cut_jpg": "truncated", "page": "not-an-image",
            "notes": "not-an-image"}


def test_odd_but_valid_images_pass_and_sizes_are_reported(toy, workspace):
    comp, ws = toy(workspace)
    ids = odd_but_valid(ws.path("data/toy/train"))
    add_train(ws, {i: "cat" for i in ids})
    report, cached = verify(comp, ws)
    assert not cached
    assert report.errors == [], report.errors
    assert report.passed and report.n_train == 12 + len(ids) and report.n_test == 3
    assert report.class_counts == {"cat": 4 + len(ids), "dog": 4, "frog": 4}
    assert report.sizes["train"] == {"min_w": 20, "max_w": 4000, "min_h": 20, "max_h": 3000}
    assert report.sizes["test"] == {"min_w": 32, "max_w": 32, "min_h": 32, "max_h": 32}


@pytest.mark.slow  # a decoding process pool
def test_every_broken_kind_is_reported_by_path(toy, workspace, monkeypatch):
    comp, ws = toy(workspace)
    train_dir, test_dir = ws.path("data/toy/train"), ws.path("data/toy/test")
    kinds = broken(train_dir)
    add_train(ws, {i: "dog" for i in kinds} | {"ghost": "cat", "1": "frog"})  # "ghost" has no image; "1" twice
    shutil.copy(train_dir / "1.png", train_dir / "stray.png")  # an image with no label row
    shutil.copy(train_dir / "2.png", test_dir / "twin.png")  # a test image identical to a train image
    shutil.copy(test_dir / "t000.png", test_dir / "extra.png")  # a test image the sample does not list
    sample = pd.read_csv(ws.path(comp.sample_submission), dtype=str)
    sample = pd.concat([sample, pd.DataFrame({"id": ["twin", "lost"], "label": "cat"})])  # "lost" has no image
    sample.to_csv(ws.path(comp.sample_submission), index=False)

    monkeypatch.setattr(verify_mod, "POOL_MIN_IMAGES", 1)  # go through the process pool even for a few files
    report, _ = verify(comp, ws, workers=2)
    errors = {(e.kind, e.path) for e in report.errors}
    for image_id, kind in kinds.items():
        assert (kind, f"data/toy/train/{image_id}.png") in errors
    assert ("missing-image", "data/toy/train/ghost.png") in errors
    assert ("missing-image", "data/toy/test/lost.png") in errors
    assert ("duplicate-id", "data/toy/train.csv") in errors
    assert len(report.errors) == len(kinds) + 3, report.errors
    html = next(e for e in report.errors if e.path.endswith("page.png"))
    assert "HTML" in html.detail
    warnings = {(w.kind, w.path) for w in report.warnings}
    assert ("no-label", "data/toy/train/stray.png") in warnings
    assert ("not-in-sample", "data/toy/test/extra.png") in warnings
    assert ("train-test-duplicate", "data/toy/test/twin.png") in warnings
    assert not report.passed


def test_cli_exit_codes_and_the_cache(toy, workspace, monkeypatch, cli):
    comp, ws = toy(workspace)
    code, out = cli("verify")
    assert code == 0 and "12 train, 3 test" in out and "passed" in out and "decoded" in out
    assert require_verified(comp, ws).passed

    def no_decoding(*args, **kwargs):
        raise AssertionError("a second run on unchanged data must not decode anything")

    with monkeypatch.context() as patch:
        patch.setattr(verify_mod, "decode_all", no_decoding)
        code, out = cli("verify")
    assert code == 0 and "cached" in out

    (ws.path("data/toy/train") / "5.png").write_bytes(b"")
    code, out = cli("verify")
    assert code == 1 and "zero-byte" in out and "data/toy/train/5.png" in out and "Traceback" not in out
    with pytest.raises(CompError, match="found 1 error.*zero-byte.*comp verify"):
        require_verified(comp, ws)


def test_require_verified_refuses_unverified_and_changed_data(toy, workspace):
    comp, ws = toy(workspace)
    with pytest.raises(CompError, match="not been verified.*comp verify"):
        require_verified(comp, ws)
    verify(comp, ws)
    require_verified(comp, ws)
    # Same size, new mtime: the stat-only fingerprint still notices.
    target = ws.path("data/toy/train/3.png")
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(CompError, match="changed since the last `comp verify`"):
        require_verified(comp, ws)
    verify(comp, ws)
    require_verified(comp, ws)
    ws.save(Competition(**{**comp.__dict__, "n_folds": 3}))  # comp.toml is part of the fingerprint too
    with pytest.raises(CompError, match="changed"):
        require_verified(ws.load(), ws)


def test_help_of_my_commands():
    from typer.testing import CliRunner

    from comp.cli import app

    for name in ("verify", "folds", "demo"):
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0 and f"comp {name}" in result.output, result.output


def test_class_folders_stray_files_and_placeholder_gifs(make_folder_competition, workspace):
    make_folder_competition(workspace / "data" / "toy", n_per_class=3, n_test=0)
    Image.new("RGB", (8, 8)).save(workspace / "data" / "toy" / "train" / "loose.jpg")  # in no class folder
    Image.new("P", (8, 8)).save(workspace / "data" / "toy" / "train" / "1" / "notfound.gif")
    comp = Competition(name="toy", layout="folders", data_dir="data/toy", train_dirs=["data/toy/train"],
                       classes=["0", "1", "2"], submission_labels=["0", "1", "2"])
    ws = Workspace(workspace)
    ws.save(comp)
    report, _ = verify(comp, ws)
    assert report.passed and report.n_train == 9 and report.n_test == 0
    assert {(w.kind, w.path) for w in report.warnings} == {
        ("no-label", "data/toy/train/loose.jpg"), ("ignored", "data/toy/train/1/notfound.gif"),
        *(("too-few-images", c) for c in comp.classes),  # 3 images each, 5 folds in comp.toml
    }


@pytest.mark.slow  # 397 images: a decoding process pool
def test_real_data_hymenoptera(shared, workspace):
    """Full-size JPEGs of varied size and the placeholder GIF of the real tutorial set."""
    root = shared / "data" / "hymenoptera"
    comp = Competition(name="hymenoptera", layout="folders", data_dir=str(root),
                       train_dirs=[str(root / "train"), str(root / "val")], classes=["ants", "bees"],
                       submission_labels=["ants", "bees"])
    ws = Workspace(workspace)
    ws.save(comp)
    report, _ = verify(comp, ws)
    assert report.passed, report.errors
    assert report.n_train == 397 and report.class_counts == {"ants": 193, "bees": 204}
    assert [w.kind for w in report.warnings] == ["ignored"]
    assert report.warnings[0].path.endswith("imageNotFound.gif")
    assert report.sizes["train"]["max_w"] > 1000
