"""Fault injection: SIGKILL during a checkpoint or logits write, then the same command again.

`COMP_FAULT_KILL=<file name>` makes the training process kill itself with SIGKILL inside `comp.core.atomic` at the worst
moment: the temp file is complete and fsync'ed, the rename onto the real name has not happened. Whatever point it
dies at, no truncated artifact may sit where a later stage reads, and re-running the same command must end with
the same artifacts as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from comp import logits

CMD = [sys.executable, "-m", "comp", "train", "--model", "tiny", "--fold", "0", "--device", "cpu",
       "--set", "epochs=2"]


def _run(ws, kill: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMP_WORKSPACE": str(ws), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    env.pop("COMP_FAULT_KILL", None)
    if kill:
        env["COMP_FAULT_KILL"] = kill
    return subprocess.run(CMD + list(extra), cwd=ws, env=env, capture_output=True, text=True, timeout=300)


def _readable_or_absent(run) -> None:
    """Every artifact a later stage reads is either absent or whole."""
    for path in (run.oof, run.test):
        if path.exists():
            logits.load(path)
    for path in (run.metrics, run.provenance):
        if path.exists():
            json.loads(path.read_text())
    leftovers = [p.name for p in run.dir.iterdir() if not p.name.startswith(".")] if run.dir.exists() else []
    assert not [n for n in leftovers if n.endswith(".tmp")], leftovers


@pytest.mark.slow
def test_sigkill_at_every_write_point_then_rerun_matches_an_uninterrupted_run(make_toy_workspace, workspace):
    ws, _ = make_toy_workspace(workspace, n_per_class=8, n_folds=2, n_test=4)
    run = ws.run("tiny", 0)
    done = _run(workspace)
    assert done.returncode == 0, done.stderr
    reference_oof, reference_test = logits.load(run.oof), logits.load(run.test)

    for point in ("last.pt", "best.safetensors", "oof_logits.npz", "test_logits.npz"):
        killed = _run(workspace, point, "--force")
        assert killed.returncode == -signal.SIGKILL, f"{point}: the run was not killed ({killed.stderr[-500:]})"
        _readable_or_absent(run)
        _readable_or_absent(run.staging)  # the replacement being built beside the trained run
        again = _run(workspace, None, "--force")  # the same command again finishes the replacement
        assert again.returncode == 0, f"{point}: {again.stderr[-2000:]}"
        oof, test = logits.load(run.oof), logits.load(run.test)
        assert list(oof.ids) == list(reference_oof.ids), point
        np.testing.assert_allclose(oof.values, reference_oof.values, atol=1e-5, rtol=0, err_msg=point)
        np.testing.assert_allclose(test.values, reference_test.values, atol=1e-5, rtol=0, err_msg=point)
