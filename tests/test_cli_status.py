"""`comp status` tells running from dead runs (the lock's pid and host), fits 80 columns with full model names,
gives mean ± std, and has --json; `comp models` lists every recipe with its trained folds, CV and the settings the
folds were trained with that the recipe file no longer says."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

from comp import logits
from comp.core import atomic
from comp.core.config import save_toml
from comp.core.provenance import competition_hash
from comp.core.runlock import pid_alive
from comp.folds import load_folds

LONG = "convnext_small_in22k_ft"  # a long alias: must never be cut


@pytest.fixture
def five_folds(make_toy_workspace, workspace):
    return make_toy_workspace(workspace, n_per_class=10, n_folds=5)


def fake_run(ws, comp, alias: str, k: int, finished: bool = True, accuracy_drop: int = 0) -> None:
    """Fold k of `alias` as training leaves it: provenance, and when finished OOF logits + metrics.json."""
    folds = load_folds(ws)
    rows = folds.frame[folds.frame["fold"] == k]
    index = {c: i for i, c in enumerate(comp.classes)}
    y = rows["label"].map(index).to_numpy()
    predicted = y.copy()
    predicted[:accuracy_drop] = (predicted[:accuracy_drop] + 1) % len(comp.classes)
    paths = ws.run(alias, k)
    atomic.write_json(paths.provenance, {"folds_hash": folds.hash, "competition_hash": competition_hash(comp),
                                         "finished": finished, "model": alias, "fold": k})
    if finished:
        values = np.eye(len(comp.classes), dtype=np.float32)[predicted] * 3
        logits.save(paths.oof, logits.Logits(rows["id"].to_numpy(), values, list(comp.classes),
                                             {"folds_hash": folds.hash, "model": alias, "fold": k, "tta": "none"}))
        atomic.write_json(paths.metrics, {"oof_score": float(np.mean(predicted == y)), "tta": "none",
                                          "metric": comp.metric})


def dead_pid() -> int:
    pid = 4_000_000
    while pid_alive(pid):
        pid -= 1
    return pid


def raw(monkeypatch, capsys, *args: str, width: int = 80) -> tuple[int, str]:
    """`comp ARGS` through the real entry point, output as printed (lines kept) on a `width`-column terminal."""
    from comp.cli import main, output

    monkeypatch.setattr(output.console, "width", width)
    monkeypatch.setattr("sys.argv", ["comp", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out + captured.err


def test_status_tells_training_now_from_dead_and_gives_the_resume_command(five_folds, cli):
    ws, comp = five_folds
    for k in range(5):
        fake_run(ws, comp, "a", k)
    fake_run(ws, comp, "b", 0, finished=False)  # killed: its lock names a process that is gone
    atomic.write_json(ws.run("b", 0).lock, {"pid": dead_pid(), "host": socket.gethostname(), "started": "x"})
    fake_run(ws, comp, "b", 1, finished=False)  # alive: this very process holds the lock
    atomic.write_json(ws.run("b", 1).lock, {"pid": os.getpid(), "host": socket.gethostname(), "started": "x"})
    fake_run(ws, comp, "b", 2, finished=False)  # on another machine: cannot be checked, so counted as alive
    atomic.write_json(ws.run("b", 2).lock, {"pid": 1, "host": "gpu-node-7", "started": "x"})
    fake_run(ws, comp, "b", 3, finished=False)  # started, no lock (Ctrl-C removed it): interrupted
    code, out = cli("status")
    assert code == 0, out
    assert "b fold 0: interrupted; resume with `comp train --model b --fold 0`" in out
    assert f"b fold 1: training now (pid {os.getpid()} on {socket.gethostname()})" in out
    assert "b fold 2: training now (pid 1 on gpu-node-7)" in out
    assert "b fold 3: interrupted; resume with `comp train --model b --fold 3`" in out
    assert "b fold 4" not in out  # never started: just missing
    from comp.report import status

    states = [c.state for c in next(m for m in status(ws.load(), ws).models if m.alias == "b").cells]
    assert states == ["interrupted", "running", "running", "interrupted", "missing"]


def test_status_fits_80_columns_with_full_names_and_mean_std(five_folds, monkeypatch, capsys):
    ws, comp = five_folds
    for k in range(5):
        fake_run(ws, comp, LONG, k, accuracy_drop=k)  # scores differ per fold: a real std
    for k in range(3):
        fake_run(ws, comp, "tiny2", k)
    fake_run(ws, comp, "tiny2", 3, finished=False)
    atomic.write_json(ws.run("tiny2", 4).provenance, {"folds_hash": "0" * 64, "finished": True})  # stale
    code, out = raw(monkeypatch, capsys, "status")
    assert code == 0, out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n" + out
    assert any(line.startswith(LONG) for line in lines) and any(line.startswith("tiny2 ") for line in lines), out
    from comp.report import status

    grid = {m.alias: m for m in status(ws.load(), ws).models}
    mean, std, n = grid[LONG].mean_std()
    assert n == 5 and std > 0
    assert f"{mean:.4f} ± {std:.4f}" in out
    partial = grid["tiny2"].mean_std()
    assert partial[2] == 3 and f"{partial[0]:.4f} ± {partial[1]:.4f} (3/5)" in out
    assert "tiny2 fold 4: made from other folds" in out


def test_status_json_is_machine_readable(five_folds, cli, capsys, monkeypatch):
    ws, comp = five_folds
    for k in range(5):
        fake_run(ws, comp, "a", k)
    fake_run(ws, comp, "b", 0, finished=False)
    code, out = raw(monkeypatch, capsys, "status", "--json")
    assert code == 0
    data = json.loads(out)
    by_model = {m["model"]: m for m in data["models"]}
    assert data["n_folds"] == 5 and data["metric"] == comp.metric
    assert by_model["a"]["mean"] == 1.0 and by_model["a"]["std"] == 0.0 and by_model["a"]["cv"]["oof"] == 1.0
    assert [f["state"] for f in by_model["b"]["folds"]] == ["interrupted"] + ["missing"] * 4


def test_models_lists_recipes_backbones_trained_folds_and_settings_that_differ(five_folds, cli, monkeypatch, capsys):
    ws, comp = five_folds
    for k in range(2):
        fake_run(ws, comp, "tiny", k)
        # trained with --set epochs=1 --set lr=0.1 while the stock recipe says otherwise
        from comp.modeling.recipe import load_recipe, recipe_dict

        trained = {**recipe_dict(load_recipe(ws, "tiny")), "epochs": 1, "lr": 0.1}
        save_toml(ws.run("tiny", k).recipe, trained)
    code, out = cli("models")
    assert code == 0, out
    assert "tiny * 2/5 1.0000 ± 0.0000 test_resnet" in out and "tiny2" in out and "effnet-lite0" in out
    assert "* stock recipe, not in" in out
    assert "tiny was trained with other settings than its recipe file says" in out
    assert "epochs: 1 when trained, 5 now" in out and "lr: 0.1 when trained, 0.01 now" in out
    assert "reproduce: `comp train --model tiny --set epochs=1 --set lr=0.1`" in out
    assert "`comp train --model tiny --fold all --force`" in out
    code, out = raw(monkeypatch, capsys, "models", "--json")
    data = {m["alias"]: m for m in json.loads(out)}
    assert data["tiny"]["trained"] == [0, 1] and data["tiny"]["backbone"] == "test_resnet"
    assert data["tiny"]["differs"]["epochs"] == {"trained": 1, "recipe": 5}
    assert data["tiny2"]["trained"] == [] and data["tiny2"]["mean"] is None


def test_models_names_a_broken_recipe_without_failing(five_folds, cli):
    ws, _ = five_folds
    ws.models_dir.mkdir(exist_ok=True)
    ws.recipe_path("broken").write_text("epochs = 3\n")
    code, out = cli("models")
    assert code == 0 and "broken" in out and "has no `name`" in out


def test_status_is_a_table_where_it_fits_and_blocks_where_it_does_not(five_folds, monkeypatch, capsys):
    ws, comp = five_folds
    for k in range(5):
        fake_run(ws, comp, LONG, k)
        fake_run(ws, comp, "tiny", k)
    code, wide = raw(monkeypatch, capsys, "status", width=120)
    assert code == 0
    row = next(line for line in wide.splitlines() if line.lstrip().startswith(LONG))
    assert "1.0000 ± 0.0000" in row and row.count("1.0000") == 7  # 5 folds, the mean and the OOF on one line
    code, narrow = raw(monkeypatch, capsys, "status", width=80)
    lines = narrow.splitlines()
    assert max(map(len, lines)) <= 80
    at = next(i for i, line in enumerate(lines) if line.startswith(LONG))
    assert "mean ± std 1.0000 ± 0.0000" in lines[at] and lines[at + 1].split() == [
        token for k in range(5) for token in (f"f{k}", "1.0000")]
