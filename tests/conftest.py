"""Shared fixtures: every test runs inside its own temp workspace; tiny generated competitions; ../shared access."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COMP_SHARED", REPO.parent / "shared"))


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch) -> Path:
    """Each test gets an empty workspace as its current directory (and $COMP_WORKSPACE)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    monkeypatch.setenv("COMP_WORKSPACE", str(ws))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return ws


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def shared() -> Path:
    """../shared (data, formats); the test is skipped where it is absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip("../shared is not present")
    return SHARED


def class_image(rng: np.random.Generator, cls: int, n_classes: int, size: int) -> np.ndarray:
    """A learnable synthetic image: a class-specific colour and bar position, plus noise."""
    hue = np.array([(cls * 97) % 256, (cls * 53 + 80) % 256, (cls * 151 + 40) % 256], dtype=np.float32)
    img = rng.normal(128, 30, size=(size, size, 3)).astype(np.float32) * 0.5 + hue * 0.5
    bar = int((cls + 0.5) * size / max(n_classes, 1))
    img[:, max(0, bar - 2) : bar + 2, :] = 255 - hue
    return np.clip(img, 0, 255).astype(np.uint8)


def make_kaggle_competition(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "frog"),
    n_per_class: int = 10,
    n_test: int = 9,
    size: int = 32,
    ext: str = ".png",
    ids_with_ext: bool = False,
    kind: str = "class_name",
    seed: int = 0,
) -> Path:
    """A Kaggle-layout competition: train/<id><ext> + train.csv (id,label), test/ + sample_submission.csv,
    and the test answers in `answers.csv` beside (not inside) the data folder. Returns the data folder."""
    rng = np.random.default_rng(seed)
    data = Path(root)
    (data / "train").mkdir(parents=True, exist_ok=True)
    (data / "test").mkdir(parents=True, exist_ok=True)
    rows, answers = [], []
    k = 0
    for c, name in enumerate(classes):
        for _ in range(n_per_class):
            k += 1
            Image.fromarray(class_image(rng, c, len(classes), size)).save(data / "train" / f"{k}{ext}")
            rows.append((f"{k}{ext}" if ids_with_ext else str(k), name))
    pd.DataFrame(rows, columns=["id", "label"]).to_csv(data / "train.csv", index=False)
    test_ids = []
    for t in range(n_test):
        c = t % len(classes)
        tid = f"t{t:03d}"
        Image.fromarray(class_image(rng, c, len(classes), size)).save(data / "test" / f"{tid}{ext}")
        sid = f"{tid}{ext}" if ids_with_ext else tid
        test_ids.append(sid)
        answers.append((sid, classes[c]))
    if kind == "class_probs":
        sample = pd.DataFrame({"id": test_ids, **{c: 1.0 / len(classes) for c in classes}})
    elif kind == "binary":
        sample = pd.DataFrame({"id": test_ids, "label": 0.5})
    else:
        sample = pd.DataFrame({"id": test_ids, "label": classes[0]})
    sample.to_csv(data / "sample_submission.csv", index=False)
    pd.DataFrame(answers, columns=["id", "label"]).to_csv(data.parent / f"{data.name}_answers.csv", index=False)
    return data


def make_folder_competition(
    root: Path,
    classes: tuple[str, ...] = ("0", "1", "2"),
    n_per_class: int = 10,
    n_test: int = 9,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """A class-folder competition: train/<class>/*.jpg, test/*.jpg flat, no sample. Returns the data folder."""
    rng = np.random.default_rng(seed)
    data = Path(root)
    for c, name in enumerate(classes):
        (data / "train" / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(class_image(rng, c, len(classes), size)).save(data / "train" / name / f"{i:04d}.jpg")
    (data / "test").mkdir(parents=True, exist_ok=True)
    for t in range(n_test):
        Image.fromarray(class_image(rng, t % len(classes), len(classes), size)).save(data / "test" / f"img{t:03d}.jpg")
    return data


@pytest.fixture
def kaggle_data(workspace) -> Path:
    return make_kaggle_competition(workspace / "data" / "toy")


@pytest.fixture
def folder_data(workspace) -> Path:
    return make_folder_competition(workspace / "data" / "toy")


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `comp ARGS` through the real entry point (`comp.cli.main`, the no-traceback boundary).

    Returns (exit code, stdout+stderr with whitespace collapsed)."""
    from comp.cli import main

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr("sys.argv", ["comp", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        captured = capsys.readouterr()
        return exit_info.value.code, " ".join((captured.out + captured.err).split())

    return run


TOY_CLASSES = ("cat", "dog", "frog")


def make_toy_workspace(root: Path, n_per_class: int = 8, n_folds: int = 3, n_test: int = 6):
    """A verified workspace with folds on a generated Kaggle-layout competition (as `comp init` would write it),
    so training-side tests need neither `comp init` nor ../shared. Returns (Workspace, Competition)."""
    from comp.core.config import Competition
    from comp.core.workspace import Workspace
    from comp.folds import make_folds
    from comp.setup.verify import verify

    make_kaggle_competition(Path(root) / "data" / "toy", TOY_CLASSES, n_per_class=n_per_class, n_test=n_test)
    comp = Competition(
        name="toy", data_dir="data/toy", layout="csv", train_dirs=["data/toy/train"], labels_csv="data/toy/train.csv",
        image_ext=".png", test_dir="data/toy/test", sample_submission="data/toy/sample_submission.csv",
        classes=list(TOY_CLASSES), submission_labels=list(TOY_CLASSES), n_folds=n_folds,
    )
    ws = Workspace(Path(root))
    ws.save(comp)
    make_folds(comp, ws)
    report, _ = verify(comp, ws, workers=0)
    assert report.passed
    return ws, comp


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where CUDA is available (a lent GPU machine); elsewhere they skip cleanly."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
