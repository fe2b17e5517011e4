"""`--fold-parallel`: under torchrun each process trains its own folds alone; the artifacts equal a sequential run's."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from comp import logits
from comp.core.workspace import Workspace
from comp.runs import read_run
from comp.training.fold_parallel import fold_share


def test_each_process_takes_every_nth_fold(monkeypatch):
    import torch

    shares = []
    for rank in range(3):
        monkeypatch.setenv("WORLD_SIZE", "3")
        monkeypatch.setenv("RANK", str(rank))
        dist, folds = fold_share(torch.device("cpu"), [0, 1, 2, 3, 4])
        assert dist.world == 1 and dist.rank == 0 and dist.main  # a one-process run: it writes its own folds
        shares.append(folds)
    assert shares == [[0, 3], [1, 4], [2]]


@pytest.mark.slow
def test_two_cpu_processes_write_what_a_sequential_run_writes(make_toy_workspace, tmp_path):
    seq_root, par_root = tmp_path / "sequential", tmp_path / "parallel"
    for root in (seq_root, par_root):  # the same generated competition twice (same seed), each verified
        root.mkdir()
        make_toy_workspace(root, n_per_class=8, n_folds=3)
    args = ["-m", "comp", "train", "--model", "tiny", "--fold", "all", "--device", "cpu", "--set", "epochs=2"]

    # Equal artifacts need equal float reductions, so equal torch threads per process: comp gives each process its
    # share of the usable cores (affinity mask / local ranks), so the sequential run gets one core and the two
    # parallel processes share two (one each; on a one-core machine both runs have that one).
    cores = sorted(os.sched_getaffinity(0))

    def run(root, cmd, n_cores):
        env = {**os.environ, "COMP_WORKSPACE": str(root), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600,
                              preexec_fn=lambda: os.sched_setaffinity(0, cores[:n_cores]))
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    run(seq_root, [sys.executable, *args], 1)
    out = run(par_root, [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         *args, "--fold-parallel"], 2)
    assert "fold 0" in out and "fold 1" in out and "fold 2" in out  # each process reports its own folds
    seq, par = Workspace(seq_root), Workspace(par_root)
    for k in range(3):
        assert read_run(par.run("tiny", k)).world_size == 1  # trained alone, not with DDP
        for kind in ("oof", "test"):
            a, b = logits.load(getattr(seq.run("tiny", k), kind)), logits.load(getattr(par.run("tiny", k), kind))
            assert list(a.ids) == list(b.ids)
            np.testing.assert_array_equal(a.values, b.values)


@pytest.mark.slow
def test_fold_parallel_processes_follow_rank_0s_budget_plan(make_toy_workspace, workspace):
    import tomllib

    ws, _ = make_toy_workspace(workspace, n_per_class=8, n_folds=3)
    env = {**os.environ, "COMP_WORKSPACE": str(workspace), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "comp",
           "train", "--model", "tiny", "--fold", "all", "--device", "cpu", "--fold-parallel", "--budget", "60s"]
    done = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    import re

    # Each process says the plan it follows for its folds: rank 0's, measured once.
    plans = re.findall(r"plan: .* x (\d+) epochs? at (\d+) px", out)
    assert len(plans) == 2 and len(set(plans)) == 1, out
    recipes = [tomllib.loads(ws.run("tiny", k).recipe.read_text()) for k in range(3)]
    assert {r["budget"] for r in recipes} == {"60s"} and len({(r["epochs"], r["img_size"]) for r in recipes}) == 1
