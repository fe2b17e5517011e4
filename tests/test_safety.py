"""Issue 17, "nothing a user made is ever lost": every case reproduced through the real CLI.

Each test here failed on the code before the fix (the issue's numbered points): a replacement is built before it
swaps in, nothing existing is overwritten without --force (and a ledgered file never), the ledger is written under a
lock, and bad values are refused before anything changes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from comp import logits
from comp.core.provenance import competition_hash
from comp.core.workspace import Workspace
from comp.folds import load_folds
from comp.submission import ledger


def _env(ws, **extra: str) -> dict[str, str]:
    env = {**os.environ, "COMP_WORKSPACE": str(ws), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", **extra}
    if "COMP_FAULT_KILL" not in extra:
        env.pop("COMP_FAULT_KILL", None)
    return env


def _comp(ws, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "comp", *args], cwd=ws, env=_env(ws, **env), capture_output=True,
                          text=True, timeout=300)


def fake_model(ws, comp, alias: str, seed: int = 0) -> None:
    """OOF + test logits of every fold of `alias`, as training writes them (no training)."""
    folds = load_folds(ws)
    rng = np.random.default_rng(seed)
    test_ids = pd.read_csv(ws.path(comp.sample_submission), dtype=str)["id"].to_numpy()
    index = {c: i for i, c in enumerate(comp.classes)}
    for k in range(comp.n_folds):
        rows = folds.frame[folds.frame["fold"] == k]
        y = rows["label"].map(index).to_numpy()
        meta = {"folds_hash": folds.hash, "competition_hash": competition_hash(comp), "recipe_hash": f"r-{alias}",
                "model": alias, "fold": k, "tta": "none"}
        oof = (2 * np.eye(len(comp.classes))[y] + rng.normal(size=(len(y), len(comp.classes)))).astype(np.float32)
        logits.save(ws.run(alias, k).oof, logits.Logits(rows["id"].to_numpy(), oof, list(comp.classes), meta))
        test = rng.normal(size=(len(test_ids), len(comp.classes))).astype(np.float32)
        logits.save(ws.run(alias, k).test, logits.Logits(test_ids, test, list(comp.classes), meta))


# ---------------------------------------------------------------------------------------------------------------
# 4, 5, 7: the ledger: locked writers, a folder in its place, --force without a readable ledger


@pytest.mark.slow
def test_8_concurrent_submits_keep_every_ledger_row(kaggle, toy_workspace, workspace):
    kaggle.daily_limit = 100
    first = toy_workspace(workspace)
    files = []
    for i in range(8):
        path = first.with_name(f"s{i}.csv")
        path.write_bytes(first.read_bytes())
        files.append(path)
    procs = [subprocess.Popen([sys.executable, "-m", "comp", "submit", str(p), "-m", f"run {i}", "--no-wait"],
                              cwd=workspace, env=_env(workspace), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i, p in enumerate(files)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    frame = ledger.read(Workspace(workspace))
    assert sorted(frame["file"]) == sorted(f"submissions/s{i}.csv" for i in range(8)), frame
    assert len(set(frame["ref"])) == 8


def test_a_ledger_that_is_a_folder_is_a_clear_error(toy_workspace, workspace, cli, isolated):
    toy_workspace(workspace, platform="none")
    (workspace / "submissions" / "ledger.csv").mkdir()
    for args in (["submissions"], ["submit", "submissions/first.csv", "-m", "x"]):
        code, out = cli(*args)
        assert code == 1 and "ledger.csv is not a file" in out and "internal error" not in out, (args, out)


def test_stack_force_is_refused_when_the_ledger_cannot_be_read(make_toy_workspace, workspace, cli):
    ws, comp = make_toy_workspace(workspace)
    fake_model(ws, comp, "a")
    code, out = cli("stack", "--models", "a", "--method", "mean", "--name", "sent")
    assert code == 0, out
    before = ws.submission_csv("sent").read_bytes()
    ws.ledger.write_bytes(b"\xff\xfe not a csv \x00\n")
    fake_model(ws, comp, "a", seed=1)
    code, out = cli("stack", "--models", "a", "--method", "mean", "--name", "sent", "--force")
    assert code == 1 and "ledger" in out and "--force" in out, out
    assert ws.submission_csv("sent").read_bytes() == before


# ---------------------------------------------------------------------------------------------------------------
# 1: `comp check F --fix OUT` never overwrites without --force, and never a submitted file


def test_check_fix_never_overwrites_without_force_nor_a_submitted_file(toy_workspace, workspace, cli, isolated):
    first = toy_workspace(workspace, platform="none")
    mine = workspace / "mine.csv"
    mine.write_bytes(first.read_bytes())
    code, out = cli("submit", str(first), "-m", "sent")
    assert code == 0, out
    other = workspace / "other.csv"
    other.write_text("mine, by hand\n")
    kept = {p: p.read_bytes() for p in (workspace / "comp.toml", first, first.with_suffix(".json"), other)}
    for target in kept:
        code, out = cli("check", str(mine), "--fix", str(target))
        assert code == 1 and ("exists" in out or "already submitted" in out), (target, out)
    code, out = cli("check", str(mine), "--fix", str(first), "--force")
    assert code == 1 and "already submitted" in out and "even with --force" in out, out
    assert {p: p.read_bytes() for p in kept} == kept
    code, out = cli("check", str(mine), "--fix", str(other), "--force")
    assert code == 0 and other.read_bytes() == mine.read_bytes(), out  # --force replaces what the ledger lacks
    code, out = cli("check", str(mine), "--fix", str(workspace / "new.csv"))
    assert code == 0 and (workspace / "new.csv").read_bytes() == mine.read_bytes(), out


# ---------------------------------------------------------------------------------------------------------------
# 7: every recipe field and option bounded, NaN/inf refused, before anything changes (a data error, exit 1)


@pytest.mark.parametrize(("setting", "message"), [
    ("lr=nan", "lr = nan is outside the allowed range (0, 100]"),
    ("lr=inf", "lr = inf is outside the allowed range (0, 100]"),
    ("drop_rate=5", "drop_rate = 5 is outside the allowed range [0, 1)"),
    ("drop_path=3", "drop_path = 3 is outside the allowed range [0, 1)"),
    ("hflip=1.5", "hflip = 1.5 is outside the allowed range [0, 1]"),
    ("color_jitter=-1", "color_jitter = -1 is outside the allowed range [0, 1]"),
    ("min_lr=-1", "min_lr = -1 is outside the allowed range [0, 100]"),
    ("seed=-1", "seed = -1 is outside the allowed range [0, 4294967295]"),
    ("warmup_lr=-inf", "warmup_lr = -inf is outside the allowed range"),
])
def test_out_of_range_settings_are_data_errors_before_any_work(make_toy_workspace, workspace, cli, setting, message):
    ws, _ = make_toy_workspace(workspace)
    code, out = cli("train", "--model", "tiny", "--fold", "0", "--set", setting)
    assert code == 1 and message in out and "internal error" not in out, out
    assert not ws.model_dir("tiny").exists()


def test_folds_seed_out_of_range_is_a_data_error(make_toy_workspace, workspace, cli):
    ws, _ = make_toy_workspace(workspace)
    before = ws.folds_csv.read_bytes(), ws.comp_toml.read_bytes()
    code, out = cli("folds", "--seed", "-5", "--force")
    assert code == 1 and "--seed -5 is outside the allowed range [0, 4294967295]" in out, out
    assert (ws.folds_csv.read_bytes(), ws.comp_toml.read_bytes()) == before
