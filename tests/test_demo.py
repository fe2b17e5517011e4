"""`comp demo`: the digits competition is built in Kaggle layout, taken through init, verify and folds, and a
second run reuses everything."""

from __future__ import annotations

import pandas as pd
import pytest

from comp import demo as demo_module
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.demo import DIGIT_NAMES, STEPS, Step, run_demo
from comp.folds import load_folds
from comp.setup.verify import require_verified
from comp.vision.images import open_rgb


@pytest.mark.slow  # verify decodes 1797 images in a process pool
def test_demo_builds_a_competition_and_a_second_run_reuses_it(workspace, monkeypatch, capsys, cli):
    # The preparation steps only: training and stacking are covered by their own tests (and `make demo`).
    monkeypatch.setattr(demo_module, "ALL_STEPS", STEPS)
    code, out = cli("demo")
    assert code == 0, out
    for name in ("build", "init", "verify", "folds"):
        assert f"{name} " in out
    data = workspace / "data" / "demo"
    train = pd.read_csv(data / "train.csv", dtype=str)
    sample = pd.read_csv(data / "sample_submission.csv", dtype=str)
    answers = pd.read_csv(workspace / "data" / "demo_answers.csv", dtype=str)
    assert len(train) + len(sample) == 1797 and 0.18 < len(sample) / 1797 < 0.22
    assert sorted(train["label"].unique()) == sorted(DIGIT_NAMES)
    assert answers["id"].tolist() == sample["id"].tolist()
    assert not set(train["id"]) & set(sample["id"])
    assert not list(data.rglob("*answers*")), "the answers must stay outside the competition folder"
    assert sorted(p.stem for p in (data / "test").iterdir()) == sorted(sample["id"])
    image = open_rgb(data / "train" / f"{train['id'][0]}.png")
    assert image.size == (32, 32) and image.mode == "RGB"

    ws = Workspace(workspace)
    comp = ws.load()
    assert comp.layout == "csv" and comp.num_classes == 10 and ws.path(comp.test_answers).is_file()
    assert require_verified(comp, ws).passed
    folds = load_folds(ws, comp)
    assert len(folds.frame) == len(train)

    before = {p: p.stat().st_mtime_ns for p in (data / "train.csv", ws.comp_toml, ws.folds_csv, ws.verify_cache)}
    extra = Step("extra", lambda ctx: f"saw {ctx.data_dir.name}")
    run_demo(ws, force=False, steps=[*STEPS, extra])
    out = " ".join(capsys.readouterr().out.split())
    assert "build reused" in out and "init reused" in out and "cached" in out and "folds reused" in out
    assert "[5/5] extra saw demo" in out
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_demo_refuses_a_workspace_of_another_competition(make_kaggle_competition, workspace):
    make_kaggle_competition(workspace / "data" / "toy", n_per_class=2, n_test=1)
    from comp.core.config import Competition

    Workspace(workspace).save(Competition(name="toy", data_dir="data/toy", classes=["cat", "dog", "frog"]))
    with pytest.raises(CompError, match="another competition.*empty directory"):
        run_demo(Workspace(workspace))
    assert not (workspace / "data" / "demo").exists()
