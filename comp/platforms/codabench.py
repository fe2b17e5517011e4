"""CodaBench: zip a CSV the way a results competition expects, upload it through the REST API, poll its score.

The API is Django REST Framework under `<base>/api/` (base `CODABENCH_URL`, https://www.codabench.org by default):
a token from `POST /api/api-token-auth/` (or `CODABENCH_TOKEN`), then `POST /api/datasets/` -> PUT the zip to the
returned `sassy_url` -> `PUT /api/datasets/completed/<key>/` -> `POST /api/submissions/ {phase, data: key}` ->
poll `GET /api/submissions/<id>/`. The phase id comes from `--phase`, else `CODABENCH_PHASE`, else comp.toml's
`codabench_phase` (the number in the competition page's "My Submissions" URL or `GET /api/competitions/<id>/`).

What the server does, read from its source (codalab/codabench): a submission's `description` is read-only in the
creation serializer, so the API cannot set it; comp sends the message as the uploaded file's (dataset's)
description and keeps it in the ledger. The score recorded is the leaderboard's primary column
(`GET /api/phases/<id>/get_leaderboard/` -> `primary_index`, matched to each score's `index`), not the first
column. A multi-task submission is a parent that turns "Finished" once every child is done, failed or not: the
children are read too. Authentication failures come back as 403 (SessionAuthentication is tried first), not 401.
"""

from __future__ import annotations

import io
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from comp.core.errors import CompError
from comp.platforms.base import RETRY_STATUS, Remote, env_float, redact, retry_after, safe_name, with_retries

DEFAULT_URL = "https://www.codabench.org"
DEFAULT_ZIP_NAME = "prediction.csv"  # what NYCU-style results competitions read at the zip root
_FINAL = {"Finished": "complete", "Failed": "error", "Cancelled": "error"}
_CREDENTIALS_HELP = (
    "set CODABENCH_TOKEN (your API token), or CODABENCH_USERNAME and CODABENCH_PASSWORD, in the environment"
)
_PHASE_HELP = (
    "pass --phase ID or set CODABENCH_PHASE (the phase's id: GET /api/competitions/<competition id>/ lists them)"
)
_KEY = re.compile(r"^[A-Za-z0-9-]{1,100}$")  # dataset keys are UUIDs; submission ids integers
# DRF's answers to a bad or missing token (403 with SessionAuthentication first, else 401)
_AUTH_FAILED = ("invalid token", "authentication credentials were not provided", "token has expired",
                "incorrect authentication credentials", "user inactive or deleted")
_DESCRIPTION_NOTE = ("CodaBench's API keeps no submission description: the message is stored as the uploaded "
                     "file's description and in the ledger")


def make_zip(csv_path: Path, name: str = DEFAULT_ZIP_NAME) -> bytes:
    """The CSV stored at the zip's root under `name` (no folders: the scoring program looks at the root)."""
    safe_name(name, "name of the file inside the zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(csv_path, arcname=name)
    return buffer.getvalue()


class CodabenchBackend:
    """Submissions to one CodaBench phase (holds the HTTP session and its token)."""

    platform = "codabench"

    def __init__(
        self,
        phase: str,
        base_url: str = DEFAULT_URL,
        token: str = "",
        username: str = "",
        password: str = "",
        zip_name: str = DEFAULT_ZIP_NAME,
        retries: int = 3,
        backoff: float = 2.0,
        timeout: float = 60.0,
    ) -> None:
        import requests

        if phase and not str(phase).isdigit():
            raise CompError(f"CodaBench phase id {phase!r} is not a number; {_PHASE_HELP}")
        if not token and not (username and password):
            raise CompError(f"no CodaBench credentials found; {_CREDENTIALS_HELP}")
        self.phase = str(phase)
        self.base_url = base_url.rstrip("/")
        self.zip_name = safe_name(zip_name, "name of the file inside the zip")
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._username, self._password, self._token = username, password, token
        self.source = "CODABENCH_TOKEN" if token else "CODABENCH_USERNAME/CODABENCH_PASSWORD"
        self._session = requests.Session()
        self._primary: dict[str, int | None] = {}  # phase id -> its leaderboard's primary column index

    @classmethod
    def from_env(cls, phase: str = "", zip_name: str = "", toml_phase: str = "",
                 toml_zip_name: str = "") -> CodabenchBackend:
        """Settings in the order a user expects: the command line, then the environment, then comp.toml."""
        env = os.environ
        return cls(
            phase=phase or env.get("CODABENCH_PHASE", "") or toml_phase,
            base_url=env.get("CODABENCH_URL") or DEFAULT_URL,
            token=env.get("CODABENCH_TOKEN", ""),
            username=env.get("CODABENCH_USERNAME", ""),
            password=env.get("CODABENCH_PASSWORD", ""),
            zip_name=zip_name or env.get("CODABENCH_ZIP_NAME") or toml_zip_name or DEFAULT_ZIP_NAME,
            backoff=env_float("COMP_RETRY_BACKOFF", 2.0),
        )

    # -- the Backend protocol
    def describe(self) -> list[str]:
        phase = self.phase or "(none: pass --phase)"
        return [
            f"CodaBench {self.base_url} phase {phase}, the CSV zipped as {self.zip_name} at the zip root, "
            f"with the credential from {self.source}",
            _DESCRIPTION_NOTE,
        ]

    def preflight(self) -> str:
        if not self.phase:
            raise CompError(f"no CodaBench phase to submit to; {_PHASE_HELP}")
        answer = self._json("GET", f"/api/can_make_submission/{self.phase}/", "checking you may submit", retry=True)
        if not answer.get("can", False):
            reason = self._redact(str(answer.get("reason") or "no reason given"))
            raise CompError(f"CodaBench does not let you submit to phase {self.phase} now: {reason}; nothing was sent")
        return f"CodaBench: phase {self.phase} accepts your submission ({_DESCRIPTION_NOTE})"

    def upload(self, path: Path, message: str) -> str:
        """One dataset per submission: its PUT is retried to the same storage URL (a new dataset per attempt would
        leave orphans counting against the user's quota), and deleted when every attempt failed."""
        if not self.phase:
            raise CompError(f"no CodaBench phase to submit to; {_PHASE_HELP}")
        data = make_zip(Path(path), self.zip_name)
        dataset = self._json(
            "POST", "/api/datasets/", "creating the upload",
            json={"type": "submission", "request_sassy_file_name": "submission.zip", "file_size": len(data),
                  "description": message[:1000]},
        )
        key, url = str(dataset.get("key", "")), str(dataset.get("sassy_url", ""))
        if not _KEY.match(key) or not url.startswith(("http://", "https://")):
            raise CompError("CodaBench answered the upload request without a usable key/URL; try again later")
        why = ""
        for n in range(1, self.retries + 1):
            why = self._put(url, data)
            if not why:
                break
            if n < self.retries:
                time.sleep(self.backoff * 2 ** (n - 1))
        if why:
            self._delete_dataset(key)
            raise CompError(f"the upload to CodaBench failed after {self.retries} attempts ({why}); nothing was "
                            "submitted and nothing recorded. Check your network and run the command again")
        self._json("PUT", f"/api/datasets/completed/{key}/", "finishing the upload", retry=True)
        created = self._json("POST", "/api/submissions/", "creating the submission",
                             json={"phase": int(self.phase), "data": key, "tasks": []})
        ref = str(created.get("id", ""))
        if not ref.isdigit():
            raise CompError("CodaBench accepted the upload but returned no submission id; check its website")
        return ref

    def status(self, ref: str) -> Remote | None:
        if not str(ref).isdigit():
            raise CompError(f"CodaBench submission id {ref!r} is not a number; was the ledger edited by hand?")
        answer = self._json("GET", f"/api/submissions/{ref}/", "reading the submission", retry=True)
        raw = str(answer.get("status", ""))
        status = _FINAL.get(raw, "pending")
        error = f"CodaBench status {raw}; open the submission's logs on CodaBench" if status == "error" else ""
        if status == "complete" and (answer.get("has_children") or answer.get("children")):
            failed = self._failed_children(answer.get("children") or [])
            if failed:
                status, error = "error", (f"CodaBench finished the submission but its task run(s) {failed} "
                                          "failed; open their logs on CodaBench")
        public = self._primary_score(answer) if status == "complete" else ""
        return Remote(ref=str(ref), status=status, public_score=public, error=error)

    # -- scores and children
    def _primary_score(self, answer: dict[str, Any]) -> str:
        """The leaderboard's primary column. With several columns and a leaderboard that cannot be read (or names
        a column the submission lacks), that is an error: picking a column would record a number that is not the
        rank's."""
        scores = [s for s in answer.get("scores") or [] if isinstance(s, dict)]
        if not scores:
            return ""
        if len(scores) == 1:
            return str(scores[0].get("score", ""))
        phase = str(answer.get("phase", "") or self.phase)
        primary = self._primary_index(phase)
        chosen = [s for s in scores if primary is not None and s.get("index") == primary]
        if not chosen:
            columns = ", ".join(f"{s.get('column_key', s.get('index'))}={s.get('score')}" for s in scores)
            why = ("its leaderboard could not be read" if primary is None
                   else f"the leaderboard's primary column {primary} is not among them")
            raise CompError(
                f"CodaBench scored submission {answer.get('id')} in several columns ({columns}) but {why} (GET "
                f"/api/phases/{phase}/get_leaderboard/); no score recorded. Run `comp submissions --refresh` later"
            )
        return str(chosen[0].get("score", ""))

    def _primary_index(self, phase: str) -> int | None:
        if not phase.isdigit():
            return None
        if phase not in self._primary:
            try:
                board = self._json("GET", f"/api/phases/{phase}/get_leaderboard/", "reading the leaderboard",
                                   retry=True)
            except CompError:
                board = {}
            index = board.get("primary_index")
            self._primary[phase] = index if isinstance(index, int) else None
        return self._primary[phase]

    def _failed_children(self, children: list[Any]) -> list[str]:
        failed = []
        for child in children:
            child_id = child.get("id") if isinstance(child, dict) else child
            if not str(child_id).isdigit():
                continue
            answer = self._json("GET", f"/api/submissions/{child_id}/", "reading a task's submission", retry=True)
            if _FINAL.get(str(answer.get("status", ""))) == "error":
                failed.append(f"{child_id} ({answer.get('status')})")
        return failed

    def _delete_dataset(self, key: str) -> None:
        """Best effort: a failed upload's dataset would otherwise stay in the user's storage quota. The create call
        answers only {key, sassy_url}; the dataset's id (what DELETE takes) is looked up by that key."""
        try:
            found = self._json("GET", f"/api/datasets/?key={key}", "finding the failed upload", retry=True)
            rows = found.get("results", []) if isinstance(found, dict) else found
            ids = [r.get("id") for r in rows or [] if isinstance(r, dict) and r.get("key") == key]
            for dataset_id in ids:
                if str(dataset_id).isdigit():
                    self._request("DELETE", f"/api/datasets/{dataset_id}/", "removing the failed upload")
        except CompError:
            pass

    # -- HTTP
    def _auth_header(self) -> dict[str, str]:
        if not self._token:
            answer = self._request(
                "POST", "/api/api-token-auth/", "logging in",
                data={"username": self._username, "password": self._password}, auth=False,
            )
            self._token = str(answer.get("token", ""))
            if not self._token:
                raise CompError(f"CodaBench answered the login without a token; {_CREDENTIALS_HELP}")
        return {"Authorization": f"Token {self._token}"}

    def _json(self, method: str, path: str, what: str, retry: bool = False, **kwargs: Any) -> dict[str, Any]:
        """A JSON call; `retry` for calls safe to repeat (GET, the idempotent PUT): 429/5xx and dropped connections
        are retried with backoff, honouring Retry-After. Creating calls (POST) are sent once."""
        if not retry:
            return self._request(method, path, what, **kwargs)

        def transient(err: BaseException) -> float | None:
            if isinstance(err, _Transient):
                return err.wait
            return None

        try:
            return with_retries(lambda: self._request(method, path, what, transient=True, **kwargs), transient,
                                self.retries, self.backoff)
        except _Transient as err:
            raise err.error from None

    def _request(self, method: str, path: str, what: str, auth: bool = True, transient: bool = False,
                 **kwargs: Any) -> dict[str, Any]:
        import requests

        headers = self._auth_header() if auth else {}
        try:
            response = self._session.request(
                method, self.base_url + path, headers=headers, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as err:
            error = CompError(
                f"could not reach CodaBench at {self.base_url} while {what} ({type(err).__name__}); check the network "
                "and CODABENCH_URL, then run the command again"
            )
            if transient and isinstance(err, requests.ConnectionError | requests.Timeout):
                raise _Transient(error, 0.0) from None
            raise error from None
        if response.status_code >= 400:
            if transient and response.status_code in RETRY_STATUS:
                raise _Transient(self._http_error(what, response), retry_after(response))
            raise self._http_error(what, response)
        try:
            body = response.json() if response.content else {}
        except ValueError:
            raise CompError(f"CodaBench answered {what} with something other than JSON; is CODABENCH_URL right?") \
                from None
        return body if isinstance(body, dict) else {"results": body}

    def _http_error(self, what: str, response: Any) -> CompError:
        code = response.status_code
        text = self._redact(response.text[:300].strip())
        if code in (400, 401) and what == "logging in":
            why = f"CodaBench rejected the username/password ({code}); {_CREDENTIALS_HELP}"
        elif code == 401 or (code == 403 and any(w in text.lower() for w in _AUTH_FAILED)):
            why = f"CodaBench rejected the credential from {self.source} ({code}: {text}); {_CREDENTIALS_HELP}"
        elif code == 403:
            why = f"CodaBench refused (403: {text}); register for the competition and wait for approval"
        elif code == 404:
            why = f"CodaBench has no such resource (404) — is phase {self.phase} right? (--phase / CODABENCH_PHASE)"
        else:
            why = f"CodaBench answered {code} ({text})"
        return CompError(f"{why} (while {what})")

    def _put(self, url: str, data: bytes) -> str:
        import requests

        headers = {"Content-Type": "application/zip"}
        if _is_azure(url):  # Azure Blob storage refuses a PUT without these (CodaBench's own page sends them)
            headers.update({"x-ms-blob-type": "BlockBlob", "x-ms-version": "2018-03-28"})
        try:
            # The sassy URL is pre-signed storage: it must not receive the API token.
            answer = requests.put(url, data=data, headers=headers, timeout=300)
        except requests.RequestException as err:
            return f"upload PUT failed: {type(err).__name__}"
        return "" if answer.status_code in (200, 201, 204) else f"upload PUT answered HTTP {answer.status_code}"

    def _redact(self, text: str) -> str:
        return redact(text, [self._token, self._password])


class _Transient(Exception):
    """A CompError from a call that may pass when repeated, with the seconds the server asked to wait."""

    def __init__(self, error: CompError, wait: float) -> None:
        super().__init__(str(error))
        self.error, self.wait = error, wait


def _is_azure(url: str) -> bool:
    """An Azure Blob SAS URL (CodaBench instances on Azure storage): the host, or the SAS query's sv= and sig=."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return parts.hostname is not None and (parts.hostname.endswith(".blob.core.windows.net")
                                           or ("sv" in query and "sig" in query))
