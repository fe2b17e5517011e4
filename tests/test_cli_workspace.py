"""Where commands act: the workspace is found from any subfolder (as git finds its repository), COMP_WORKSPACE is
named when it is the cause, and file arguments resolve against the cwd, then the workspace."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def toy(make_toy_workspace, workspace, monkeypatch):
    """A verified toy workspace, with COMP_WORKSPACE unset so commands look for it themselves."""
    ws, comp = make_toy_workspace(workspace)
    monkeypatch.delenv("COMP_WORKSPACE", raising=False)
    return ws, comp


def test_commands_find_the_workspace_from_a_subfolder(toy, cli, monkeypatch):
    ws, _ = toy
    deep = ws.root / "data" / "toy" / "train"
    monkeypatch.chdir(deep)
    code, out = cli("status")
    assert code == 0 and "no trained models yet" in out, out
    code, out = cli("folds")
    assert code == 0 and "up to date" in out and "folds/folds.csv" in out, out


def test_outside_any_workspace_the_error_says_where_it_looked(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("COMP_WORKSPACE", raising=False)
    empty = tmp_path / "nowhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    code, out = cli("status")
    assert code == 1 and "no comp.toml in" in out and "or any folder above it" in out and "comp init" in out


def test_comp_workspace_pointing_nowhere_is_named(cli, tmp_path, monkeypatch):
    missing = tmp_path / "no-such-folder"
    monkeypatch.setenv("COMP_WORKSPACE", str(missing))
    code, out = cli("status")
    assert code == 1 and f"COMP_WORKSPACE={missing} is not a folder" in out and "unset it" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("COMP_WORKSPACE", str(empty))
    code, out = cli("verify")
    assert code == 1 and f"COMP_WORKSPACE={empty} has no comp.toml" in out, out


def test_file_arguments_resolve_against_the_cwd_then_the_workspace(toy, cli, monkeypatch):
    ws, comp = toy
    ws.submissions_dir.mkdir(exist_ok=True)
    shutil.copy(ws.path(comp.sample_submission), ws.submission_csv("mine"))
    monkeypatch.chdir(ws.root / "data")
    code, out = cli("check", "submissions/mine.csv")  # not under data/: found in the workspace
    assert code == 0 and "is a valid submission" in out, out
    shutil.copy(ws.path(comp.sample_submission), ws.root / "data" / "local.csv")
    code, out = cli("check", "local.csv")  # under the cwd: used as typed
    assert code == 0 and "local.csv is a valid submission" in out, out
    code, out = cli("check", "nope.csv")
    assert code == 1 and "nope.csv" in out


def test_init_refuses_inside_another_workspace_naming_it(toy, cli, monkeypatch):
    """A nested workspace would hide the outer one from every command run below it (issue 17)."""
    ws, _ = toy
    before = ws.comp_toml.read_bytes()
    inner = ws.root / "second"
    inner.mkdir()
    monkeypatch.chdir(inner)
    code, out = cli("init", str(ws.root / "data" / "toy"))
    assert code == 1 and f"inside the workspace {ws.root}" in out, out
    assert not (inner / "comp.toml").exists() and ws.comp_toml.read_bytes() == before
