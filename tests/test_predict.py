"""`comp predict`: logits recomputed from checkpoints equal training's, TTA recorded, auto picks by the metric."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from comp import logits, predict
from comp.core.errors import CompError
from comp.core.workspace import Workspace


def make_trained_workspace(root: Path, make_toy_workspace) -> Workspace:
    """A 3-fold toy competition with the stock `tiny` recipe trained for one epoch on every fold."""
    from comp.training.train import train

    ws, _ = make_toy_workspace(root, n_per_class=6, n_test=4)
    train(ws.load(), ws, "tiny", "all", device="cpu", overrides=["epochs=1"])
    return ws


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_toy_workspace) -> Path:
    return make_trained_workspace(tmp_path_factory.mktemp("trained"), make_toy_workspace).root


@pytest.fixture
def ws(trained, workspace) -> Workspace:
    """A private copy of the trained workspace as this test's workspace (tests rewrite logits)."""
    shutil.copytree(trained, workspace, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".comp"))
    return Workspace(workspace)


@pytest.mark.slow  # the module's fixture trains a model
def test_predict_with_unchanged_tta_reproduces_training_logits(ws, cli):
    before = {k: (logits.load(ws.run("tiny", k).oof), logits.load(ws.run("tiny", k).test)) for k in range(3)}
    code, out = cli("predict", "--model", "tiny", "--tta", "none", "--device", "cpu")
    assert code == 0, out
    for k in range(3):
        oof, test = logits.load(ws.run("tiny", k).oof), logits.load(ws.run("tiny", k).test)
        old_oof, old_test = before[k]
        assert list(oof.ids) == list(old_oof.ids) and list(test.ids) == list(old_test.ids)
        np.testing.assert_allclose(oof.values, old_oof.values, atol=1e-5)
        np.testing.assert_allclose(test.values, old_test.values, atol=1e-5)
        assert oof.meta.tta == "none" and oof.meta.folds_hash == old_oof.meta.folds_hash
        assert oof.meta.recipe_hash == old_oof.meta.recipe_hash


@pytest.mark.slow  # the module's fixture trains a model
def test_predict_one_fold_with_hflip_rewrites_only_that_fold(ws, cli):
    untouched = logits.load(ws.run("tiny", 1).oof)
    before = logits.load(ws.run("tiny", 0).oof)
    code, out = cli("predict", "--model", "tiny", "--fold", "0", "--tta", "hflip", "--device", "cpu")
    assert code == 0, out
    after = logits.load(ws.run("tiny", 0).oof)
    assert after.meta.tta == "hflip" and list(after.ids) == list(before.ids)
    assert np.abs(after.values - before.values).max() > 1e-4  # the flip really changed the logits
    assert logits.load(ws.run("tiny", 0).test).meta.tta == "hflip"
    record = json.loads(ws.run("tiny", 0).metrics.read_text())
    assert record["tta"] == "hflip" and "best_epoch" in record  # training's fields are kept
    np.testing.assert_array_equal(logits.load(ws.run("tiny", 1).oof).values, untouched.values)


@pytest.mark.slow  # the module's fixture trains a model
def test_prob_merge_is_recorded_and_finite(ws, cli):
    code, out = cli("predict", "--model", "tiny", "--fold", "2", "--tta", "vflip", "--merge", "prob", "--device",
                        "cpu")
    assert code == 0, out
    oof = logits.load(ws.run("tiny", 2).oof)
    assert oof.meta.tta == "vflip" and oof.meta.tta_merge == "prob"
    assert np.isfinite(oof.values).all() and np.allclose(np.exp(oof.values).sum(axis=1), 1, atol=1e-5)


@pytest.mark.slow  # the module's fixture trains a model
def test_auto_scores_presets_on_oof_and_records_the_choice(ws, cli):
    code, out = cli("predict", "--model", "tiny", "--fold", "0", "--tta", "auto", "--device", "cpu")
    assert code == 0, out
    record = json.loads(ws.run("tiny", 0).metrics.read_text())
    scores = record["tta_scores"]
    assert set(scores) == set(predict.PRESETS)
    assert record["tta"] == predict.choose_preset("accuracy", scores)
    assert scores[record["tta"]] == max(scores.values()) == record["oof_score"]
    assert logits.load(ws.run("tiny", 0).oof).meta.tta == record["tta"]
    assert logits.load(ws.run("tiny", 0).test).meta.tta_scores == scores
    assert "<- chosen" in out


@pytest.mark.slow  # the module's fixture trains a model
def test_auto_skips_presets_the_model_refuses(ws, cli, monkeypatch):
    real = predict.predict_logits

    def refusing(model, images, config, tta, *args, **kwargs):  # as a fixed-size ViT refuses multiscale
        if tta == "multiscale":
            raise CompError("TTA preset 'multiscale' needs the model to accept 24x24 input, but it refused")
        return real(model, images, config, tta, *args, **kwargs)

    monkeypatch.setattr(predict, "predict_logits", refusing)
    code, out = cli("predict", "--model", "tiny", "--fold", "1", "--tta", "auto", "--device", "cpu")
    assert code == 0, out
    record = json.loads(ws.run("tiny", 1).metrics.read_text())
    assert set(record["tta_scores"]) == set(predict.PRESETS) - {"multiscale"}
    assert "multiscale (skipped)" in out


def test_ties_go_to_the_cheaper_preset():
    assert predict.choose_preset("accuracy", {"d4": 0.9, "hflip": 0.9, "none": 0.8}) == "hflip"
    assert predict.choose_preset("log_loss", {"d4": 0.3, "none": 0.3, "five_crop": 0.5}) == "none"
    assert predict.choose_preset("log_loss", {"d4": 0.2, "none": 0.3}) == "d4"
    assert predict.auto_order()[:3] == ["none", "hflip", "vflip"]


@pytest.mark.slow  # the module's fixture trains a model
def test_refuses_runs_from_other_folds_and_missing_checkpoints(ws, cli):
    provenance = ws.run("tiny", 2).provenance
    record = json.loads(provenance.read_text())
    provenance.write_text(json.dumps({**record, "folds_hash": "0" * 64}))
    code, out = cli("predict", "--model", "tiny", "--tta", "none", "--device", "cpu")
    assert code == 1 and "tiny fold 2 is stale: folds/folds.csv: sha256 000000000000 when trained" in out
    assert "`comp train --model tiny --fold 2 --force`" in out
    ws.run("tiny", 1).best.unlink()
    code, out = cli("predict", "--model", "tiny", "--fold", "1", "--device", "cpu")
    assert code == 1 and "tiny fold 1 has no checkpoint" in out
    code, out = cli("predict", "--model", "nope", "--device", "cpu")
    assert code == 1 and "nope has no trained fold" in out
    code, out = cli("predict", "--model", "tiny", "--tta", "d8", "--device", "cpu")
    assert code == 2 and "'--tta': 'd8' is not one of none, hflip" in out  # a usage error, caught while parsing
