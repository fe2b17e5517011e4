"""Stale inputs: after training, rebuilt folds, an edited recipe or another competition's comp.toml make every
later stage (train, predict, stack) refuse with a message naming the cause — never a silent mix."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from comp.core.workspace import STOCK_RECIPES
from comp.folds import make_folds
from comp.setup.verify import verify
from comp.training import train as train_mod

pytestmark = pytest.mark.slow  # trains a model on every fold

STAGES = (
    ("train", ["train", "--model", "tiny", "--fold", "all", "--device", "cpu", "--set", "epochs=1"]),
    ("predict", ["predict", "--model", "tiny", "--fold", "all", "--tta", "none"]),
    ("stack", ["stack", "--models", "tiny", "--method", "mean", "--name", "stale"]),
)


@pytest.fixture
def trained(make_toy_workspace, workspace):
    ws, comp = make_toy_workspace(workspace, n_per_class=6, n_folds=2, n_test=3)
    ws.models_dir.mkdir(exist_ok=True)
    shutil.copy(STOCK_RECIPES / "tiny.toml", ws.recipe_path("tiny"))
    train_mod.train(ws.load(), ws, "tiny", "all", device="cpu", overrides=["epochs=1"])
    return ws, comp


def _all_refuse(cli, ws, *words: str) -> None:
    for stage, args in STAGES:
        code, out = cli(*args)
        assert code == 1, f"{stage} did not refuse: {out}"
        assert "Traceback" not in out
        for word in words:
            assert word in out, f"{stage}: {word!r} not in {out!r}"
    assert not ws.submission_csv("stale").exists()


def test_the_fresh_pipeline_runs(trained, cli):
    ws, _ = trained
    for stage, args in STAGES[1:]:
        code, out = cli(*args)
        assert code == 0, f"{stage}: {out}"


def test_folds_rebuilt_after_training_are_refused_everywhere(trained, cli):
    ws, comp = trained
    make_folds(comp, ws, seed=comp.seed + 1, force=True)
    _all_refuse(cli, ws, "folds")


def test_a_recipe_edited_after_training_is_refused_everywhere(trained, cli):
    ws, _ = trained
    path = ws.recipe_path("tiny")
    path.write_text(path.read_text().replace("lr = 1e-2", "lr = 2e-2"))
    _all_refuse(cli, ws, "recipe")


def test_a_model_trained_for_another_competition_is_refused_everywhere(trained, cli):
    ws, comp = trained
    ws.save(dataclasses.replace(comp, name="another-competition"))
    verify(ws.load(), ws, workers=0)
    _all_refuse(cli, ws, "comp.toml")
