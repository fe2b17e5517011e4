"""A competition without test images (e.g. hymenoptera: train/ + val/ only): train and stack still compare models
by honest CV, and nothing pretends to be a submission."""

from __future__ import annotations

import dataclasses

import pytest

from comp.ensemble.stack import finished_models, stack
from comp.setup.verify import verify
from comp.training import train as train_mod

pytestmark = pytest.mark.slow  # trains a model on every fold


def test_cv_only_without_a_test_set(make_toy_workspace, workspace, cli):
    ws, comp = make_toy_workspace(workspace, n_per_class=6, n_folds=2, n_test=2)
    comp = dataclasses.replace(comp, test_dir="", sample_submission="")
    ws.save(comp)
    verify(comp, ws, workers=0)
    train_mod.train(ws.load(), ws, "tiny", "all", device="cpu", overrides=["epochs=1"])
    assert not ws.run("tiny", 0).test.exists()
    assert finished_models(comp, ws) == ["tiny"]

    result = stack(comp, ws, method="mean", name="cv_only")
    assert result.csv is None and "no test images" in result.warnings[0]
    assert 0.0 <= result.table["model:tiny"]["oof"] <= 1.0
    assert not ws.submission_csv("cv_only").exists()

    code, out = cli("stack", "--name", "cv_only")
    assert code == 0 and "CV only" in out and "wrote" not in out
