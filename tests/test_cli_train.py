"""`comp train` says where it stands: "fold k/N" and an overall ETA, mean ± std at the end, the next command, and on
Ctrl-C what was kept and the command that resumes. Its lock marks a fold being trained and refuses a second run."""

from __future__ import annotations

import json
import re
import socket

import pytest

from comp.core import atomic
from comp.training.pace import Pace, duration


@pytest.fixture
def toy(make_toy_workspace, workspace):
    return make_toy_workspace(workspace)


def test_pace_labels_folds_and_counts_down_the_epochs_left():
    pace = Pace([0, 1, 2], epochs=4)
    assert pace.label(1) == "fold 1 (2/3)" and Pace([3], 4).label(3) == "fold 3"
    assert pace.eta() == ""  # nothing timed yet
    pace.start(0, done_epochs=1)  # resumed after one epoch: 3 left in fold 0, 4 + 4 in the others
    pace.epoch_done(0, 10.0)
    assert pace.eta() == "ETA 1m40s for 3 folds"  # 10 epochs left x 10 s
    pace.finish(0)  # early stop: the rest of fold 0 is not run
    pace.epoch_done(1, 20.0)
    assert pace.eta() == "ETA 1m45s for 2 folds"  # 7 epochs x 15 s
    assert duration(3725) == "1h02m" and duration(42) == "42s"


def test_a_live_lock_refuses_a_second_training_of_the_same_fold(toy, cli):
    ws, _ = toy
    atomic.write_json(ws.run("tiny", 0).lock, {"pid": 1, "host": socket.gethostname(), "started": "earlier"})
    code, out = cli("train", "--model", "tiny", "--fold", "0", "--set", "epochs=1")
    assert code == 1 and "tiny fold 0 is being trained by process 1" in out and "wait for it" in out, out
    assert not ws.run("tiny", 0).oof.exists()


@pytest.mark.slow  # trains the tiny model on 3 folds
def test_train_all_folds_reports_fold_k_of_n_eta_mean_std_and_next(toy, cli):
    ws, _ = toy
    code, out = cli("train", "--model", "tiny", "--set", "epochs=2")
    assert code == 0, out
    for k in range(3):
        assert f"tiny fold {k} ({k + 1}/3) epoch 1/2" in out
    assert re.search(r"tiny fold 0 \(1/3\) epoch 1/2: .* ETA (\d+h)?(\d+m)?\d+s for 3 folds", out), out
    scores = [json.loads(ws.run("tiny", k).metrics.read_text())["oof_score"] for k in range(3)]
    import numpy as np

    assert f"mean {np.mean(scores):.4f} ± {np.std(scores):.4f} over 3 folds" in out
    assert "next: comp stack" in out
    assert not any(ws.run("tiny", k).lock.exists() for k in range(3))  # released
    code, out = cli("status")
    assert code == 0 and f"{np.mean(scores):.4f} ± {np.std(scores):.4f}" in out


@pytest.mark.slow  # trains one fold before the interruption
def test_ctrl_c_says_what_was_kept_and_how_to_resume(toy, cli, monkeypatch):
    ws, _ = toy
    from comp.training import train as train_module

    real_fold = train_module._Job.fold
    calls = []

    def fold_then_interrupt(self, k, force):
        calls.append(k)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fold(self, k, force)

    monkeypatch.setattr(train_module._Job, "fold", fold_then_interrupt)
    code, out = cli("train", "--model", "tiny", "--set", "epochs=1")
    assert code == 130, out
    assert "interrupted: kept finished fold(s) 0; resume with `comp train --model tiny --fold all --set epochs=1`" \
        in out, out
    assert "Traceback" not in out and not ws.run("tiny", 1).lock.exists()
    monkeypatch.setattr(train_module._Job, "fold", real_fold)
    code, out = cli("train", "--model", "tiny", "--set", "epochs=1")
    assert code == 0 and "tiny fold 0: already trained" in out and "fold 1 (2/3)" in out, out


@pytest.mark.slow  # trains, then leaves a dead lock as a killed process would
def test_a_killed_run_shows_as_interrupted_and_its_stale_lock_is_taken_over(toy, cli):
    ws, _ = toy
    from comp.core.runlock import pid_alive

    pid = 4_000_000
    while pid_alive(pid):
        pid -= 1
    atomic.write_json(ws.run("tiny", 0).lock, {"pid": pid, "host": socket.gethostname(), "started": "x"})
    code, out = cli("status")
    assert "tiny fold 0: interrupted; resume with `comp train --model tiny --fold 0`" in out, out
    code, out = cli("train", "--model", "tiny", "--fold", "0", "--set", "epochs=1")
    assert code == 0, out
    assert not ws.run("tiny", 0).lock.exists() and ws.run("tiny", 0).oof.exists()
