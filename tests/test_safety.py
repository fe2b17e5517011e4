"""Issue 17, "nothing a user made is ever lost": every case reproduced through the real CLI.

Each test here failed on the code before the fix (the issue's numbered points): a replacement is built before it
swaps in, nothing existing is overwritten without --force (and a ledgered file never), the ledger is written under a
lock, and bad values are refused before anything changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_cli_stack import fake_model  # OOF + test logits of a fake model, every fold

from comp import logits
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


# ---------------------------------------------------------------------------------------------------------------
# 2: `train --force` builds the new fold beside the old one and swaps it in only when finished

TRAIN = ["train", "--model", "tiny", "--fold", "0", "--device", "cpu", "--set", "epochs=1"]


def _files(run) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.dir.iterdir())} if run.dir.is_dir() else {}


@pytest.mark.slow
def test_train_force_keeps_the_trained_fold_through_any_failure(make_toy_workspace, workspace):
    ws, _ = make_toy_workspace(workspace, n_per_class=6, n_folds=2, n_test=4)
    first = _comp(workspace, *TRAIN)
    assert first.returncode == 0, first.stderr
    kept = _files(ws.run("tiny", 0))
    assert "oof_logits.npz" in kept
    # An unknown backbone (found only when the model is built), a kill in the first epoch, a full disk.
    bad = _comp(workspace, *TRAIN, "--force", "--set", "name=no_such_backbone")
    assert bad.returncode == 1 and "internal error" not in bad.stderr, bad.stderr
    assert _files(ws.run("tiny", 0)) == kept
    killed = _comp(workspace, *TRAIN, "--set", "lr=0.02", "--force", COMP_FAULT_KILL="best.safetensors")
    assert killed.returncode == -9, killed.stderr
    assert _files(ws.run("tiny", 0)) == kept
    full = subprocess.run(["bash", "-c", 'ulimit -f 1000; exec "$@"', "-", sys.executable, "-m", "comp", *TRAIN,
                           "--set", "lr=0.02", "--force"], cwd=workspace, env=_env(workspace), capture_output=True,
                          text=True, timeout=300)
    assert full.returncode == 1 and "could not write" in full.stderr and "disk is full" in full.stderr, full.stderr
    assert "internal error" not in full.stderr
    assert _files(ws.run("tiny", 0)) == kept
    # The same command again finishes the replacement, which then takes the fold's place.
    again = _comp(workspace, *TRAIN, "--set", "lr=0.02", "--force")
    assert again.returncode == 0, again.stderr
    record = json.loads(ws.run("tiny", 0).provenance.read_text())
    assert record["finished"] and record["recipe"]["lr"] == 0.02
    assert sorted(p.name for p in ws.model_dir("tiny").iterdir()) == ["fold0"]
    # Files keep the user's umask (safetensors wrote best.safetensors 0600).
    assert oct(ws.run("tiny", 0).best.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


@pytest.mark.slow
def test_a_kill_at_either_rename_of_the_swap_leaves_a_whole_fold(make_toy_workspace, workspace):
    ws, _ = make_toy_workspace(workspace, n_per_class=6, n_folds=2, n_test=4)
    assert _comp(workspace, *TRAIN).returncode == 0
    # Each rename in turn: the old run moved aside (".fold0.old"), then the new one moved in ("fold0").
    for rename, lr_before, lr_after in ((".fold0.old", 0.01, 0.02), ("fold0", 0.02, 0.03)):
        old = ws.run("tiny", 0).oof.read_bytes()
        retrain = [*TRAIN, "--set", f"lr={lr_after}"]
        killed = _comp(workspace, *retrain, "--force", COMP_FAULT_KILL=rename)
        assert killed.returncode == -9, killed.stderr
        # Whatever a reader finds is one whole run: the old one (killed before the first rename) or the new one.
        run = ws.run("tiny", 0)
        record = json.loads(run.provenance.read_text())
        assert record["finished"] and logits.load(run.oof).values.shape[1] == 3
        assert record["recipe"]["lr"] == (lr_before if rename == ".fold0.old" else lr_after), rename
        assert (run.oof.read_bytes() == old) == (rename == ".fold0.old")
        status = _comp(workspace, "status")
        assert status.returncode == 0 and "internal error" not in status.stderr, status.stderr
        # The command with the new settings then uses the finished replacement without training again.
        done = _comp(workspace, *retrain)
        assert done.returncode == 0 and "epoch 1/1" not in done.stderr, done.stderr
        assert json.loads(ws.run("tiny", 0).provenance.read_text())["recipe"]["lr"] == lr_after
        assert sorted(p.name for p in ws.model_dir("tiny").iterdir()) == ["fold0"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------------------------
# 6: a stack's CSV and JSON land as one unit


@pytest.mark.slow
@pytest.mark.parametrize("rename", ["blend.json", "blend.csv"])
def test_a_kill_at_either_write_of_a_stack_leaves_a_unit_the_same_command_completes(make_toy_workspace, workspace,
                                                                                   rename):
    ws, comp = make_toy_workspace(workspace)
    fake_model(ws, comp, "a")
    stack = ["stack", "--models", "a", "--method", "mean", "--name", "blend"]
    killed = _comp(workspace, *stack, COMP_FAULT_KILL=rename)
    assert killed.returncode == -9, killed.stderr
    assert not ws.submission_csv("blend").exists()  # never a CSV without the record that describes it
    if ws.submission_json("blend").exists():  # a record without its CSV: every reader calls it incomplete
        bundle = _comp(workspace, "bundle", "blend")
        assert bundle.returncode == 1 and "incomplete" in bundle.stderr, bundle.stderr
        assert "`comp stack --name blend`" in bundle.stderr
    again = _comp(workspace, *stack)  # what the refusal says, without --force
    assert again.returncode == 0, again.stderr
    record = json.loads(ws.submission_json("blend").read_text())
    from comp.core.provenance import sha256_file

    assert record["csv_sha256"] == sha256_file(ws.submission_csv("blend"))


# ---------------------------------------------------------------------------------------------------------------
# 3: `comp demo` runs only in an empty folder or its own workspace, --force included


def test_demo_force_never_touches_a_real_workspace(make_toy_workspace, workspace, cli):
    ws, _ = make_toy_workspace(workspace)
    fake = ws.run("tiny", 0).dir
    fake.mkdir(parents=True)
    (fake / "provenance.json").write_text('{"model": "tiny"}')
    before = {p: p.read_bytes() for p in (ws.comp_toml, ws.folds_csv, fake / "provenance.json")}
    for extra in ([], ["--force"]):
        code, out = cli("demo", *extra)
        assert code == 1 and "another competition" in out and "empty directory" in out, out
    assert {p: p.read_bytes() for p in before} == before
    assert not (workspace / "data" / "demo").exists()


def test_demo_refuses_a_folder_with_files_of_its_own(workspace, cli):
    (workspace / "notes.txt").write_text("mine")
    code, out = cli("demo", "--force")
    assert code == 1 and "is not empty (notes.txt)" in out and "mkdir digits" in out, out
    assert sorted(p.name for p in workspace.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------------------------------------------------------
# 8: verify with no training image; init inside a workspace; init --force keeps the old comp.toml


def test_verify_fails_on_zero_training_images(make_toy_workspace, workspace, cli):
    ws, comp = make_toy_workspace(workspace)
    ws.path(comp.labels_csv).write_text("id,label\n")
    code, out = cli("verify")
    assert code == 1 and "no-training-images" in out and "next: comp train" not in out, out


def test_init_refuses_inside_a_workspace_and_force_keeps_a_backup(kaggle_data, workspace, cli, monkeypatch):
    monkeypatch.delenv("COMP_WORKSPACE")
    code, out = cli("init", str(kaggle_data))
    assert code == 0, out
    sub = workspace / "experiments"
    sub.mkdir()
    monkeypatch.chdir(sub)
    code, out = cli("init", str(kaggle_data))
    assert code == 1 and f"inside the workspace {workspace}" in out, out
    assert not (sub / "comp.toml").exists()
    monkeypatch.chdir(workspace)
    edited = (workspace / "comp.toml").read_text().replace('metric = "accuracy"', 'metric = "f1_macro"')
    assert 'metric = "f1_macro"' in edited
    (workspace / "comp.toml").write_text(edited)
    code, out = cli("init", str(kaggle_data), "--force")
    assert code == 0 and "comp.toml.bak" in out and '-metric = "f1_macro"' in out and '+metric = "accuracy"' in out
    assert (workspace / "comp.toml.bak").read_text() == edited


def test_folds_force_refuses_while_a_fold_trains(make_toy_workspace, workspace, cli):
    import socket

    ws, _ = make_toy_workspace(workspace)
    run = ws.run("tiny", 0)
    run.dir.mkdir(parents=True)
    run.lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}))
    before = ws.folds_csv.read_bytes()
    code, out = cli("folds", "--force", "--seed", "7")
    assert code == 1 and "tiny fold 0 is being trained now" in out and f"process {os.getpid()}" in out, out
    assert ws.folds_csv.read_bytes() == before
    run.lock.unlink()
    code, out = cli("folds", "--force", "--seed", "7")
    assert code == 0 and ws.folds_csv.read_bytes() != before, out


# ---------------------------------------------------------------------------------------------------------------
# 8: one notion of "current" (the recipe resolved as the run resolved it); hints carry the run's --set values


@pytest.mark.slow
def test_train_predict_stack_and_status_agree_on_what_is_current(make_toy_workspace, workspace, cli):
    ws, _ = make_toy_workspace(workspace, n_per_class=6, n_folds=2, n_test=4)
    code, out = cli(*TRAIN)
    assert code == 0 and "next: comp train --model tiny --fold 1 --set epochs=1" in out, out
    assert cli("train", "--model", "tiny", "--fold", "1", "--device", "cpu", "--set", "epochs=1")[0] == 0
    from comp.modeling.recipe import recipe_file

    stock = recipe_file(ws, "tiny").read_text()
    ws.recipe_path("tiny").write_text("# my notes: only a comment differs from the stock recipe\n" + stock)
    checks = {
        "train": ["train", "--model", "tiny", "--fold", "all", "--device", "cpu", "--set", "epochs=1"],
        "predict": ["predict", "--model", "tiny", "--fold", "0", "--device", "cpu"],
        "stack": ["stack", "--models", "tiny", "--method", "mean", "--name", "s1"],
        "status": ["status"],
    }
    for name, args in checks.items():
        code, out = cli(*args)
        assert code == 0 and "stale" not in out, (name, out)
        assert name != "train" or "already trained" in out, out
    ws.recipe_path("tiny").write_text(stock.replace("lr = 1e-2", "lr = 2e-2"))
    for name, args in checks.items():
        code, out = cli(*[a if a != "s1" else "s2" for a in args])
        assert "stale" in out and "internal error" not in out, (name, out)
        if name != "status":
            assert code == 1 and "lr: 0.01 when trained, 0.02 now" in out, (name, out)


def test_status_resume_hint_carries_the_runs_set_values(make_toy_workspace, workspace, cli):
    from comp.core.provenance import competition_hash as comp_hash
    from comp.runs import Run, write_run

    ws, comp = make_toy_workspace(workspace)
    ws.models_dir.mkdir(exist_ok=True)
    ws.recipe_path("mine").write_text('name = "test_resnet"\npretrained = false\nimg_size = 32\n')
    run = ws.run("mine", 0)
    write_run(run, Run(model="mine", fold=0, folds_hash=load_folds(ws).hash, competition_hash=comp_hash(comp),
                       overrides=["epochs=1", "lr=0.05"]))
    code, out = cli("status")
    assert code == 0 and "resume with `comp train --model mine --fold 0 --set epochs=1 --set lr=0.05`" in out, out


@pytest.mark.slow
def test_a_truncated_test_image_can_be_let_through_and_is_predicted(make_toy_workspace, workspace, cli):
    ws, comp = make_toy_workspace(workspace, n_per_class=6, n_folds=2, n_test=4)
    broken = sorted(ws.path(comp.test_dir).iterdir())[0]
    broken.write_bytes(broken.read_bytes()[: len(broken.read_bytes()) * 2 // 3])
    code, out = cli("verify")
    assert code == 1 and "truncated" in out and "--allow-broken-test" in out, out
    code, out = cli(*TRAIN)
    assert code == 1 and "truncated" in out, out
    code, out = cli("verify", "--allow-broken-test")
    assert code == 0 and "predicted from the part that decodes" in out, out
    code, out = cli(*TRAIN)
    assert code == 0 and "1 truncated test image(s) are predicted from the part that decodes" in out, out
    test = logits.load(ws.run("tiny", 0).test)
    assert broken.stem in {str(i) for i in test.ids} and np.isfinite(test.values).all()


def test_group_column_on_a_class_folder_layout_is_a_clear_error(folder_data, workspace, cli):
    code, out = cli("init", str(folder_data))
    assert code == 0, out
    toml = workspace / "comp.toml"
    toml.write_text(toml.read_text().replace('group_column = ""', 'group_column = "driver"'))
    assert 'group_column = "driver"' in toml.read_text()
    code, out = cli("folds", "--force")
    assert code == 1 and "group_column" in out and "internal error" not in out, out


def test_a_stack_csv_replaced_since_is_not_credited_with_the_stacks_models(make_toy_workspace, workspace, cli):
    """`check --fix OUT --force` over a stack's CSV: the ledger must not record the stack's models and CV for it."""
    ws, comp = make_toy_workspace(workspace)
    fake_model(ws, comp, "a")
    assert cli("stack", "--models", "a", "--method", "mean", "--name", "blend")[0] == 0
    mine = workspace / "mine.csv"
    header, *rows = ws.submission_csv("blend").read_text().splitlines()
    first = rows[0].split(",")[1]
    other = next(c for c in comp.classes if c != first)
    mine.write_text("\n".join([header, *(f"{r.split(',')[0]},{other}" for r in rows)]) + "\n")
    code, out = cli("check", str(mine), "--fix", str(ws.submission_csv("blend")), "--force")
    assert code == 0, out
    code, out = cli("submit", str(ws.submission_csv("blend")), "-m", "mine")
    assert code == 0, out
    row = ledger.read(ws).iloc[-1]
    assert (row["models"], row["cv"]) == ("", ""), row.to_dict()
    code, out = cli("bundle", "blend")
    assert code == 1 and "is not the CSV stack 'blend' wrote" in out, out
