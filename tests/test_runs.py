"""comp.runs: the typed run record and logits meta (same file format as before), and the one staleness check's
message: every differing field with both values, and the command that fixes it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from comp import logits
from comp.core.config import parse_overrides
from comp.core.errors import StaleError
from comp.core.workspace import Workspace
from comp.runs import LogitsMeta, Run, differences, read_run, require_current, set_args, write_run

RECIPE = {"name": "test_resnet", "epochs": 10, "lr": 0.01, "tta": "none", "pretrained": False}
TRAINED = Run(model="tiny", fold=0, recipe_hash="r1", recipe_file_hash="f1", folds_hash="a" * 64,
              competition_hash="c1", recipe=RECIPE)


def test_the_message_names_each_changed_setting_with_both_values_and_the_fix():
    now = Run(model="tiny", fold=0, recipe_hash="r2", recipe_file_hash="f1", folds_hash="a" * 64,
              competition_hash="c1", recipe={**RECIPE, "epochs": 1, "tta": "d4"})
    with pytest.raises(StaleError) as err:
        require_current(TRAINED, now, "tiny fold 0", "Re-run with --force")
    assert str(err.value) == ("tiny fold 0 is stale: epochs: 10 when trained, 1 now; tta: 'none' when trained, "
                              "'d4' now. Re-run with --force")


def test_files_are_named_and_a_fix_can_depend_on_what_changed():
    now = Run(model="tiny", fold=0, recipe_hash="r1", recipe_file_hash=None, folds_hash="b" * 64,
              competition_hash="c2")
    seen = []

    def fix(changed: list[str]) -> str:
        seen.append(changed)
        return "Retrain it"

    with pytest.raises(StaleError) as err:
        require_current(TRAINED, now, "tiny fold 0", fix)
    message = str(err.value)
    assert f"folds/folds.csv: sha256 {'a' * 12} when trained, {'b' * 12} now" in message
    assert "comp.toml (the competition's data and classes): hash c1 when trained, c2 now" in message
    assert "recipe file of 'tiny': sha256 f1 when trained, missing now" in message
    assert seen == [["folds_hash", "competition_hash", "recipe_file_hash"]] and message.endswith("Retrain it")


def test_unrecorded_values_are_not_compared_except_the_required_ones():
    old = Run(model="tiny", fold=0, folds_hash=None, competition_hash=None, recipe_hash=None)
    now = Run(model="tiny", fold=0, folds_hash="f", competition_hash="c", recipe_hash="r")
    assert [name for name, *_ in differences(old, now)] == ["folds_hash"]  # unknown folds could leak
    assert [name for name, *_ in differences(old, now, required=("folds_hash", "recipe_hash"))] == [
        "recipe_hash", "folds_hash"]
    require_current(old, now, "x", "y", fields=("competition_hash", "recipe_hash"))  # nothing recorded: passes
    require_current(TRAINED, TRAINED, "x", "y")  # the same inputs: passes


def test_set_args_reproduce_the_recorded_recipe_from_the_file():
    file_recipe = {**RECIPE, "epochs": 5}
    args = set_args(file_recipe, {**RECIPE, "tta": "hflip"})
    assert args == ["--set epochs=10", "--set 'tta=\"hflip\"'"]
    pairs = [a.split(" ", 1)[1].strip("'") for a in args]
    assert {**file_recipe, **parse_overrides(pairs)} == {**RECIPE, "tta": "hflip"}


def test_provenance_keeps_its_keys_and_reads_older_or_newer_files(workspace):
    paths = Workspace(workspace).run("tiny", 0)
    write_run(paths, TRAINED)
    data = json.loads(paths.provenance.read_text())
    # The keys provenance.json always had, with the same meaning (None values are left out, as before).
    for key in ("recipe_hash", "folds_hash", "competition_hash", "recipe_file_hash", "code_version", "model", "fold",
                "name", "finished", "time"):
        assert key in data, key
    assert read_run(paths) == Run(**{**data})
    paths.provenance.write_text(json.dumps({"folds_hash": "f", "finished": True, "from_a_newer_comp": 1}))
    assert read_run(paths) == Run(folds_hash="f", finished=True)


def test_logits_meta_round_trips_and_plain_dicts_are_read_as_one(workspace):
    meta = TRAINED.meta("hflip", tta_merge="prob")
    assert meta == LogitsMeta(model="tiny", fold=0, recipe_hash="r1", recipe_file_hash="f1", folds_hash="a" * 64,
                              competition_hash="c1", tta="hflip", tta_merge="prob")
    path = workspace / "l.npz"
    logits.save(path, logits.Logits(["a"], np.zeros((1, 2)), ["x", "y"], meta))
    assert logits.load(path).meta == meta
    assert "tta_scores" not in meta.to_dict()  # unset keys are not written, as before
    assert logits.Logits(["a"], np.zeros((1, 2)), ["x", "y"], {"tta": "d4", "fold": 2}).meta.run().fold == 2


def test_training_on_other_pseudo_labels_is_named():
    now = Run(**{**TRAINED.to_dict(), "pseudo_labels": "blend (sha256 0123456789ab, threshold 0.9)"})
    with pytest.raises(StaleError, match=r"pseudo-labels: none when trained, blend \(sha256 0123456789ab, threshold"):
        require_current(TRAINED, now, "tiny fold 0", "Re-run with --force")
