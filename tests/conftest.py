"""Shared fixtures: every test runs inside its own temp workspace; tiny generated competitions; ../shared access.

Helpers are fixtures, never imported (`from conftest import` would load this file a second time under another name):
`make_kaggle_competition`, `make_folder_competition` and `make_toy_workspace` return their factory functions.
The fake Kaggle/CodaBench servers and their fixtures (`isolated`, `toy_workspace`) live in fake_servers.py, loaded
as a plugin below.
"""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COMP_SHARED", REPO.parent / "shared"))

pytest_plugins = ["fake_servers", "pytester"]  # pytester: tests/test_hygiene.py runs pytest on planted tests


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch) -> Path:
    """Each test gets an empty workspace as its current directory (and $COMP_WORKSPACE)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    monkeypatch.setenv("COMP_WORKSPACE", str(ws))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return ws


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """comp.core.atomic fsyncs every artifact; that matters only when the machine loses power, which no test causes.
    In-process tests skip it, so they do not queue behind other jobs' disk writes (measured: `make test-fast` 142 s ->
    109 s wall with training jobs writing on the same disk). Tests that run `comp` as a subprocess still fsync."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


_OPTIMIZER_STEPS = [0]  # optimizer steps taken in this session (a global torch hook counts them)


@pytest.fixture(autouse=True, scope="session")
def _count_optimizer_steps():
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    def count(optimizer, args, kwargs):
        _OPTIMIZER_STEPS[0] += 1

    handle = register_optimizer_step_pre_hook(count)
    yield
    handle.remove()


@pytest.fixture(autouse=True)
def _only_slow_tests_train_or_start_processes(request, monkeypatch, _count_optimizer_steps):
    """`make test-fast` (-m "not slow") stays a quick loop only if no test in it trains a model or starts a process:
    a test that steps an optimizer or starts a subprocess (`python -m comp`, torchrun), a process pool or DataLoader
    workers, and is not marked `slow`, fails here, naming what it did. `git` (asked for the code version by
    provenance) is cheap and allowed."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    steps_before = _OPTIMIZER_STEPS[0]
    started: list[str] = []
    popen_init = subprocess.Popen.__init__
    process_start = multiprocessing.process.BaseProcess.start

    def popen(self, args, *more, **kwargs):
        argv = [args] if isinstance(args, str | bytes | os.PathLike) else list(args)
        if Path(os.fsdecode(argv[0])).name != "git":
            started.append("subprocess " + " ".join(os.fsdecode(a) for a in argv)[:120])
        popen_init(self, args, *more, **kwargs)

    def start(self):
        started.append(f"a {type(self).__name__} (process pool or DataLoader worker)")
        return process_start(self)

    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start)
    yield
    steps = _OPTIMIZER_STEPS[0] - steps_before
    if steps:
        started.append(f"{steps} optimizer step(s) (training)")
    if started:
        pytest.fail(f"{request.node.nodeid} started {len(started)} process(es) or training, e.g. {started[0]}; mark "
                    "it @pytest.mark.slow (make test-fast must stay quick)", pytrace=False)


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


def _class_image(rng: np.random.Generator, cls: int, n_classes: int, size: int) -> np.ndarray:
    """A learnable synthetic image: a class-specific colour and bar position, plus noise."""
    hue = np.array([(cls * 97) % 256, (cls * 53 + 80) % 256, (cls * 151 + 40) % 256], dtype=np.float32)
    img = rng.normal(128, 30, size=(size, size, 3)).astype(np.float32) * 0.5 + hue * 0.5
    bar = int((cls + 0.5) * size / max(n_classes, 1))
    img[:, max(0, bar - 2) : bar + 2, :] = 255 - hue
    return np.clip(img, 0, 255).astype(np.uint8)


def _kaggle_competition(
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
            Image.fromarray(_class_image(rng, c, len(classes), size)).save(data / "train" / f"{k}{ext}")
            rows.append((f"{k}{ext}" if ids_with_ext else str(k), name))
    pd.DataFrame(rows, columns=["id", "label"]).to_csv(data / "train.csv", index=False)
    test_ids = []
    for t in range(n_test):
        c = t % len(classes)
        tid = f"t{t:03d}"
        Image.fromarray(_class_image(rng, c, len(classes), size)).save(data / "test" / f"{tid}{ext}")
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


def _folder_competition(
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
            Image.fromarray(_class_image(rng, c, len(classes), size)).save(data / "train" / name / f"{i:04d}.jpg")
    (data / "test").mkdir(parents=True, exist_ok=True)
    for t in range(n_test):
        Image.fromarray(_class_image(rng, t % len(classes), len(classes), size)).save(data / "test" / f"img{t:03d}.jpg")
    return data


@pytest.fixture(scope="session")
def make_kaggle_competition():
    """The factory `make_kaggle_competition(root, classes=..., n_per_class=10, n_test=9, size=32, ext=".png",
    ids_with_ext=False, kind="class_name", seed=0) -> data folder` (Kaggle layout, answers beside it)."""
    return _kaggle_competition


@pytest.fixture(scope="session")
def make_folder_competition():
    """The factory `make_folder_competition(root, classes=("0", "1", "2"), n_per_class=10, n_test=9, size=32,
    seed=0) -> data folder` (class folders, flat test/, no sample)."""
    return _folder_competition


@pytest.fixture
def kaggle_data(workspace) -> Path:
    return _kaggle_competition(workspace / "data" / "toy")


@pytest.fixture
def folder_data(workspace) -> Path:
    return _folder_competition(workspace / "data" / "toy")


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


def _toy_workspace(root: Path, n_per_class: int = 8, n_folds: int = 3, n_test: int = 6):
    """A verified workspace with folds on a generated Kaggle-layout competition (as `comp init` would write it),
    so training-side tests need neither `comp init` nor ../shared. Returns (Workspace, Competition)."""
    from comp.core.config import Competition
    from comp.core.workspace import Workspace
    from comp.folds import make_folds
    from comp.setup.verify import verify

    _kaggle_competition(Path(root) / "data" / "toy", TOY_CLASSES, n_per_class=n_per_class, n_test=n_test)
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


@pytest.fixture(scope="session")
def make_toy_workspace():
    """The factory `make_toy_workspace(root, n_per_class=8, n_folds=3, n_test=6) -> (Workspace, Competition)`:
    a verified workspace with folds on a generated competition of classes cat, dog, frog (session-scoped, so
    module-scoped fixtures can use it too)."""
    return _toy_workspace


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where CUDA is available (a lent GPU machine); elsewhere they skip cleanly."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
