"""Local stand-ins for Kaggle and CodaBench, so tests drive the real clients without touching the internet.

`FakeKaggle` speaks what kagglesdk speaks (POST /api/v1/competitions.CompetitionApiService/<Method>, camelCase JSON,
errors as {"code", "message"}) on 127.0.0.1:7777, where `kagglesdk.KaggleEnv.TEST` points. `FakeCodabench` speaks
the CodaBench REST calls comp uses on a free port. Both record every request so tests can look at what was sent, and
have knobs for the failures the platforms produce (scoring errors, limits, bad credentials, failing uploads).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import re
import threading
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pandas as pd
import pytest
from typer.testing import CliRunner

from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace

KAGGLE_PORT = 7777  # kagglesdk.KaggleEnv.TEST = http://localhost:7777
_SERVICE = "/api/v1/competitions.CompetitionApiService/"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake/1.0"

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, self.path, dict(self.headers), body)
        fake = self.server.fake  # type: ignore[attr-defined]
        with fake.lock:
            fake.requests.append(request)
            status, headers, payload = fake.handle(request)
        if status == 0:  # a dropped connection: no answer at all (the work may have been done)
            self.close_connection = True
            return
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


def _json(status: int, obj: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


class _Server:
    """A threaded HTTP server around a `handle(Request)` method; a context manager."""

    def __init__(self, port: int = 0) -> None:
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.fake = self  # type: ignore[attr-defined]
        self.port = self._httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        # A short poll interval makes shutdown (once per test) fast.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def handle(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------------
# Kaggle


@dataclass
class KaggleSubmission:
    ref: int
    description: str
    file_name: str
    content: bytes
    polls_left: int  # ListSubmissions answers that still show PENDING
    outcome: str  # COMPLETE | ERROR
    public_score: str = ""
    private_score: str = ""
    error: str = ""


@dataclass
class FakeKaggle(_Server):
    """Kaggle's competition API. Accepts Basic `username:key` or Bearer `token`, as set in the fields."""

    username: str = "fake-user"
    key: str = "fake-key"
    token: str = ""
    competitions: set[str] = field(default_factory=lambda: {"toy-comp"})
    rules_not_accepted: set[str] = field(default_factory=set)
    daily_limit: int = 5
    limits_lie: bool = False  # GetSubmissionLimits says yes, CreateSubmission then refuses (400)
    put_failures: int = 0  # the next N upload PUTs answer 500
    create_ref_zero: int = 0  # the next N CreateSubmission calls answer ref 0 "Could not submit"
    pending_polls: int = 2  # a new submission stays PENDING for this many listings
    list_failures: int = 0  # the next N ListSubmissions calls answer 503
    outcome: str = "COMPLETE"
    public_score: str = "0.91234"
    error_text: str = "Submission Scoring Error: your file has 9 rows, the solution 10"
    data_zip: bytes = b""  # DownloadDataFiles serves this
    code_competition: bool = False  # GetCompetition says isKernelsSubmissionsOnly
    no_team: bool = False  # GetSubmissionLimits answers zeros, as for a user with no submission (no team) yet
    limits_failures: int = 0  # the next N GetSubmissionLimits calls answer 500
    busy: int = 0  # the next N competition API calls answer 429 with Retry-After `retry_after`
    retry_after: str = "0"
    create_lost: int = 0  # the next N CreateSubmission calls create the submission, then answer 500
    create_dropped: int = 0  # the next N CreateSubmission calls create it, then drop the connection unanswered
    create_failures: int = 0  # the next N CreateSubmission calls answer 500 without creating anything
    unknown_forbidden: bool = True  # an unknown slug gets 403 "Permission 'competitions.participate' was denied"
    refresh_token: str = ""  # `kaggle auth login`'s refresh token: GenerateAccessToken answers `token` for it
    evaluation_metric: str = ""  # GetCompetition's evaluationMetric (Kaggle's name of the metric)

    def __post_init__(self) -> None:
        _Server.__init__(self, KAGGLE_PORT)
        self.submissions: list[KaggleSubmission] = []
        self.uploads: dict[str, bytes | None] = {}
        self._refs = itertools.count(50_000_001)
        self.code = FakeKaggleCode(self)  # datasets, kernels, code submissions (comp submit --kernel)
        self.upload_names: dict[str, str] = {}  # blob token -> the fileName of StartSubmissionUpload

    def handle(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        if (routed := self.code.route(request)) is not None:
            return routed
        if request.method == "PUT" and request.path.startswith("/upload/"):
            return self._put(request)
        if request.method == "GET" and request.path.startswith("/files/"):
            return 200, {"Content-Type": "application/zip"}, self.data_zip
        if request.path == "/api/v1/users.AccountService/GenerateAccessToken":
            sent = json.loads(request.body or b"{}").get("refreshToken", "")
            if not self.refresh_token or sent != self.refresh_token or request.headers.get("Authorization"):
                return _json(401, {"code": 401, "message": "Invalid refresh token"})
            self.generated = getattr(self, "generated", 0) + 1
            return _json(200, {"token": self.token, "expiresIn": 43200})
        if request.path == "/api/v1/security.OAuthService/IntrospectToken":
            token = json.loads(request.body or b"{}").get("token", "")
            active = bool(self.token) and token == self.token
            return _json(200, {"active": active, "username": self.username if active else ""})
        if not request.path.startswith(_SERVICE):
            return _json(404, {"code": 404, "message": f"no route {request.path}"})
        if not self._authorized(request):
            return _json(401, {"code": 401, "message": "Unauthenticated"})
        method = request.path[len(_SERVICE):]
        body = json.loads(request.body or b"{}")
        slug = body.get("competitionName", "")
        if self.busy > 0:
            self.busy -= 1
            status, headers, payload = _json(429, {"code": 429, "message": "Too many requests"})
            return status, {**headers, "Retry-After": self.retry_after}, payload
        if slug not in self.competitions:
            if self.unknown_forbidden:  # what kaggle.com answers for a mistyped slug
                return _json(403, {"code": 403, "message": "Permission 'competitions.participate' was denied"})
            return _json(404, {"code": 404, "message": f"Competition '{slug}' not found"})
        if slug in self.rules_not_accepted and method != "GetCompetition":
            return _json(403, {"code": 403, "message": "Permission 'competitions.participate' was denied"})
        handler = getattr(self, f"_{method}", None)
        if handler is None:
            return _json(404, {"code": 404, "message": f"no method {method}"})
        return handler(body)

    def _authorized(self, request: Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if self.token:
            return auth == f"Bearer {self.token}"
        expected = base64.b64encode(f"{self.username}:{self.key}".encode()).decode()
        return auth == f"Basic {expected}"

    def _GetCompetition(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        record = {"ref": body["competitionName"], "isKernelsSubmissionsOnly": self.code_competition}
        return _json(200, {**record, "evaluationMetric": self.evaluation_metric} if self.evaluation_metric else record)

    def _made_today(self) -> int:
        return len(self.submissions)

    def _GetSubmissionLimits(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        if self.limits_failures > 0:
            self.limits_failures -= 1
            return _json(500, {"code": 500, "message": "Internal error"})
        if self.no_team and not self.submissions:
            return _json(200, {})  # every count 0 (fields equal to their default are left out)
        allowed = self.daily_limit if self.limits_lie else max(0, self.daily_limit - self._made_today())
        return _json(200, {"numToday": self._made_today(), "numTotal": self._made_today(), "numAllowedNow": allowed})

    def _StartSubmissionUpload(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        token = uuid.uuid4().hex
        self.uploads[token] = None
        self.upload_names[token] = body.get("fileName", "")
        self.last_start = body
        return _json(200, {"token": token, "createUrl": f"{self.base}/upload/{token}"})

    def _put(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        token = request.path.rsplit("/", 1)[-1]
        if self.put_failures > 0:
            self.put_failures -= 1
            return 500, {"Content-Type": "text/plain"}, b"backend error"
        if token not in self.uploads:
            return 404, {"Content-Type": "text/plain"}, b"no such upload"
        self.uploads[token] = request.body
        return 200, {}, b""

    def _CreateSubmission(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        if self._made_today() >= self.daily_limit:
            return _json(400, {"code": 400, "message": "Submission not allowed: your team has used its daily "
                                                       f"Submission allowance ({self.daily_limit}) today"})
        if self.create_failures > 0:
            self.create_failures -= 1
            return _json(500, {"code": 500, "message": "Internal error"})
        token = body.get("blobFileTokens", "")
        content = self.uploads.get(token)
        if content is None or self.create_ref_zero > 0:
            self.create_ref_zero = max(0, self.create_ref_zero - 1)
            return _json(200, {"message": "Could not submit to competition", "ref": 0})
        sub = KaggleSubmission(
            ref=next(self._refs), description=body.get("submissionDescription", ""),
            file_name=self.upload_names.get(token, ""), content=content, polls_left=self.pending_polls,
            outcome=self.outcome,
        )
        self.submissions.append(sub)
        if self.create_lost > 0:  # created, but the answer is lost
            self.create_lost -= 1
            return _json(500, {"code": 500, "message": "Internal error"})
        if self.create_dropped > 0:
            self.create_dropped -= 1
            return 0, {}, b""
        return _json(200, {"message": "Successfully submitted", "ref": sub.ref})

    def _ListSubmissions(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        if self.list_failures > 0:
            self.list_failures -= 1
            return _json(503, {"code": 503, "message": "The service is currently unavailable"})
        listed = []
        for sub in reversed(self.submissions):  # newest first, as Kaggle lists them
            if sub.polls_left > 0:
                sub.polls_left -= 1
                status = "PENDING"
            else:
                status = sub.outcome
            item = {"ref": sub.ref, "description": sub.description, "status": status, "fileName": sub.file_name,
                    "totalBytes": len(sub.content), "date": datetime.now(UTC).isoformat(timespec="seconds")}
            if status == "COMPLETE":
                item.update(publicScore=self.public_score, privateScore=sub.private_score)
            elif status == "ERROR":
                item.update(errorDescription=self.error_text)
            listed.append(item)
        return _json(200, {"submissions": listed})

    def _DownloadDataFiles(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        return 302, {"Location": f"{self.base}/files/{body['competitionName']}.zip"}, b""


class FakeKaggleCode:
    """The code-competition calls of `FakeKaggle` (comp submit --kernel): blob uploads, datasets, kernels and
    CreateCodeSubmission, in kagglesdk's shapes. Knobs for the failures a code submission meets."""

    def __init__(self, fake: FakeKaggle) -> None:
        self.fake = fake
        self.blobs: dict[str, dict[str, Any]] = {}  # token -> {name, size, content}
        self.datasets: dict[str, list[dict[str, Any]]] = {}  # "owner/slug" -> versions (the request bodies)
        self.kernels: dict[str, list[dict[str, Any]]] = {}  # "owner/slug" -> versions (the SaveKernel bodies)
        self.dataset_pending = 1  # GetDatasetStatus answers BLOBS_RECEIVED this many times after an upload
        self.kernel_running = 2  # GetKernelSessionStatus answers RUNNING this many times after a push
        self.kernel_outcome = "COMPLETE"  # or ERROR
        self.kernel_failure = "Your notebook hit an unhandled error while rendering"
        self.kernel_log = [{"stream_name": "stdout", "time": 1.0, "data": "comp kernel: bundle found\n"},
                           {"stream_name": "stderr", "time": 2.0, "data": "CompError: the check failed\n"}]
        self.kernel_outputs = ["submission.csv", "comp-kernel.json"]
        self.kernel_files: dict[str, bytes] = {}  # what GET /out/<name> serves (the kernel's output files)
        self.code_submissions: list[dict[str, Any]] = []
        # Fault modes (each a count of calls still to fail, or a flag), as kaggle.com has shown them:
        self.code_create_lost = 0  # CreateCodeSubmission creates the submission, then answers 500
        self.code_create_failures = 0  # CreateCodeSubmission answers 500 and creates nothing
        self.save_failures = 0  # SaveKernel answers 500 (text/plain when `plain_text` is set)
        self.failed_versions: set[str] = set()  # datasets whose latest version Kaggle failed to process
        self.fail_processing = 0  # the next N uploaded versions end FAILED (then `failed_versions` holds them)
        self.missing_forbidden = False  # GetDatasetStatus answers 403 for a dataset that does not exist (yet)
        self.plain_text = ""  # a 5xx body as a proxy sends it (text/plain), used by the failures above
        self._polls: dict[str, int] = {}

    def route(self, request: Request) -> tuple[int, dict[str, str], bytes] | None:
        path = request.path
        if request.method == "GET" and path.startswith("/out/"):
            name = path.rsplit("/", 1)[-1]
            if name not in self.kernel_files:
                return 404, {"Content-Type": "text/plain"}, b"no such output"
            return 200, {"Content-Type": "application/octet-stream"}, self.kernel_files[name]
        if request.method == "PUT" and path.startswith("/blob/"):
            token = path.rsplit("/", 1)[-1]
            if token not in self.blobs:
                return 404, {}, b"no such blob"
            self.blobs[token]["content"] = request.body
            return 200, {}, b""
        service, _, method = path.removeprefix("/api/v1/").partition("/")
        handler = getattr(self, f"_{method}", None)
        if service not in ("blobs.BlobApiService", "datasets.DatasetApiService", "kernels.KernelsApiService") and \
                not path.endswith("/CreateCodeSubmission"):
            return None
        if not self.fake._authorized(request):
            return _json(401, {"code": 401, "message": "Unauthenticated"})
        if handler is None:
            return _json(404, {"code": 404, "message": f"no method {method}"})
        return handler(json.loads(request.body or b"{}"))

    # -- blobs and datasets
    def _StartBlobUpload(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        token = uuid.uuid4().hex
        self.blobs[token] = {"name": body.get("name"), "size": body.get("contentLength"), "type": body.get("type"),
                             "content": None}
        return _json(200, {"token": token, "createUrl": f"{self.fake.base}/blob/{token}"})

    def _files(self, files: list[dict], directories: list[dict], prefix: str = "") -> dict[str, bytes]:
        out = {}
        for f in files or []:
            blob = self.blobs.get(f.get("token", ""))
            if blob is None or blob["content"] is None:
                raise ValueError(f"token {f.get('token')} was never uploaded")
            out[prefix + blob["name"]] = blob["content"]
        for d in directories or []:
            out.update(self._files(d.get("files", []), d.get("directories", []), f"{prefix}{d['name']}/"))
        return out

    def _new_version(self, ref: str, body: dict) -> tuple[int, dict[str, str], bytes]:
        try:
            files = self._files(body.get("files", []), body.get("directories", []))
        except ValueError as err:
            return _json(200, {"error": str(err)})
        self.datasets.setdefault(ref, []).append({**body, "content": files})
        self._polls[ref] = self.dataset_pending
        self.failed_versions.discard(ref)
        if self.fail_processing > 0:
            self.fail_processing -= 1
            self.failed_versions.add(ref)
        return _json(200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "ok"})

    def _CreateDataset(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        ref = f"{body['ownerSlug']}/{body['slug']}"
        if ref in self.datasets:
            return _json(200, {"error": f"The requested title is already in use by a dataset ({ref})"})
        return self._new_version(ref, body)

    def _CreateDatasetVersion(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        ref = f"{body['ownerSlug']}/{body['datasetSlug']}"
        if ref not in self.datasets:
            return _json(404, {"code": 404, "message": f"Dataset {ref} not found"})
        return self._new_version(ref, body.get("body", {}))

    def _GetDatasetStatus(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        ref = f"{body['ownerSlug']}/{body['datasetSlug']}"
        if ref not in self.datasets:
            if self.missing_forbidden:
                return _json(403, {"code": 403, "message": "Permission 'datasets.get' was denied"})
            return _json(404, {"code": 404, "message": f"Dataset {ref} not found"})
        if self._polls.get(ref, 0) > 0:
            self._polls[ref] -= 1
            return _json(200, {"status": "BLOBS_RECEIVED"})
        return _json(200, {"status": "FAILED" if ref in self.failed_versions else "READY"})

    def _failure(self) -> tuple[int, dict[str, str], bytes]:
        if self.plain_text:
            return 502, {"Content-Type": "text/plain"}, self.plain_text.encode()
        return _json(500, {"code": 500, "message": "Internal error"})

    # -- kernels
    def _SaveKernel(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        if self.save_failures > 0:
            self.save_failures -= 1
            return self._failure()
        ref = body.get("slug", "")
        missing = [s for s in body.get("datasetDataSources", []) if s not in self.datasets]
        comps = [s for s in body.get("competitionDataSources", []) if s not in self.fake.competitions]
        if missing or comps:
            return _json(200, {"invalidDatasetSources": missing, "invalidCompetitionSources": comps})
        self.kernels.setdefault(ref, []).append(body)
        self._polls[ref] = self.kernel_running
        return _json(200, {"ref": f"/code/{ref}", "url": f"https://www.kaggle.com/code/{ref}",
                           "versionNumber": len(self.kernels[ref]), "kernelId": 4242})

    def _kernel(self, body: dict) -> str | None:
        ref = f"{body.get('userName')}/{body.get('kernelSlug')}"
        return ref if ref in self.kernels else None

    def _GetKernelSessionStatus(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        ref = self._kernel(body)
        if ref is None:
            return _json(404, {"code": 404, "message": "Kernel not found"})
        if self._polls.get(ref, 0) > 0:
            self._polls[ref] -= 1
            return _json(200, {"status": "RUNNING"})
        failure = {"failureMessage": self.kernel_failure} if self.kernel_outcome == "ERROR" else {}
        return _json(200, {"status": self.kernel_outcome, **failure})

    def _ListKernelSessionOutput(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        if self._kernel(body) is None:
            return _json(404, {"code": 404, "message": "Kernel not found"})
        files = [] if self.kernel_outcome == "ERROR" else self.kernel_outputs
        return _json(200, {"files": [{"fileName": f, "url": f"{self.fake.base}/out/{f}"} for f in files],
                           "log": json.dumps(self.kernel_log)})

    # -- the code submission (competitions service)
    def _CreateCodeSubmission(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        fake = self.fake
        if body.get("competitionName") not in fake.competitions:
            return _json(404, {"code": 404, "message": f"Competition '{body.get('competitionName')}' not found"})
        ref = f"{body.get('kernelOwner')}/{body.get('kernelSlug')}"
        versions = self.kernels.get(ref, [])
        if not 1 <= int(body.get("kernelVersion", 0)) <= len(versions):
            return _json(400, {"code": 400, "message": f"Kernel {ref} has no version {body.get('kernelVersion')}"})
        if fake._made_today() >= fake.daily_limit:
            return _json(400, {"code": 400, "message": "Submission not allowed: daily Submission allowance used"})
        if self.code_create_failures > 0:
            self.code_create_failures -= 1
            return self._failure()
        self.code_submissions.append(body)
        sub = KaggleSubmission(ref=next(fake._refs), description=body.get("submissionDescription", ""),
                               file_name=body.get("fileName", ""), content=b"", polls_left=fake.pending_polls,
                               outcome=fake.outcome)
        fake.submissions.append(sub)
        if self.code_create_lost > 0:  # created, but the answer is lost
            self.code_create_lost -= 1
            return self._failure()
        return _json(200, {"message": "Successfully submitted", "ref": sub.ref})


# ---------------------------------------------------------------------------------------------------------------
# CodaBench


@dataclass
class FakeCodabench(_Server):
    """CodaBench's REST API for one competition with phases `phases`."""

    username: str = "fake-user"
    password: str = "fake-password"
    token: str = "fake-api-token"
    phases: set[int] = field(default_factory=lambda: {42})
    can_submit: bool = True
    put_failures: int = 0
    pending_polls: int = 2
    outcome: str = "Finished"
    score: float = 0.87
    dataset_key: str = ""  # answer POST /api/datasets/ with this key instead of a fresh UUID
    auth_status: int = 403  # a bad token: DRF answers 403 when SessionAuthentication comes first (as on CodaBench)
    columns: list[tuple[str, float]] = field(default_factory=list)  # leaderboard columns (key, score) by index
    primary_index: int = 0  # the leaderboard's primary column (GET /api/phases/<id>/get_leaderboard/)
    azure: bool = False  # storage URLs are Azure SAS URLs, whose PUT needs x-ms-blob-type: BlockBlob
    children: list[str] = field(default_factory=list)  # a multi-task submission: each child's final status
    get_failures: int = 0  # the next N GET /api/submissions/<id>/ answer 503 with Retry-After 0
    leaderboard_failures: int = 0  # the next N GET .../get_leaderboard/ answer 500

    def __post_init__(self) -> None:
        _Server.__init__(self, 0)
        self.datasets: dict[str, bytes | None] = {}
        self.dataset_meta: dict[str, dict[str, Any]] = {}  # key -> the POST body and its id
        self.deleted: list[int] = []
        self.completed: set[str] = set()
        self.submissions: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(7001)

    def handle(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        path, method = request.path, request.method
        if method == "PUT" and path.startswith("/sassy/"):
            return self._put(request)
        if method == "POST" and path == "/api/api-token-auth/":
            form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
            if form.get("username") == self.username and form.get("password") == self.password:
                return _json(200, {"token": self.token})
            return _json(400, {"non_field_errors": ["Unable to log in with provided credentials."]})
        if method == "GET" and (m := re.fullmatch(r"/api/phases/(\d+)/get_leaderboard/", path)):
            if self.leaderboard_failures > 0:
                self.leaderboard_failures -= 1
                return 500, {"Content-Type": "text/html"}, b"<h1>Server Error (500)</h1>"
            return _json(200, {"id": int(m[1]), "primary_index": self.primary_index, "submissions": []})
        if request.headers.get("Authorization") != f"Token {self.token}":
            return _json(self.auth_status, {"detail": "Invalid token."})
        body = json.loads(request.body or b"{}") if request.body else {}
        if method == "GET" and (m := re.fullmatch(r"/api/can_make_submission/(\d+)/", path)):
            if int(m[1]) not in self.phases:
                return _json(404, {"detail": "Not found."})
            return _json(200, {"can": self.can_submit, "reason": "" if self.can_submit else "You are not approved"})
        if method == "POST" and path == "/api/datasets/":
            key = self.dataset_key or str(uuid.uuid4())
            self.datasets[key] = None
            dataset_id = 300 + len(self.dataset_meta)
            self.dataset_meta[key] = {**body, "id": dataset_id}
            url = f"{self.base}/sassy/{key}" + ("?sv=2018-03-28&sr=b&sig=c2lnbmVk" if self.azure else "")
            return _json(201, {"key": key, "sassy_url": url})  # no id: DataViewSet.create answers only these
        if method == "GET" and (m := re.fullmatch(r"/api/datasets/\?key=([\w-]+)", path)):
            rows = [{"id": meta["id"], "key": k} for k, meta in self.dataset_meta.items() if k == m[1]]
            return _json(200, {"count": len(rows), "results": rows})
        if method == "DELETE" and (m := re.fullmatch(r"/api/datasets/(\d+)/", path)):
            self.deleted.append(int(m[1]))
            return 204, {}, b""

        if method == "PUT" and (m := re.fullmatch(r"/api/datasets/completed/([\w-]+)/", path)):
            if self.datasets.get(m[1]) is None:
                return _json(400, {"detail": "upload not found"})
            self.completed.add(m[1])
            return _json(200, {})
        if method == "POST" and path == "/api/submissions/":
            if body.get("phase") not in self.phases:
                return _json(400, {"phase": ["Invalid pk - object does not exist."]})
            if body.get("data") not in self.completed:
                return _json(400, {"data": ["upload not completed"]})
            sub_id = next(self._ids)
            self.submissions[sub_id] = {"id": sub_id, "polls": self.pending_polls, "data": body["data"],
                                        "description": body.get("description", ""), "phase": body["phase"]}
            if self.children:
                self.submissions[sub_id]["children"] = kids = [next(self._ids) for _ in self.children]
                for kid, outcome in zip(kids, self.children, strict=True):
                    self.submissions[kid] = {"id": kid, "polls": 0, "data": body["data"], "outcome": outcome,
                                             "phase": body["phase"], "parent": sub_id}
            return _json(201, {"id": sub_id, "status": "Submitting"})
        if method == "GET" and (m := re.fullmatch(r"/api/submissions/(\d+)/", path)):
            sub = self.submissions.get(int(m[1]))
            if sub is None:
                return _json(404, {"detail": "Not found."})
            if self.get_failures > 0:
                self.get_failures -= 1
                status, headers, payload = _json(503, {"detail": "Service unavailable"})
                return status, {**headers, "Retry-After": "0"}, payload
            common = {"id": sub["id"], "phase": sub["phase"], "has_children": bool(sub.get("children")),
                      "children": sub.get("children", []), "parent": sub.get("parent")}
            if sub["polls"] > 0:
                sub["polls"] -= 1
                return _json(200, {**common, "status": "Running", "scores": []})
            outcome = sub.get("outcome", self.outcome)
            columns = self.columns or [("accuracy", self.score)]
            scores = ([{"index": j, "column_key": key, "score": value} for j, (key, value) in enumerate(columns)]
                      if outcome == "Finished" else [])
            return _json(200, {**common, "status": outcome, "scores": scores})
        return _json(404, {"detail": f"no route {method} {path}"})

    def _put(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        if self.put_failures > 0:
            self.put_failures -= 1
            return 500, {"Content-Type": "text/plain"}, b"storage error"
        key = request.path.split("?", 1)[0].rsplit("/", 1)[-1]
        if key not in self.datasets:
            return 404, {}, b""
        if self.azure and request.headers.get("x-ms-blob-type") != "BlockBlob":
            return 400, {"Content-Type": "application/xml"}, b"<Error><Code>MissingRequiredHeader</Code></Error>"
        self.datasets[key] = request.body
        return 200, {}, b""

    def zip_members(self, sub_id: int) -> dict[str, bytes]:
        """What the zip of submission `sub_id` holds: {name: bytes}."""
        data = self.datasets[self.submissions[sub_id]["data"]]
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}


# ---------------------------------------------------------------------------------------------------------------
# Fixtures shared by the platform tests (this module is loaded as a plugin by conftest.py: use them by name)


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> Path:
    """No real credentials reachable (empty HOME, platform variables cleared), fast polling, Kaggle env TEST."""
    home = tmp_path / "home"
    home.mkdir()
    # matplotlib keeps its font cache under HOME: an empty HOME would make the ledger plot rebuild it (fc-list)
    monkeypatch.setenv("MPLCONFIGDIR", os.environ.get("MPLCONFIGDIR") or str(Path.home() / ".cache" / "matplotlib"))
    monkeypatch.setenv("HOME", str(home))
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR", "KAGGLE_API_ENVIRONMENT",
                 "CODABENCH_TOKEN", "CODABENCH_USERNAME", "CODABENCH_PASSWORD", "CODABENCH_URL", "CODABENCH_PHASE",
                 "CODABENCH_ZIP_NAME", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMP_KAGGLE_ENV", "TEST")
    monkeypatch.setenv("COLUMNS", "200")  # rich tables unwrapped, so tests can look for values
    monkeypatch.setenv("COMP_POLL_INTERVAL", "0.02")
    monkeypatch.setenv("COMP_RETRY_BACKOFF", "0.01")
    return home


@pytest.fixture
def kaggle(isolated, monkeypatch):
    """A fake Kaggle server (FakeKaggle) with username/key credentials in the environment."""
    monkeypatch.setenv("KAGGLE_USERNAME", "fake-user")
    monkeypatch.setenv("KAGGLE_KEY", "fake-key")
    with FakeKaggle() as server:
        yield server


@pytest.fixture
def toy_workspace(make_kaggle_competition):
    """The factory `toy_workspace(ws, platform="kaggle", name="toy-comp", sidecar=True) -> submission path`: a tiny
    csv-layout competition with comp.toml written by hand, and a valid submissions/first.csv (+ .json)."""

    def make(ws: Path, platform: str = "kaggle", name: str = "toy-comp", sidecar: bool = True) -> Path:
        data = make_kaggle_competition(ws / "data" / "toy", n_per_class=3, n_test=6)
        comp = Competition(
            name=name, platform=platform, data_dir="data/toy", layout="csv", train_dirs=["data/toy/train"],
            labels_csv="data/toy/train.csv", image_ext=".png", test_dir="data/toy/test",
            sample_submission="data/toy/sample_submission.csv", classes=["cat", "dog", "frog"],
            submission_labels=["cat", "dog", "frog"],
        )
        Workspace(ws).save(comp)
        answers = pd.read_csv(data.parent / "toy_answers.csv", dtype=str)
        (ws / "submissions").mkdir(exist_ok=True)
        answers.to_csv(ws / "submissions" / "first.csv", index=False)
        if sidecar:
            sidecar_json = {"models": ["a", "b"], "method": "mean", "cv": 0.9}
            (ws / "submissions" / "first.json").write_text(json.dumps(sidecar_json))
        return ws / "submissions" / "first.csv"

    return make


def run_cli(*args: str) -> tuple[int, str]:
    """Run `comp ARGS` in-process; returns (exit code, everything printed + the CompError message main would print).
    Any other exception is a bug and is raised."""
    from comp.cli import app

    result = CliRunner().invoke(app, list(args))
    text = result.output
    if isinstance(result.exception, CompError):
        text += "\nerror: " + str(result.exception)
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, text
