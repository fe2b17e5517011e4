"""`comp train --budget`: the plan (epochs, then img_size) from measured rates, durations, and a tiny real run that
ends within its budget of a few seconds and records the plan in every fold's resolved recipe."""

from __future__ import annotations

import time

import pytest

from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.modeling.recipe import load_recipe, parse_duration
from comp.training.budget import MAX_EPOCH_FACTOR, FoldShape, Rates, choose, predicted_seconds


def _recipe(*overrides: str):
    return load_recipe(Workspace.here(), "tiny", list(overrides))


@pytest.mark.parametrize(("text", "seconds"), [("2h", 7200), ("45m", 2700), ("1h30m", 5400), ("90s", 90),
                                               ("20", 20), ("0.5h", 1800), ("2min", 120)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "2 hours", "0s", "-5m"])
def test_bad_durations_are_clear_errors(text):
    with pytest.raises(CompError, match="duration"):
        parse_duration(text)
    if text:
        with pytest.raises(CompError, match="budget"):
            _recipe(f"budget='{text}'")


FOLDS = [FoldShape(n_train=800, n_val=200, n_test=300, views=2)] * 5
RATES = Rates(img_size=128, train_s=0.01, eval_s=0.002, fold_s=3.0, epoch_s=1.0)


def test_plan_fills_the_budget_and_its_prediction_stays_inside_it():
    recipe = _recipe("epochs=10", "img_size=128")
    plan = choose(600, 30, recipe, RATES, FOLDS)
    # One epoch of five folds: 5 x (1 + 8 + 0.4) = 47 s; fixed: 5 x (3 + 500 x 2 x 0.002) = 25 s; 570 x 0.95 - 30...
    per_epoch = predicted_seconds(1, RATES, FOLDS) - predicted_seconds(0, RATES, FOLDS)
    assert per_epoch == pytest.approx(47.0)
    assert plan.epochs == int((600 * 0.95 - 30 - 25) // 47) == 10
    assert plan.img_size == 128 and not plan.capped
    assert plan.planned_s <= 600 and plan.planned_s == pytest.approx(30 + 25 + 10 * 47)
    assert plan.overrides == ["epochs=10", "img_size=128"]


def test_plan_caps_epochs_and_refuses_a_budget_too_short_for_one_epoch():
    recipe = _recipe("epochs=2", "img_size=128")
    plan = choose(36000, 0, recipe, RATES, FOLDS)
    assert plan.epochs == MAX_EPOCH_FACTOR * 2 and plan.capped
    with pytest.raises(CompError, match="too short.*one epoch of 5 fold"):
        choose(60, 10, recipe, RATES, FOLDS)


def test_plan_shrinks_the_image_before_cutting_the_recipes_epochs_when_allowed():
    fixed = _recipe("epochs=10", "img_size=128")
    shrink = _recipe("epochs=10", "img_size=128", "min_img_size=64")
    budget = 300
    kept = choose(budget, 0, fixed, RATES, FOLDS)
    assert kept.img_size == 128 and kept.epochs < 10
    smaller = choose(budget, 0, shrink, RATES, FOLDS, resize_s=5)
    assert 64 <= smaller.img_size < 128 and smaller.img_size % 32 == 0 and smaller.epochs >= 10
    # The largest side that fits the recipe's epochs: the next larger side does not.
    larger = RATES.scaled(smaller.img_size + 32)
    fixed_s = predicted_seconds(0, larger, FOLDS)
    assert fixed_s + 10 * (predicted_seconds(1, larger, FOLDS) - fixed_s) > budget * 0.95 - 5
    assert smaller.planned_s <= budget


@pytest.mark.slow
def test_tiny_run_keeps_to_a_budget_of_seconds(make_toy_workspace, workspace, cli):
    make_toy_workspace(workspace, n_per_class=8, n_folds=2)
    budget = 40
    started = time.time()
    code, out = cli("train", "--model", "tiny", "--fold", "all", "--device", "cpu", "--budget", f"{budget}s",
                    "--set", "num_workers=0")
    took = time.time() - started
    assert code == 0, out
    assert "budget 40s: measured" in out and "plan 2 folds x" in out and "took" in out
    # Within the budget, plus 10% (and a little for starting the command inside the test process).
    assert took <= budget * 1.1 + 2, out
    ws = Workspace(workspace)
    epochs = {load_recipe(ws, "tiny").epochs}
    import tomllib

    recorded = [tomllib.loads(ws.run("tiny", k).recipe.read_text()) for k in (0, 1)]
    assert {r["budget"] for r in recorded} == {"40s"}
    assert len({r["epochs"] for r in recorded}) == 1 and recorded[0]["epochs"] >= 1
    assert epochs == {5}  # the recipe file is untouched; the plan lives in the runs' resolved recipes
    # The same command again reuses the plan its folds recorded: nothing is retrained, nothing is refused.
    code, out = cli("train", "--model", "tiny", "--fold", "all", "--device", "cpu", "--budget", f"{budget}s",
                    "--set", "num_workers=0")
    assert code == 0, out
    assert "resuming with the plan" in out and "already finished" in out
