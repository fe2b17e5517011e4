"""`comp train --fold full` (a fit on every labelled row: test logits only) and `comp stack` over partial folds
(a --budget plan's k of K) and full fits, on the tiny model at 32 px; and the stock recipes' side capped at the
images' native side."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from comp import logits
from comp.core.workspace import FULL, Workspace


@pytest.mark.slow
def test_full_fit_end_to_end_and_stack_applies_the_folds_blend_to_it(make_toy_workspace, workspace, cli):
    ws, comp = make_toy_workspace(workspace, n_per_class=8, n_folds=2)
    code, out = cli("train", "--model", "tiny", "--fold", "all", "--device", "cpu", "--set", "epochs=2")
    assert code == 0, out
    # No --set: the full fit takes its folds' settings (epochs=2), so it is the model the folds validated.
    code, out = cli("train", "--model", "tiny", "--fold", "full", "--device", "cpu")
    assert code == 0, out
    assert "full fit" in out and "test logits" in out
    full = ws.run("tiny", FULL)
    assert full.dir.name == "full" and full.test.is_file() and not full.oof.exists()
    record = json.loads(full.provenance.read_text())
    assert record["fold"] == FULL and record["finished"] and record["recipe"]["epochs"] == 2
    metrics = json.loads(full.metrics.read_text())
    assert metrics["n_train"] == 24 and metrics["oof_score"] is None
    test = logits.load(full.test)
    assert len(test.ids) == 6 and test.meta.fold == FULL
    # The same command again skips it (finished), as a fold would be.
    code, out = cli("train", "--model", "tiny", "--fold", "full", "--device", "cpu")
    assert code == 0 and "already finished" in out, out

    code, out = cli("stack", "--models", "tiny", "--method", "mean", "--json")
    assert code == 0, out
    data = json.loads(out)
    sidecar = json.loads(ws.submission_json(data["json"].rsplit("/", 1)[1][:-5]).read_text())
    assert sidecar["test_runs"] == {"tiny": [0, 1, FULL]} and sidecar["oof_rows"] == 24
    assert any("full fit of tiny" in w for w in data["warnings"])
    # --full skip: the folds' test logits alone; --full only: the full fit's alone; with: each run counted once.
    labels, runs = {}, {}
    for mode in ("skip", "only", "with"):
        code, out = cli("stack", "--models", "tiny", "--method", "mean", "--full", mode, "--name", mode)
        assert code == 0, out
        labels[mode] = pd.read_csv(ws.submission_csv(mode)).iloc[:, 1].tolist()
        runs[mode] = json.loads(ws.submission_json(mode).read_text())["test_runs"]["tiny"]
    assert runs == {"skip": [0, 1], "only": [FULL], "with": [0, 1, FULL]}
    by_id = {i: k for k, i in enumerate(test.ids)}
    ids = pd.read_csv(ws.submission_csv("with")).iloc[:, 0].astype(str).tolist()
    mean = (logits.load(ws.run("tiny", 0).test).values + logits.load(ws.run("tiny", 1).test).values
            + test.values) / 3
    assert labels["with"] == [comp.classes[int(mean[by_id[i]].argmax())] for i in ids]
    assert labels["only"] == [comp.classes[int(test.values[by_id[i]].argmax())] for i in ids]

    # status, predict and the next step understand it.
    code, out = cli("status", "--json")
    assert code == 0, out
    assert json.loads(out)["models"][0]["full"]["state"] == "trained"
    code, out = cli("predict", "--model", "tiny", "--fold", "full", "--tta", "hflip")
    assert code == 0 and "full fit: test logits (tta hflip)" in out, out
    assert logits.load(full.test).meta.tta == "hflip"
    code, out = cli("stack", "--models", "tiny", "--method", "mean", "--name", "after")
    assert code == 0, out


@pytest.mark.slow
def test_stack_fits_on_the_folds_a_budget_plan_trained_and_says_so(make_toy_workspace, workspace, cli):
    """A plan of 1 fold + full fit (written as --budget writes it): stack blends on that fold's rows only."""
    ws, comp = make_toy_workspace(workspace, n_per_class=8, n_folds=3)
    for fold in ("0", "full"):
        code, out = cli("train", "--model", "tiny", "--fold", fold, "--device", "cpu", "--set", "epochs=1")
        assert code == 0, out
    ws.plan("tiny").write_text(json.dumps({"budget": "1m", "fold": "all", "runs": [0, FULL], "epochs": 1,
                                           "img_size": 32}))
    code, out = cli("stack", "--method", "best")  # the default model list counts tiny as finished by its plan
    assert code == 0, out
    assert "OOF covers 8 of 24 rows (fold 0 of 3)" in out and "models are averaged (mean)" in out
    sidecar = json.loads(next(ws.submissions_dir.glob("tiny_*.json")).read_text())
    assert sidecar["oof_folds"] == [0] and sidecar["oof_rows"] == 8 and sidecar["method"] == "mean"
    code, out = cli("status")
    assert code == 0 and "plan trains fold 0 of 3" in out and "full fit: trained" in out, out
    # Without the plan, the missing folds are unfinished: refused by name when asked for.
    ws.plan("tiny").unlink()
    code, out = cli("stack", "--models", "tiny")
    assert code == 1 and "'tiny' fold 1" in out and "missing" in out, out


@pytest.mark.slow
def test_the_recipe_side_is_capped_at_the_images_native_side_unless_asked(make_toy_workspace, workspace, cli,
                                                                          monkeypatch):
    ws, comp = make_toy_workspace(workspace, n_per_class=8, n_folds=2)
    ws.recipe_path("big").parent.mkdir(exist_ok=True)
    code, out = cli("train", "--model", "tiny", "--fold", "0", "--device", "cpu", "--set", "epochs=1",
                    "--set", "img_size=64")  # asked: kept, though the images are 32 px
    assert code == 0 and "img_size 32 px" not in out, out
    import tomllib

    assert tomllib.loads(ws.run("tiny", 0).recipe.read_text())["img_size"] == 64
    stock = (Workspace(workspace).root / "models" / "big.toml")
    stock.write_text('name = "test_resnet"\npretrained = false\nepochs = 1\nbatch_size = 8\nnum_workers = 0\n'
                     'channels_last = false\n')  # no img_size: the model's own 224 px, capped at the images' 32
    # A large CPU run (here: any) is timed for a few seconds first, so its length is said before it starts.
    monkeypatch.setattr("comp.training.train.ESTIMATE_MIN_IMAGES", 0)
    code, out = cli("train", "--model", "big", "--fold", "1", "--device", "cpu")
    assert code == 0, out
    assert "img_size 32 px: the images are ~32 px" in out and "1 run (fold 1) x 1 epoch at 32 px, about" in out
    assert "on this CPU (measured" in out and "--budget T" in out
    assert tomllib.loads(ws.run("big", 1).recipe.read_text())["img_size"] == 32


def test_a_side_is_asked_by_set_or_an_edited_recipe_not_by_the_copy_comp_init_makes(workspace):
    from comp.core.workspace import STOCK_RECIPES
    from comp.training.train import _side_asked

    ws = Workspace(workspace)
    ws.models_dir.mkdir()
    assert not _side_asked(ws, "effnet-lite0", [])
    assert _side_asked(ws, "effnet-lite0", ["img_size=224"])
    copy = (STOCK_RECIPES / "effnet-lite0.toml").read_text()
    ws.recipe_path("effnet-lite0").write_text(copy)  # what `comp init` copies: asks for nothing
    assert not _side_asked(ws, "effnet-lite0", [])
    ws.recipe_path("effnet-lite0").write_text(copy.replace("img_size = 224", "img_size = 192"))
    assert _side_asked(ws, "effnet-lite0", [])
    ws.recipe_path("mine").write_text('name = "test_resnet"\nimg_size = 128\n')
    assert _side_asked(ws, "mine", [])
