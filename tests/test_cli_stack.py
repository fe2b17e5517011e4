"""`comp stack` never overwrites a submission silently: an existing --name needs --force, one the ledger holds is
never replaced, default names never collide. --models is parsed strictly, unfinished models are listed with why
they were left out, and --json reports the result. Models are written as logits files (no training)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from comp import logits
from comp.core.provenance import competition_hash
from comp.folds import load_folds


@pytest.fixture
def toy(make_toy_workspace, workspace):
    return make_toy_workspace(workspace)


def fake_model(ws, comp, alias: str, folds_done: int | None = None, seed: int = 0) -> None:
    """OOF + test logits of `alias` for its first `folds_done` folds (all by default), as training writes them."""
    folds = load_folds(ws)
    rng = np.random.default_rng(seed)
    test_ids = pd.read_csv(ws.path(comp.sample_submission), dtype=str)["id"].to_numpy()
    index = {c: i for i, c in enumerate(comp.classes)}
    for k in range(comp.n_folds if folds_done is None else folds_done):
        rows = folds.frame[folds.frame["fold"] == k]
        y = rows["label"].map(index).to_numpy()
        meta = {"folds_hash": folds.hash, "competition_hash": competition_hash(comp), "recipe_hash": f"r-{alias}",
                "model": alias, "fold": k, "tta": "none"}
        oof = (2 * np.eye(len(comp.classes))[y] + rng.normal(size=(len(y), len(comp.classes)))).astype(np.float32)
        logits.save(ws.run(alias, k).oof, logits.Logits(rows["id"].to_numpy(), oof, list(comp.classes), meta))
        test = rng.normal(size=(len(test_ids), len(comp.classes))).astype(np.float32)
        logits.save(ws.run(alias, k).test, logits.Logits(test_ids, test, list(comp.classes), meta))


def send(ws, name: str) -> None:
    """The ledger row `comp submit` writes for submissions/NAME.csv."""
    from comp.submission import ledger

    ledger.append(ws, {"time": "2026-11-30T12:00:00", "file": f"submissions/{name}.csv", "message": "v1",
                       "platform": "kaggle", "ref": "123", "status": "complete", "public_score": "0.9"})


def test_an_existing_name_needs_force_and_a_sent_one_is_never_replaced(toy, cli):
    ws, comp = toy
    fake_model(ws, comp, "a")
    code, out = cli("stack", "--models", "a", "--method", "mean", "--name", "blend")
    assert code == 0, out
    first = ws.submission_csv("blend").read_bytes()
    code, out = cli("stack", "--models", "a", "--method", "mean", "--name", "blend")
    assert code == 1 and "submissions/blend.csv exists" in out and "--force" in out, out
    code, out = cli("stack", "--models", "a", "--method", "mean", "--name", "blend", "--force")
    assert code == 0, out
    send(ws, "blend")
    before = (ws.submission_csv("blend").read_bytes(), ws.submission_json("blend").read_bytes())
    for extra in ([], ["--force"], ["-f"]):
        code, out = cli("stack", "--models", "a", "--method", "mean", "--name", "blend", *extra)
        assert code == 1 and "was already submitted" in out and "kept as sent" in out, (extra, out)
    assert (ws.submission_csv("blend").read_bytes(), ws.submission_json("blend").read_bytes()) == before
    assert first.splitlines()[0] == before[0].splitlines()[0]


def test_default_names_never_collide(toy, cli):
    ws, comp = toy
    fake_model(ws, comp, "a")
    names = []
    for _ in range(3):
        code, out = cli("stack", "--models", "a", "--method", "mean", "--json")
        assert code == 0, out
        names.append(json.loads(out)["name"])
    assert names == ["a_mean", "a_mean_2", "a_mean_3"]
    assert all(ws.submission_csv(n).exists() and ws.submission_json(n).exists() for n in names)


@pytest.mark.parametrize(("models", "message"), [
    ("", "--models is empty"),
    (" , ", "--models is empty"),
    ("a,,a2", "empty name between commas"),
    ("a,nope", "no trained model 'nope'"),
])
def test_models_is_parsed_strictly(toy, cli, models, message):
    ws, comp = toy
    fake_model(ws, comp, "a")
    code, out = cli("stack", "--models", models)
    assert code == 1 and message in out, out
    assert not ws.submissions_dir.exists() or not list(ws.submissions_dir.glob("*.csv"))


@pytest.mark.parametrize("name", ["../outside", "a/b", "blend.csv", ".hidden", ""])
def test_a_name_must_be_a_plain_file_name(toy, cli, name):
    ws, comp = toy
    fake_model(ws, comp, "a")
    code, out = cli("stack", "--models", "a", "--name", name, "--method", "mean")
    if name == "":  # an empty --name means the default name
        assert code == 0, out
        return
    assert code == 1 and "--name" in out and "letters, digits" in out, out


def test_unfinished_models_are_listed_with_why_and_json_reports_them(toy, cli):
    ws, comp = toy
    fake_model(ws, comp, "a")
    fake_model(ws, comp, "half", folds_done=2, seed=1)
    code, out = cli("stack", "--method", "mean")
    assert code == 0, out
    assert "left out half: fold 2 of 3 not trained (`comp train --model half --fold all`)" in out
    assert "next: comp check submissions/a_mean.csv" in out
    code, out = cli("stack", "--method", "mean", "--json")
    data = json.loads(out)
    assert data["skipped"] == {"half": "fold 2 of 3 not trained (`comp train --model half --fold all`)"}
    assert data["cv"]["model:a"]["oof"] == pytest.approx(data["cv"]["mean"]["oof"])
    assert data["csv"].endswith("a_mean_2.csv")


def test_stack_table_shows_full_names_and_mean_std(toy, cli):
    ws, comp = toy
    long = "convnext_small_in22k_ft"
    fake_model(ws, comp, long)
    fake_model(ws, comp, "tiny2", seed=2)
    code, out = cli("stack", "--method", "mean")
    assert code == 0, out
    assert f"model {long}" in out and "model tiny2" in out and "…" not in out
    assert "mean ± std" in out and "chosen: mean" in out


def test_check_json_and_the_next_lines_of_the_workflow(toy, cli):
    ws, comp = toy
    code, out = cli("verify")
    assert code == 0 and "next: comp train --model tiny --fold 0" in out, out
    code, out = cli("folds")
    assert code == 0 and "next: comp train --model tiny --fold all" in out, out
    fake_model(ws, comp, "a")
    assert cli("stack", "--models", "a", "--method", "mean")[0] == 0
    code, out = cli("check", "submissions/a_mean.csv")
    assert code == 0 and "next: comp submit" in out and "-m MESSAGE" in out, out
    code, out = cli("check", "submissions/a_mean.csv", "--json")
    data = json.loads(out)
    assert code == 0 and data["valid"] is True and data["errors"] == [] and data["file"].endswith("a_mean.csv")
    broken = ws.submissions_dir / "broken.csv"
    broken.write_text("id,label\nt000,cat\n")
    code, out = cli("check", str(broken), "--json")
    data = json.loads(out)
    assert code == 1 and data["valid"] is False and data["errors"], data
