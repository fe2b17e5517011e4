"""`comp submit --kernel` against the fake Kaggle on 127.0.0.1:7777, through the real kagglesdk client: dataset create
/ version / skip, kernel push and polling, CreateCodeSubmission, the score and the ledger row.

The bundle here is written by hand (a stand-in weights file and wheel, the real manifest/metadata writers), so these
tests need no training; tests/test_bundle.py builds a real one and runs it.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from fake_servers import FakeKaggle, run_cli

from comp.bundle.build import dataset_hash
from comp.bundle.notebook import kernel_metadata, notebook
from comp.core import atomic
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.platforms.kaggle_code import log_tail
from comp.submission import ledger

NAME = "first"  # the toy workspace's submissions/first.csv + first.json stand for `comp stack --name first`
DATASET = "fake-user/first-toy-comp-bundle"
KERNEL = "fake-user/toy-comp-first-inference"


@pytest.fixture
def bundled(toy_workspace, workspace, kaggle):
    """A toy Kaggle workspace with bundles/first/ as `comp bundle first --run-local` leaves it; the fake Kaggle's
    kernel writes the same submission.csv as the local run."""
    csv = toy_workspace(workspace)
    kaggle.code.kernel_files["submission.csv"] = csv.read_bytes()
    paths = Workspace(workspace).bundle(NAME)
    atomic.write_json(paths.manifest, {"format": 1, "name": NAME, "models": [{"alias": "a", "folds": []}]})
    atomic.write_bytes(paths.dataset / "models" / "a" / "fold0" / "best.safetensors", b"weights" * 100)
    atomic.write_bytes(paths.wheels / "comp-0.1.0-py3-none-any.whl", b"wheel")
    atomic.write_json(paths.dataset_metadata, {"id": DATASET, "title": "first-toy-comp-bundle",
                                               "licenses": [{"name": "CC0-1.0"}]})
    atomic.write_text(paths.kernel / "toy-comp-first-inference.ipynb",
                      json.dumps(notebook(NAME, "toy-comp", ["comp-0.1.0-py3-none-any.whl"])))
    atomic.write_json(paths.kernel_metadata, kernel_metadata(KERNEL, DATASET, "toy-comp", gpu=True))
    paths.local_run.mkdir(parents=True)
    shutil.copy(csv, paths.local_run / "submission.csv")
    _passed(paths)
    return paths


def _passed(paths) -> None:
    atomic.write_json(paths.local_run / "passed.json", {"dataset_hash": dataset_hash(paths), "compared": 6})


def _calls(server: FakeKaggle, method: str) -> list[dict]:
    return [json.loads(r.body or b"{}") for r in server.requests if r.path.endswith("/" + method)]


def test_submit_kernel_creates_dataset_pushes_kernel_and_records_score(kaggle, bundled, workspace):
    code, out = run_cli("submit", "--kernel", NAME, "-m", "bundle v1")
    assert code == 0, out
    assert "0.91234" in out and "fake-key" not in out
    # The dataset: every file uploaded as a blob and placed by the request's directory tree, created private.
    (create,) = _calls(kaggle, "CreateDataset")
    assert (create["ownerSlug"], create["slug"], create["isPrivate"]) == ("fake-user", "first-toy-comp-bundle", True)
    stored = kaggle.code.datasets[DATASET][0]["content"]
    assert stored["models/a/fold0/best.safetensors"] == b"weights" * 100
    assert set(stored) == {"comp-bundle.json", "models/a/fold0/best.safetensors", "wheels/comp-0.1.0-py3-none-any.whl"}
    assert all(b["type"] == "DATASET" for b in kaggle.code.blobs.values())
    assert len(_calls(kaggle, "GetDatasetStatus")) >= 2  # missing, then polled to READY
    # The kernel: offline, private, GPU as bundled, both sources, the notebook's text.
    (save,) = _calls(kaggle, "SaveKernel")
    assert save["slug"] == KERNEL and save.get("enableInternet", False) is False and save["isPrivate"] is True
    assert save["enableGpu"] is True and save["kernelType"] == "notebook"
    assert save["datasetDataSources"] == [DATASET] and save["competitionDataSources"] == ["toy-comp"]
    assert "run_kernel" in save["text"]
    assert len(_calls(kaggle, "GetKernelSessionStatus")) >= 3  # RUNNING twice, then COMPLETE
    (sub,) = kaggle.code.code_submissions
    assert (sub["kernelOwner"], sub["kernelSlug"], sub["kernelVersion"]) == ("fake-user", KERNEL.split("/")[1], 1)
    assert sub["fileName"] == "submission.csv" and sub["submissionDescription"] == "bundle v1"
    row = ledger.read(Workspace(workspace)).iloc[0]
    assert row["ref"] == str(kaggle.submissions[0].ref) and row["status"] == "complete"
    assert row["public_score"] == "0.91234" and (row["models"], row["cv"]) == ("a;b", "0.9")
    assert row["kernel"] == f"{KERNEL} v1; dataset {DATASET} @{dataset_hash(bundled)[:12]}"
    assert row["file"] == "bundles/first/kernel-output/submission.csv"  # the kernel's own output, downloaded
    assert row["sha256"] == hashlib.sha256(kaggle.code.kernel_files["submission.csv"]).hexdigest()


def test_unchanged_dataset_is_not_uploaded_again_and_a_changed_one_is_versioned(kaggle, bundled):
    assert run_cli("submit", "--kernel", NAME, "-m", "v1", "--no-wait")[0] == 0
    blobs = len(kaggle.code.blobs)
    code, out = run_cli("submit", "--kernel", NAME, "-m", "v2", "--no-wait")
    assert code == 0, out
    assert "unchanged" in out and len(kaggle.code.blobs) == blobs  # nothing uploaded
    assert not _calls(kaggle, "CreateDatasetVersion")
    assert [s["kernelVersion"] for s in kaggle.code.code_submissions] == [1, 2]
    # A changed weights file: a new dataset version, not a new dataset.
    atomic.write_bytes(bundled.dataset / "models" / "a" / "fold0" / "best.safetensors", b"retrained")
    _passed(bundled)
    assert run_cli("submit", "--kernel", NAME, "-m", "v3", "--no-wait")[0] == 0
    (version,) = _calls(kaggle, "CreateDatasetVersion")
    assert version["body"]["versionNotes"].startswith("comp bundle first")
    assert kaggle.code.datasets[DATASET][1]["content"]["models/a/fold0/best.safetensors"] == b"retrained"
    assert len(_calls(kaggle, "CreateDataset")) == 1


def test_kernel_error_shows_the_log_tail_and_submits_nothing(kaggle, bundled, workspace):
    kaggle.code.kernel_outcome = "ERROR"
    code, out = run_cli("submit", "--kernel", NAME, "-m", "broken")
    assert code == 1
    assert "ended error" in out and "unhandled error" in out and "CompError: the check failed" in out
    assert not kaggle.code.code_submissions and not Workspace(workspace).ledger.exists()


def test_refuses_before_any_network_without_a_passing_local_run(kaggle, bundled, workspace):
    (bundled.local_run / "passed.json").unlink()
    code, out = run_cli("submit", "--kernel", NAME, "-m", "untested")
    assert code == 1 and "--run-local" in out
    # A bundle changed after its local run is refused too.
    _passed(bundled)
    atomic.write_bytes(bundled.wheels / "comp-0.1.0-py3-none-any.whl", b"another wheel")
    code, out = run_cli("submit", "--kernel", NAME, "-m", "changed")
    assert code == 1 and "changed since its local run" in out
    assert not kaggle.requests


def test_a_local_submission_failing_the_check_is_refused(kaggle, bundled):
    (bundled.local_run / "submission.csv").write_text("id,label\nnope,cat\n")
    code, out = run_cli("submit", "--kernel", NAME, "-m", "bad")
    assert code == 1 and "failed the check" in out
    assert not kaggle.requests


def test_dry_run_prints_every_call_and_sends_nothing(kaggle, bundled):
    code, out = run_cli("submit", "--kernel", NAME, "-m", "try", "--dry-run")
    assert code == 0, out
    for call in ("GetSubmissionLimits", "GetDatasetStatus", "StartBlobUpload", "CreateDataset", "SaveKernel",
                 "GetKernelSessionStatus", "ListKernelSessionOutput", "CreateCodeSubmission", "ListSubmissions"):
        assert call in out, call
    assert "enable_internet false" in out and "fake-key" not in out
    assert not kaggle.requests


def test_placeholder_owner_and_other_platforms_are_refused(kaggle, bundled, workspace):
    meta = json.loads(bundled.dataset_metadata.read_text())
    atomic.write_json(bundled.dataset_metadata, {**meta, "id": "your-kaggle-username/first-toy-comp-bundle"})
    code, out = run_cli("submit", "--kernel", NAME, "-m", "x")
    assert code == 1 and "--owner" in out
    toml = workspace / "comp.toml"
    toml.write_text(toml.read_text().replace('platform = "kaggle"', 'platform = "none"'))
    code, out = run_cli("submit", "--kernel", NAME, "-m", "x")
    assert code == 1 and "Kaggle code competitions" in out
    assert not kaggle.requests


def test_unknown_dataset_source_is_a_clear_error(kaggle, bundled):
    meta = json.loads(bundled.kernel_metadata.read_text())
    atomic.write_json(bundled.kernel_metadata, {**meta, "competition_sources": ["no-such-comp"]})
    code, out = run_cli("submit", "--kernel", NAME, "-m", "x")
    assert code == 1 and "unknown sources: no-such-comp" in out
    assert not kaggle.code.code_submissions


def test_log_tail_reads_kaggles_json_log_and_plain_text():
    chunks = [{"stream_name": "stdout", "time": 0, "data": f"line {i}\n"} for i in range(40)]
    assert log_tail(json.dumps(chunks), 3).splitlines() == ["line 37", "line 38", "line 39"]
    assert log_tail("a\nb\nc", 2).splitlines() == ["b", "c"]


def test_rejected_credential_is_named_without_its_value(kaggle, bundled, monkeypatch, workspace):
    monkeypatch.setenv("KAGGLE_KEY", "wrong-key-123")
    code, out = run_cli("submit", "--kernel", NAME, "-m", "x")
    assert code == 1 and "401" in out and "KAGGLE_USERNAME" in out
    assert "wrong-key-123" not in out
    assert not kaggle.code.datasets and not Workspace(workspace).ledger.exists()


def test_a_dataset_kaggle_fails_to_process_stops_before_the_kernel(kaggle, bundled, monkeypatch):
    original = kaggle.code._GetDatasetStatus

    def failing(body):
        status, headers, payload = original(body)
        return (status, headers, json.dumps({"status": "FAILED"}).encode()) if status == 200 else (status, headers,
                                                                                                    payload)

    monkeypatch.setattr(kaggle.code, "_GetDatasetStatus", failing)
    code, out = run_cli("submit", "--kernel", NAME, "-m", "x")
    assert code == 1 and "as failed" in out
    assert not _calls(kaggle, "SaveKernel") and not kaggle.code.code_submissions


# ---------------------------------------------------------------------------------------------------------------
# Faults of the code-competition path (each a mode of the fake server)


def test_the_notebook_is_pushed_with_each_cell_source_as_one_string(kaggle, bundled):
    """Both official clients join a cell's list of lines before SaveKernel ("the server expects just one"); a
    notebook edited by hand (lists, outputs) is sent the same way."""
    nb_path = next(bundled.kernel.glob("*.ipynb"))
    nb = json.loads(nb_path.read_text())
    nb["cells"][1]["source"] = nb["cells"][1]["source"].splitlines(keepends=True)
    nb["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["old run\n"]}]
    nb_path.write_text(json.dumps(nb))
    _passed(bundled)
    assert run_cli("submit", "--kernel", NAME, "-m", "v1", "--no-wait")[0] == 0
    (save,) = _calls(kaggle, "SaveKernel")
    sent = json.loads(save["text"])
    assert all(isinstance(c["source"], str) for c in sent["cells"])
    assert sent["cells"][1]["source"] == "".join(nb["cells"][1]["source"]) and sent["cells"][2]["outputs"] == []


def test_a_code_submission_created_behind_a_500_is_found_and_recorded_not_resent(kaggle, bundled, workspace):
    kaggle.code.code_create_lost = 1
    code, out = run_cli("submit", "--kernel", NAME, "-m", "lost answer", "--no-wait")
    assert code == 0, out
    assert len(kaggle.code.code_submissions) == 1 and len(_calls(kaggle, "CreateCodeSubmission")) == 1
    row = ledger.read(Workspace(workspace)).iloc[0]
    assert row["ref"] == str(kaggle.submissions[0].ref)


def test_a_500_that_created_nothing_is_sent_once_and_the_rerun_submits_the_same_version(kaggle, bundled, workspace):
    kaggle.code.code_create_failures = 1
    kaggle.code.plain_text = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    code, out = run_cli("submit", "--kernel", NAME, "-m", "retry me", "--no-wait")
    assert code == 1 and "sent once and not repeated" in out
    assert "reset reason: overflow" in out  # the plain-text body's reason is kept
    assert len(_calls(kaggle, "CreateCodeSubmission")) == 1 and not Workspace(workspace).ledger.exists()
    code, out = run_cli("submit", "--kernel", NAME, "-m", "retry me", "--no-wait")
    assert code == 0, out
    assert "resuming" in out and "not in Kaggle's listing" in out
    assert len(_calls(kaggle, "SaveKernel")) == 1  # the same kernel version, not a new run
    assert [s["kernelVersion"] for s in kaggle.code.code_submissions] == [1]


def test_a_call_sent_once_does_not_claim_three_attempts(kaggle, bundled):
    kaggle.code.save_failures = 1
    code, out = run_cli("submit", "--kernel", NAME, "-m", "x", "--no-wait")
    assert code == 1 and "answered 500" in out and "sent once" in out and "3 times" not in out
    assert len(_calls(kaggle, "SaveKernel")) == 1


def test_a_dataset_whose_processing_failed_is_uploaded_again(kaggle, bundled):
    kaggle.code.fail_processing = 1
    code, out = run_cli("submit", "--kernel", NAME, "-m", "x", "--no-wait")
    assert code == 1 and "as failed" in out
    code, out = run_cli("submit", "--kernel", NAME, "-m", "x", "--no-wait")  # same content
    assert code == 0, out
    assert "uploading again" in out and len(_calls(kaggle, "CreateDatasetVersion")) == 1
    assert len(kaggle.code.code_submissions) == 1


def test_limits_5xx_is_not_fatal_and_a_403_for_a_new_dataset_creates_it(kaggle, bundled):
    kaggle.limits_failures = 3
    kaggle.code.missing_forbidden = True
    code, out = run_cli("submit", "--kernel", NAME, "-m", "first", "--no-wait")
    assert code == 0, out
    assert "could not read the submission limits" in out and "accept" not in out
    assert len(_calls(kaggle, "CreateDataset")) == 1 and len(kaggle.code.code_submissions) == 1


def test_a_kernel_still_running_at_the_limit_is_resumed_not_pushed_again(kaggle, bundled, workspace):
    from comp.bundle.submit import submit_kernel

    ws = Workspace(workspace)
    kaggle.code.kernel_running = 10**6
    with pytest.raises(CompError, match="resumes waiting for v1"):
        submit_kernel(ws.load(), ws, NAME, "slow", kernel_timeout=0.05, poll_interval=0.01, wait=False,
                      say=lambda _: None)
    kaggle.code._polls[KERNEL] = 2  # it finishes while nobody waits
    kaggle.code.kernel_running = 2
    lines = []
    result = submit_kernel(ws.load(), ws, NAME, "slow", poll_interval=0.01, wait=False, say=lines.append)
    assert result.kernel_version == 1 and len(_calls(kaggle, "SaveKernel")) == 1
    assert any("resuming" in line for line in lines)
    # Once submitted, the same command is a new run: a new version is pushed.
    again = submit_kernel(ws.load(), ws, NAME, "again", poll_interval=0.01, wait=False, say=lambda _: None)
    assert again.kernel_version == 2
