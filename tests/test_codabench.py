"""`comp submit` to a CodaBench-compatible REST server on a local port (CODABENCH_URL)."""

from __future__ import annotations

import io
import zipfile

import pytest
from fake_servers import FakeCodabench, run_cli

from comp.core.workspace import Workspace
from comp.platforms.codabench import make_zip
from comp.submission import ledger


@pytest.fixture
def codabench(toy_workspace, isolated, monkeypatch, workspace):
    toy_workspace(workspace, platform="codabench", name="hw1")
    with FakeCodabench() as server:
        monkeypatch.setenv("CODABENCH_URL", server.base)
        monkeypatch.setenv("CODABENCH_USERNAME", server.username)
        monkeypatch.setenv("CODABENCH_PASSWORD", server.password)
        monkeypatch.setenv("CODABENCH_PHASE", "42")
        yield server


def test_submit_zips_uploads_and_scores(codabench, workspace):
    code, out = run_cli("submit", "-m", "resnet baseline")
    assert code == 0, out
    assert "0.87" in out
    (sub_id,) = codabench.submissions
    members = codabench.zip_members(sub_id)
    assert list(members) == ["prediction.csv"]  # at the zip root, as results competitions read it
    assert members["prediction.csv"] == (workspace / "submissions" / "first.csv").read_bytes()
    # description is read-only in CodaBench's submission serializer: the message goes with the uploaded file
    (meta,) = codabench.dataset_meta.values()
    assert meta["description"] == "resnet baseline" and codabench.submissions[sub_id]["description"] == ""
    assert "keeps no submission description" in out
    sassy_put = [r for r in codabench.requests if r.path.startswith("/sassy/")][0]
    assert "Authorization" not in sassy_put.headers  # the storage URL never sees the token
    row = ledger.read(Workspace(workspace)).iloc[0]
    assert (row["platform"], row["ref"], row["status"], row["public_score"]) == ("codabench", str(sub_id),
                                                                                  "complete", "0.87")


def test_token_and_zip_name_options(codabench, workspace, monkeypatch):
    monkeypatch.delenv("CODABENCH_USERNAME")
    monkeypatch.delenv("CODABENCH_PASSWORD")
    monkeypatch.setenv("CODABENCH_TOKEN", codabench.token)
    monkeypatch.delenv("CODABENCH_PHASE")
    code, out = run_cli("submit", "-m", "x", "--phase", "42", "--zip-name", "answer.csv", "--no-wait")
    assert code == 0, out
    assert list(codabench.zip_members(next(iter(codabench.submissions)))) == ["answer.csv"]
    assert not [r for r in codabench.requests if r.path == "/api/api-token-auth/"]


def test_refresh_needs_no_phase(codabench, workspace, monkeypatch):
    assert run_cli("submit", "-m", "x", "--no-wait")[0] == 0
    assert ledger.read(Workspace(workspace)).iloc[0]["status"] == "pending"
    next(iter(codabench.submissions.values()))["polls"] = 0  # scored by now
    monkeypatch.delenv("CODABENCH_PHASE")
    code, out = run_cli("submissions", "--refresh")
    assert code == 0, out
    assert ledger.read(Workspace(workspace)).iloc[0]["public_score"] == "0.87"


def test_not_approved_is_refused_before_upload(codabench):
    codabench.can_submit = False
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "You are not approved" in out
    assert codabench.datasets == {}


def test_bad_password(codabench, monkeypatch):
    monkeypatch.setenv("CODABENCH_PASSWORD", "wrong-pass-5521")
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "rejected the username/password" in out and "wrong-pass-5521" not in out


def test_failed_storage_put_is_retried_then_refused(codabench, workspace):
    codabench.put_failures = 99
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "failed after 3 attempts" in out
    assert codabench.submissions == {} and not Workspace(workspace).ledger.exists()
    # one dataset for the three PUTs, deleted afterwards: no orphans left in the user's quota
    assert len(codabench.dataset_meta) == 1 and codabench.deleted == [300]
    assert len({r.path for r in codabench.requests if r.path.startswith("/sassy/")}) == 1


def test_a_retried_put_reuses_its_dataset(codabench, workspace):
    codabench.put_failures = 2
    assert run_cli("submit", "-m", "third time", "--no-wait")[0] == 0
    assert len(codabench.dataset_meta) == 1 and len(codabench.submissions) == 1 and codabench.deleted == []


def test_azure_storage_gets_the_blob_type_header(codabench, workspace):
    codabench.azure = True
    code, out = run_cli("submit", "-m", "on azure", "--no-wait")
    assert code == 0, out
    (put,) = [r for r in codabench.requests if r.path.startswith("/sassy/")]
    assert put.headers["x-ms-blob-type"] == "BlockBlob" and "Authorization" not in put.headers


def test_the_primary_leaderboard_column_is_the_score(codabench, workspace):
    codabench.columns = [("aux_loss", 0.1234), ("accuracy", 0.91)]
    codabench.primary_index = 1
    code, out = run_cli("submit", "-m", "two columns")
    assert code == 0, out
    assert ledger.read(Workspace(workspace)).iloc[0]["public_score"] == "0.91"


def test_an_unreadable_leaderboard_is_an_error_not_the_first_column(codabench, workspace):
    codabench.columns = [("aux_loss", 0.1234), ("accuracy", 0.91)]
    codabench.primary_index = 1
    codabench.leaderboard_failures = 99
    code, out = run_cli("submit", "-m", "two columns")
    assert code == 1 and "leaderboard could not be read" in out and "aux_loss=0.1234" in out
    row = ledger.read(Workspace(workspace)).iloc[0]  # sent and recorded; the score is left for --refresh
    assert row["public_score"] in ("", "nan") or str(row["public_score"]) == "nan"
    codabench.leaderboard_failures = 0
    code, out = run_cli("submissions", "--refresh")
    assert code == 0, out
    assert ledger.read(Workspace(workspace)).iloc[0]["public_score"] == "0.91"


def test_a_failed_task_fails_the_multi_task_submission(codabench, workspace):
    codabench.children = ["Finished", "Failed"]  # the parent turns Finished once every child is done
    code, out = run_cli("submit", "-m", "two tasks")
    assert code == 1 and "failed" in out
    assert ledger.read(Workspace(workspace)).iloc[0]["status"] == "error"


def test_a_bad_token_is_called_a_bad_token(codabench, monkeypatch):
    """CodaBench answers a wrong token with 403 (SessionAuthentication comes first), not 401."""
    monkeypatch.delenv("CODABENCH_USERNAME")
    monkeypatch.delenv("CODABENCH_PASSWORD")
    monkeypatch.setenv("CODABENCH_TOKEN", "zz-not-the-token")
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "rejected the credential from CODABENCH_TOKEN (403" in out
    assert "wait for approval" not in out and "zz-not-the-token" not in out


def test_the_phase_variable_beats_comp_toml_and_the_option_beats_both(codabench, workspace):
    toml = workspace / "comp.toml"
    toml.write_text(toml.read_text().replace('codabench_phase = ""', 'codabench_phase = "7"'))
    assert run_cli("submit", "-m", "env phase", "--no-wait")[0] == 0  # CODABENCH_PHASE=42, comp.toml says 7
    code, out = run_cli("submit", "-m", "option", "--phase", "8", "--no-wait")
    assert code == 1 and "phase 8" in out


def test_refresh_does_not_ask_again_about_final_rows(codabench, workspace):
    assert run_cli("submit", "-m", "scored")[0] == 0
    before = len(codabench.requests)
    assert run_cli("submissions", "--refresh")[0] == 0
    assert len(codabench.requests) == before


def test_a_busy_server_is_asked_again(codabench, workspace):
    codabench.get_failures = 2  # 503 twice while polling, then the answer
    code, out = run_cli("submit", "-m", "patient")
    assert code == 0, out
    assert ledger.read(Workspace(workspace)).iloc[0]["public_score"] == "0.87"


def test_failed_scoring(codabench, workspace):
    codabench.outcome = "Failed"
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "status Failed" in out
    assert ledger.read(Workspace(workspace)).iloc[0]["status"] == "error"


def test_missing_or_unknown_phase(codabench, monkeypatch):
    monkeypatch.delenv("CODABENCH_PHASE")
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "--phase" in out
    code, out = run_cli("submit", "-m", "x", "--phase", "7")
    assert code == 1 and "404" in out and "phase 7" in out


def test_unreachable_server(codabench, monkeypatch):
    monkeypatch.setenv("CODABENCH_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "could not reach CodaBench" in out


def test_a_key_with_path_components_from_the_server_is_refused(codabench, workspace):
    codabench.dataset_key = "../../admin/delete"
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "usable key" in out
    assert not [r for r in codabench.requests if "admin" in r.path] and not Workspace(workspace).ledger.exists()


def test_make_zip_refuses_folder_names(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("image_name,pred_label\na,1\n")
    with zipfile.ZipFile(io.BytesIO(make_zip(csv))) as archive:
        assert archive.namelist() == ["prediction.csv"]
    with pytest.raises(Exception, match="not a plain name"):
        make_zip(csv, "../prediction.csv")
