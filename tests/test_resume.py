"""Resume: a `comp train` killed with SIGKILL mid-run and started again ends with the same OOF logits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from comp import logits

pytestmark = pytest.mark.slow  # SIGKILLs a training process and resumes it

EPOCHS = 4
CMD = [sys.executable, "-m", "comp", "train", "--model", "tiny", "--fold", "0", "--device", "cpu",
       "--set", f"epochs={EPOCHS}", "--set", "ema=true", "--set", "ema_decay=0.9"]


def _run(ws, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(CMD + list(extra), cwd=ws, env=_env(ws), capture_output=True, text=True, timeout=300)


def _env(ws) -> dict[str, str]:
    return {**os.environ, "COMP_WORKSPACE": str(ws), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


def test_sigkill_mid_run_then_resume_gives_the_same_oof(make_toy_workspace, workspace):
    ws, _ = make_toy_workspace(workspace, n_per_class=12, n_folds=2)
    run = ws.run("tiny", 0)

    done = _run(workspace)
    assert done.returncode == 0, done.stderr
    reference = logits.load(run.oof)
    # The OOF logits come from the best epoch, which may precede the kill; the final weights depend on every epoch.
    reference_state = torch.load(run.last, weights_only=True)

    # Start over (--force: built beside the trained run, in run.staging) and kill -9 as soon as the first epoch's
    # resume state is on disk: the second epoch is then under way (or being evaluated), so the process dies with an
    # epoch half done.
    staging = run.staging
    proc = subprocess.Popen(CMD + ["--force"], cwd=workspace, env=_env(workspace),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if _started_afresh(staging) and staging.last.exists():
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    saved = torch.load(staging.last, weights_only=True)
    assert saved["epoch"] < EPOCHS - 1 and not staging.oof.exists()
    assert logits.load(run.oof).values.tolist() == reference.values.tolist()  # the trained run is untouched

    resumed = _run(workspace, "--force")  # the same command again
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stderr
    again = logits.load(run.oof)
    assert list(again.ids) == list(reference.ids)
    np.testing.assert_allclose(again.values, reference.values, atol=1e-5, rtol=0)
    final_state = torch.load(run.last, weights_only=True)
    for part in ("model", "ema"):
        for key, value in reference_state[part].items():
            torch.testing.assert_close(final_state[part][key], value, atol=1e-5, rtol=0, msg=f"{part} {key}")
    history = run.history.read_text().strip().splitlines()
    assert len(history) == EPOCHS + 1  # header + one row per epoch, none repeated


def _started_afresh(run) -> bool:
    # --force first empties the staging folder, then writes a provenance there with finished = false.
    try:
        return json.loads(run.provenance.read_text()).get("finished") is False
    except (OSError, ValueError):  # not there yet, or removed between two looks
        return False
