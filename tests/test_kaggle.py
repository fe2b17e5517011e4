"""`comp submit` / `comp submissions` / `comp download` against a Kaggle-compatible server on 127.0.0.1:7777,
driven through the real kagglesdk client (COMP_KAGGLE_ENV=TEST)."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import pandas as pd
import pytest
from fake_servers import FakeKaggle, run_cli

from comp.core.workspace import Workspace
from comp.platforms.kaggle import KaggleBackend, KaggleCredential
from comp.submission import ledger


def _calls(server: FakeKaggle, method: str) -> list:
    return [r for r in server.requests if r.path.endswith("/" + method)]


def test_submit_pending_then_complete_records_score(toy_workspace, kaggle, workspace):
    csv = toy_workspace(workspace)
    code, out = run_cli("submit", "-m", "two-model mean")
    assert code == 0, out
    assert "0.91234" in out and "submission(s) left today" in out
    # The three upload steps, in order, with the file's bytes; the signed PUT carries no credential.
    start = json.loads(_calls(kaggle, "StartSubmissionUpload")[0].body)
    assert start["competitionName"] == "toy-comp" and start["fileName"] == "first.csv"
    assert start["contentLength"] == csv.stat().st_size
    put = [r for r in kaggle.requests if r.method == "PUT"]
    assert len(put) == 1 and put[0].body == csv.read_bytes() and "Authorization" not in put[0].headers
    assert kaggle.submissions[0].description == "two-model mean"
    assert len(_calls(kaggle, "ListSubmissions")) >= 3  # PENDING twice, then COMPLETE
    row = ledger.read(Workspace(workspace)).iloc[0]
    assert row["ref"] == str(kaggle.submissions[0].ref) and row["status"] == "complete"
    assert row["public_score"] == "0.91234" and row["file"] == "submissions/first.csv"
    assert (row["models"], row["method"], row["cv"]) == ("a;b", "mean", "0.9")
    assert len(row["sha256"]) == 64


def test_scoring_error_shows_kaggles_text(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    kaggle.outcome = "ERROR"
    code, out = run_cli("submit", "-m", "bad rows")
    assert code == 1
    assert "Submission Scoring Error" in out
    assert ledger.read(Workspace(workspace)).iloc[0]["status"] == "error"


def test_daily_limit_refuses_before_uploading(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    kaggle.daily_limit = 1
    assert run_cli("submit", "-m", "the one allowed", "--no-wait")[0] == 0
    code, out = run_cli("submit", "-m", "one too many")
    assert code == 1 and "00:00 UTC" in out and "(1 made today)" in out
    assert len(_calls(kaggle, "StartSubmissionUpload")) == 1
    assert len(ledger.read(Workspace(workspace))) == 1


def test_a_first_submission_is_not_blocked_by_zero_limits(toy_workspace, kaggle, workspace):
    """kagglesdk documents zero counts from GetSubmissionLimits for a user not on a team yet."""
    toy_workspace(workspace)
    kaggle.no_team = True
    code, out = run_cli("submit", "-m", "my first", "--no-wait")
    assert code == 0, out
    assert "no submission made yet" in out and len(kaggle.submissions) == 1


def test_a_failing_limits_call_does_not_stop_the_submit(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    kaggle.limits_failures = 99
    code, out = run_cli("submit", "-m", "anyway", "--no-wait")
    assert code == 0, out
    assert "could not read the submission limits" in out and len(kaggle.submissions) == 1
    assert len(_calls(kaggle, "GetSubmissionLimits")) == 3  # retried as an idempotent call, then let go


@pytest.mark.parametrize("knob", ["create_lost", "create_dropped"])
def test_a_lost_create_answer_is_looked_up_not_submitted_twice(toy_workspace, kaggle, workspace, knob):
    """A 500 or a dropped connection after CreateSubmission may hide a created submission: the listing is read
    (same description, file name and size, newest first) and the one found is recorded."""
    toy_workspace(workspace)
    setattr(kaggle, knob, 1)
    code, out = run_cli("submit", "-m", "exactly once", "--no-wait")
    assert code == 0, out
    assert len(kaggle.submissions) == 1 and len(_calls(kaggle, "CreateSubmission")) == 1
    listing = json.loads(_calls(kaggle, "ListSubmissions")[0].body)
    assert (listing["page"], listing["pageSize"]) == (1, 20)  # as the official client asks
    row = ledger.read(Workspace(workspace)).iloc[0]
    assert row["ref"] == str(kaggle.submissions[0].ref) and row["status"] == "pending"


def test_a_create_that_failed_before_creating_is_retried(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    kaggle.create_failures = 1
    code, out = run_cli("submit", "-m", "second try", "--no-wait")
    assert code == 0, out
    assert len(kaggle.submissions) == 1 and len(_calls(kaggle, "CreateSubmission")) == 2


def test_429_is_retried_after_the_servers_retry_after(toy_workspace, kaggle, workspace):
    import time

    toy_workspace(workspace)
    kaggle.busy, kaggle.retry_after = 1, "1"
    start = time.monotonic()
    code, out = run_cli("submit", "-m", "patient", "--no-wait")
    assert code == 0, out
    assert time.monotonic() - start >= 1.0  # COMP_RETRY_BACKOFF is 0.01 s here: the wait is the server's
    kaggle.busy, kaggle.retry_after = 99, "0"
    code, out = run_cli("submissions", "--refresh")
    assert code == 1 and "429" in out and "3 times" in out


def test_daily_limit_from_create_submission(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    kaggle.daily_limit, kaggle.limits_lie = 1, True
    assert run_cli("submit", "-m", "first", "--no-wait")[0] == 0
    code, out = run_cli("submit", "-m", "second", "--no-wait")
    assert code == 1 and "limit" in out and "allowance (1)" in out
    assert len(ledger.read(Workspace(workspace))) == 1  # the refused one left no row


def test_unknown_competition(toy_workspace, kaggle, workspace):
    toy_workspace(workspace, name="no-such-comp")
    code, out = run_cli("submit", "-m", "x")
    # kaggle.com answers a mistyped slug with 403 "Permission 'competitions.participate' was denied"
    assert code == 1 and "competitions.participate" in out
    assert "`name` in comp.toml" in out and "'no-such-comp'" in out and "no-such-comp/rules" in out
    assert not Workspace(workspace).ledger.exists()
    kaggle.unknown_forbidden = False  # a server that says 404
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "no competition 'no-such-comp' (404)" in out


def test_code_competition_refuses_a_csv_upload(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    kaggle.code_competition = True
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "code competition" in out and not _calls(kaggle, "StartSubmissionUpload")


def test_rules_not_accepted(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    kaggle.rules_not_accepted.add("toy-comp")
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "accept the competition's rules at https://www.kaggle.com/competitions/toy-comp/rules" in out
    assert "`name` in comp.toml" not in out  # GetCompetition knows the competition: only the rules are missing


def test_bad_credentials(toy_workspace, kaggle, workspace, monkeypatch):
    toy_workspace(workspace)
    monkeypatch.setenv("KAGGLE_KEY", "wrong-key-7f3a9")
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "rejected the credential from KAGGLE_USERNAME/KAGGLE_KEY (401)" in out
    assert "wrong-key-7f3a9" not in out


def test_failed_upload_is_retried_then_refused(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    kaggle.put_failures = 99
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "failed after 3 attempts" in out and "HTTP 500" in out
    assert len([r for r in kaggle.requests if r.method == "PUT"]) == 3
    assert not _calls(kaggle, "CreateSubmission") and not Workspace(workspace).ledger.exists()


def test_transient_failures_pass_on_retry(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    kaggle.put_failures, kaggle.create_ref_zero = 1, 1  # a failed PUT, then "Could not submit" (ref 0)
    code, out = run_cli("submit", "-m", "x", "--no-wait")
    assert code == 0, out
    assert len(kaggle.submissions) == 1 and len(_calls(kaggle, "CreateSubmission")) == 2


def test_ref_zero_every_time_is_a_failure(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    kaggle.create_ref_zero = 99
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "ref 0: Could not submit to competition" in out
    assert not Workspace(workspace).ledger.exists()


def test_error_while_polling_keeps_the_submission_in_the_ledger(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    kaggle.list_failures = 3  # one 503 would be retried away; three outlast the retries
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "went through" in out and "503" in out
    assert ledger.read(Workspace(workspace)).iloc[0]["status"] == "pending"
    kaggle.submissions[0].polls_left = 0
    assert run_cli("submissions", "--refresh")[0] == 0
    assert ledger.read(Workspace(workspace)).iloc[0]["status"] == "complete"


def test_no_wait_then_refresh_pulls_the_score_and_plots(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    assert run_cli("submit", "-m", "later", "--no-wait")[0] == 0
    ws = Workspace(workspace)
    assert ledger.read(ws).iloc[0]["status"] == "pending"
    kaggle.submissions[0].polls_left = 0
    code, out = run_cli("submissions", "--refresh")
    assert code == 0 and "1 row(s) changed" in out
    assert ledger.read(ws).iloc[0]["public_score"] == "0.91234"
    assert ws.ledger_plot.read_bytes()[:4] == b"\x89PNG"


def test_wait_timeout_leaves_a_pending_row(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    kaggle.pending_polls = 10_000
    code, out = run_cli("submit", "-m", "slow", "--timeout", "0.1")
    assert code == 0 and "still being scored" in out
    assert ledger.read(Workspace(workspace)).iloc[0]["status"] == "pending"


def test_dry_run_uses_no_network(toy_workspace, kaggle, workspace):
    toy_workspace(workspace)
    code, out = run_cli("submit", "-m", "look first", "--dry-run")
    assert code == 0 and "first.csv" in out and "KAGGLE_USERNAME/KAGGLE_KEY" in out
    assert kaggle.requests == [] and not Workspace(workspace).ledger.exists()


def test_invalid_file_is_refused_before_any_request(toy_workspace, kaggle, workspace):
    csv = toy_workspace(workspace)
    frame = pd.read_csv(csv, dtype=str)
    frame.iloc[1:].to_csv(csv, index=False)  # one id missing
    code, out = run_cli("submit", str(csv), "-m", "x")
    assert code == 1 and "failed the check" in out
    assert kaggle.requests == []


def test_no_credentials_says_where_to_put_them(toy_workspace, isolated, workspace):
    toy_workspace(workspace)
    code, out = run_cli("submit", "-m", "x")
    assert code == 1 and "no Kaggle credentials" in out and "~/.kaggle/access_token" in out


def test_unreachable_kaggle_gives_a_network_message(toy_workspace, isolated, workspace, monkeypatch):
    toy_workspace(workspace)
    monkeypatch.setenv("KAGGLE_API_TOKEN", "some-token-value")
    code, out = run_cli("submit", "-m", "x")  # nothing listens on 7777 here
    assert code == 1 and "could not reach Kaggle" in out
    assert not Workspace(workspace).ledger.exists()


def test_an_invalid_token_falls_back_to_kaggle_json(toy_workspace, isolated, workspace, monkeypatch):
    """As the official client: the token is introspected first; when Kaggle calls it inactive, kaggle.json is used,
    and from then on only that credential is sent (never the bad token as Bearer)."""
    toy_workspace(workspace)
    (isolated / ".kaggle").mkdir()
    (isolated / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "fake-user", "key": "fake-key"}))
    monkeypatch.setenv("KAGGLE_API_TOKEN", "expired-token-1234")
    with FakeKaggle() as server:
        code, out = run_cli("submit", "-m", "after fallback", "--no-wait")
        assert code == 0, out
        assert "KAGGLE_API_TOKEN is invalid or expired; using" in out and "kaggle.json" in out
        (introspect, *rest) = server.requests
        assert introspect.path.endswith("/IntrospectToken")
        assert rest and all("Bearer" not in r.headers.get("Authorization", "") for r in rest)
        assert len(server.submissions) == 1
    (isolated / ".kaggle" / "kaggle.json").unlink()
    with FakeKaggle():
        code, out = run_cli("submit", "-m", "no fallback")
        assert code == 1 and "invalid or expired" in out and "expired-token-1234" not in out


def test_token_is_sent_as_the_only_credential(isolated, workspace):
    with FakeKaggle(token="tok-123456") as server:
        backend = KaggleBackend("toy-comp", KaggleCredential(source="test", token="tok-123456"))
        assert "left today" in backend.preflight()
        assert server.requests[-1].headers["Authorization"] == "Bearer tok-123456"
    with FakeKaggle() as server:
        backend = KaggleBackend("toy-comp", KaggleCredential(source="t", username="fake-user", key="fake-key"))
        backend.preflight()
        expected = base64.b64encode(b"fake-user:fake-key").decode()
        assert server.requests[-1].headers["Authorization"] == f"Basic {expected}"


def _bundle(tmp_path, make_kaggle_competition) -> bytes:
    """A Kaggle-style bundle: sample + labels at the root, images inside train.zip / test.zip."""
    data = make_kaggle_competition(tmp_path / "bundle", n_per_class=3, n_test=6)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as outer:
        outer.write(data / "train.csv", "train.csv")
        outer.write(data / "sample_submission.csv", "sample_submission.csv")
        for part in ("train", "test"):
            inner = io.BytesIO()
            with zipfile.ZipFile(inner, "w") as archive:
                for image in sorted((data / part).iterdir()):
                    archive.write(image, f"{part}/{image.name}")
            outer.writestr(f"{part}.zip", inner.getvalue())
    return buffer.getvalue()


def test_download_unzips_and_inits(make_kaggle_competition, kaggle, workspace, tmp_path):
    kaggle.data_zip = _bundle(tmp_path, make_kaggle_competition)
    code, out = run_cli("download", "--competition", "toy-comp")
    assert code == 0, out
    folder = workspace / "data" / "toy-comp"
    assert (folder / "train.csv").is_file() and len(list((folder / "train").glob("*.png"))) == 9
    assert not list(folder.glob("*.zip")) and not list((workspace / "data").glob(".*"))  # no temp files left
    comp = Workspace(workspace).load()
    assert comp.platform == "kaggle" and comp.name == "toy-comp" and comp.num_classes == 3


def test_download_takes_the_metric_from_kaggles_record(make_kaggle_competition, kaggle, workspace, tmp_path):
    kaggle.data_zip = _bundle(tmp_path, make_kaggle_competition)
    kaggle.evaluation_metric = "Quadratic Weighted Kappa"
    code, out = run_cli("download", "--competition", "toy-comp")
    assert code == 0, out
    assert Workspace(workspace).load().metric == "qwk"
    assert "from Kaggle's competition record ('Quadratic Weighted Kappa')" in out


@pytest.mark.parametrize("named, metric, said", [
    ("MacroFScore", "f1_macro", "from Kaggle's competition record ('MacroFScore')"),
    ("Multiclass Loss", "log_loss", "from Kaggle's competition record"),
    ("MAP@{K}", "map@k", "from Kaggle's competition record"),
    ("Mean Average Precision @ 5", "map@5", "from Kaggle's competition record"),
    ("Intersection over Union", "accuracy", "names the metric 'Intersection over Union', which comp does not"),
    ("", "accuracy", "is a guess from the kind"),
])
def test_init_competition_names_where_the_metric_came_from(named, metric, said, kaggle, kaggle_data, workspace):
    kaggle.evaluation_metric = named
    code, out = run_cli("init", str(kaggle_data), "--competition", "toy-comp")
    assert code == 0, out
    comp = Workspace(workspace).load()
    assert (comp.metric, comp.platform, comp.name) == (metric, "kaggle", "toy-comp")
    assert said in " ".join(out.split())


def test_init_without_kaggle_says_the_metric_is_a_guess(isolated, kaggle_data, workspace):
    code, out = run_cli("init", str(kaggle_data), "--competition", "toy-comp")  # no credentials: no record
    assert code == 0, out
    text = " ".join(out.split())
    assert "could not be read" in text and "is a guess from the kind" in text and "--metric NAME" in text


def test_download_refuses_unsafe_or_occupied_targets(kaggle, workspace, tmp_path):
    code, out = run_cli("download", "--competition", "../escape")
    assert code == 1 and "not a plain name" in out
    (workspace / "data" / "toy-comp").mkdir(parents=True)
    (workspace / "data" / "toy-comp" / "keep.txt").write_text("mine")
    code, out = run_cli("download", "--competition", "toy-comp")
    assert code == 1 and "not empty" in out and kaggle.requests == []


def test_failed_download_leaves_nothing(kaggle, workspace):
    kaggle.data_zip = b"this is not a zip"
    code, out = run_cli("download", "--competition", "toy-comp")
    assert code == 1 and "not a zip" in out
    assert not (workspace / "data").exists() or list((workspace / "data").iterdir()) == []


def test_download_before_accepting_rules(kaggle, workspace):
    kaggle.rules_not_accepted.add("toy-comp")
    code, out = run_cli("download", "--competition", "toy-comp")
    assert code == 1 and "toy-comp/rules" in out
    assert not (workspace / "data").exists() or list((workspace / "data").iterdir()) == []


def test_retry_after_reads_seconds_and_http_dates_and_with_retries_stops_on_final_errors():
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime
    from types import SimpleNamespace

    from comp.platforms.base import retry_after, with_retries

    def answer(value: str) -> SimpleNamespace:
        return SimpleNamespace(headers={"Retry-After": value})

    assert retry_after(answer("7")) == 7.0 and retry_after(answer("")) == 0.0 and retry_after(answer("soon")) == 0.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < retry_after(answer(later)) <= 30
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("dropped")
        return "ok"

    assert with_retries(flaky, lambda err: 0.0, retries=3, backoff=0.001) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(ValueError):
        with_retries(lambda: calls.append(1) or (_ for _ in ()).throw(ValueError("final")), lambda err: None, 3, 0.001)
    assert len(calls) == 1  # a final error is not repeated
