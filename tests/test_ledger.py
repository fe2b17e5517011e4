"""submissions/ledger.csv: rows, updates, sidecar provenance, atomic rewrites, the plot; and the small guards."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
from fake_servers import run_cli

from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.platforms.base import redact, safe_file_name, safe_name
from comp.platforms.submit import newest_submission
from comp.submission import ledger


def _row(**extra: str) -> dict[str, str]:
    return {"time": "2026-01-01T00:00:00+00:00", "file": "submissions/a.csv", "sha256": "0" * 64, "message": "m",
            "platform": "kaggle", "ref": "1", "status": "pending", **extra}


def test_append_update_keep_text_exactly(workspace):
    ws = Workspace(workspace)
    assert ledger.read(ws).empty and list(ledger.read(ws).columns) == ledger.COLUMNS
    ledger.append(ws, _row(cv="0.90000", message='commas, "quotes"\nand a newline'))
    ledger.append(ws, _row(ref="2"))
    ledger.update(ws, "kaggle", "1", status="complete", public_score="0.91230")
    frame = ledger.read(ws)
    assert list(frame["ref"]) == ["1", "2"]
    first = frame.iloc[0]
    assert (first["cv"], first["public_score"], first["status"]) == ("0.90000", "0.91230", "complete")
    assert first["message"] == 'commas, "quotes"\nand a newline'
    assert frame.iloc[1]["status"] == "pending"
    with pytest.raises(CompError, match="no kaggle submission 99"):
        ledger.update(ws, "kaggle", "99", status="complete")


def test_a_failed_write_keeps_the_previous_ledger(workspace, monkeypatch):
    ws = Workspace(workspace)
    ledger.append(ws, _row())
    before = ws.ledger.read_bytes()

    def broken(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(CompError, match="disk is full"):
        ledger.append(ws, _row(ref="2"))
    assert ws.ledger.read_bytes() == before
    assert sorted(p.name for p in ws.submissions_dir.iterdir()) == ["ledger.csv"]  # no temp file left


def test_foreign_csv_is_refused(workspace):
    ws = Workspace(workspace)
    ws.submissions_dir.mkdir()
    ws.ledger.write_text("a,b\n1,2\n")
    with pytest.raises(CompError, match="lacks column"):
        ledger.read(ws)


def test_sidecar_is_optional_and_tolerant(workspace):
    ws = Workspace(workspace)
    ws.submissions_dir.mkdir()
    csv = ws.submission_csv("blend")
    csv.write_text("id,label\n")
    assert ledger.sidecar(ws, csv) == {"models": "", "method": "", "cv": ""}
    ws.submission_json("blend").write_text("{not json")
    assert ledger.sidecar(ws, csv)["cv"] == ""
    ws.submission_json("blend").write_text('{"models": ["convnext", "vit"], "method": "logreg", "cv": 0.95}')
    assert ledger.sidecar(ws, csv) == {"models": "convnext;vit", "method": "logreg", "cv": "0.95"}


def test_plot_needs_cv_and_public_scores(workspace):
    ws = Workspace(workspace)
    ledger.append(ws, _row())
    assert ledger.plot(ws) is None and not ws.ledger_plot.exists()
    ledger.append(ws, _row(ref="2", cv="0.9", public_score="0.88"))
    assert ledger.plot(ws) == ws.ledger_plot and ws.ledger_plot.read_bytes()[:4] == b"\x89PNG"


def test_platform_none_records_only(toy_workspace, isolated, workspace):
    toy_workspace(workspace, platform="none")
    code, out = run_cli("submit", "-m", "local only")
    assert code == 0 and "nothing was uploaded" in out
    row = ledger.read(Workspace(workspace)).iloc[0]
    assert (row["platform"], row["status"], row["models"]) == ("none", "recorded", "a;b")
    code, out = run_cli("submissions")
    assert code == 0 and "local only" in out


def test_newest_submission_skips_the_ledger(workspace):
    ws = Workspace(workspace)
    with pytest.raises(CompError, match="no submission CSV"):
        newest_submission(ws)
    ws.submissions_dir.mkdir()
    old, new = ws.submission_csv("old"), ws.submission_csv("new")
    old.write_text("x")
    new.write_text("x")
    os.utime(old, (time.time() - 100, time.time() - 100))
    ledger.append(ws, _row())  # the newest file, but not a submission
    assert newest_submission(ws) == new


def test_check_command_exit_codes(toy_workspace, isolated, workspace):
    csv = toy_workspace(workspace, platform="none")
    code, out = run_cli("check", str(csv))
    assert code == 0 and "valid submission" in out
    csv.write_text(csv.read_text().replace("id,label", "id,Label"))
    code, out = run_cli("check", str(csv))
    assert code == 1 and "error" in out


def test_names_with_path_components_are_refused():
    for bad in ("../x", "a/b", "..", "", "x y", "a\\b"):
        with pytest.raises(CompError, match="not a plain name"):
            safe_name(bad, "slug")
    assert safe_name("aerial-cactus-identification", "slug") == "aerial-cactus-identification"
    for bad in ("../sub.csv", "dir/sub.csv", ".hidden.csv", "c:sub.csv", "a\nb.csv"):
        with pytest.raises(CompError, match="path components"):
            safe_file_name(bad)
    assert safe_file_name("blend v2 (hflip).csv") == "blend v2 (hflip).csv"


def test_unpack_refuses_members_outside_the_folder(tmp_path):
    import zipfile

    from comp.platforms.fetch import unpack

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("ok.txt", "fine")
        archive.writestr("../evil.txt", "escape")
    with pytest.raises(CompError, match="outside its folder"):
        unpack(bad, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()


def test_redact_replaces_every_secret():
    assert redact("token abcd1234 and key k3y-zz9 here", ["abcd1234", "k3y-zz9", ""]) == "token *** and key *** here"
