"""CodaBench: zip a CSV the way a results competition expects, upload it through the REST API, poll its score.

The API is Django REST Framework under `<base>/api/` (base `CODABENCH_URL`, https://www.codabench.org by default):
a token from `POST /api/api-token-auth/` (or `CODABENCH_TOKEN`), then `POST /api/datasets/` -> PUT the zip to the
returned `sassy_url` -> `PUT /api/datasets/completed/<key>/` -> `POST /api/submissions/ {phase, data: key}` ->
poll `GET /api/submissions/<id>/`. comp.toml has no phase field: the phase id comes from `--phase` or
`CODABENCH_PHASE` (the number in the competition page's "My Submissions" URL or `GET /api/competitions/<id>/`).
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any

from comp.core.errors import CompError
from comp.platforms.base import Remote, env_float, redact, safe_name, upload_with_retries

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

    @classmethod
    def from_env(cls, phase: str = "", zip_name: str = "") -> CodabenchBackend:
        env = os.environ
        return cls(
            phase=phase or env.get("CODABENCH_PHASE", ""),
            base_url=env.get("CODABENCH_URL") or DEFAULT_URL,
            token=env.get("CODABENCH_TOKEN", ""),
            username=env.get("CODABENCH_USERNAME", ""),
            password=env.get("CODABENCH_PASSWORD", ""),
            zip_name=zip_name or env.get("CODABENCH_ZIP_NAME") or DEFAULT_ZIP_NAME,
            backoff=env_float("COMP_RETRY_BACKOFF", 2.0),
        )

    # -- the Backend protocol
    def describe(self) -> list[str]:
        phase = self.phase or "(none: pass --phase)"
        return [
            f"CodaBench {self.base_url} phase {phase}, the CSV zipped as {self.zip_name} at the zip root, "
            f"with the credential from {self.source}"
        ]

    def preflight(self) -> str:
        if not self.phase:
            raise CompError(f"no CodaBench phase to submit to; {_PHASE_HELP}")
        answer = self._json("GET", f"/api/can_make_submission/{self.phase}/", "checking you may submit")
        if not answer.get("can", False):
            reason = self._redact(str(answer.get("reason") or "no reason given"))
            raise CompError(f"CodaBench does not let you submit to phase {self.phase} now: {reason}; nothing was sent")
        return f"CodaBench: phase {self.phase} accepts your submission"

    def upload(self, path: Path, message: str) -> str:
        if not self.phase:
            raise CompError(f"no CodaBench phase to submit to; {_PHASE_HELP}")
        data = make_zip(Path(path), self.zip_name)
        def attempt() -> tuple[str, str]:
            dataset = self._json(
                "POST", "/api/datasets/", "creating the upload",
                json={"type": "submission", "request_sassy_file_name": "submission.zip", "file_size": len(data)},
            )
            key, url = str(dataset.get("key", "")), str(dataset.get("sassy_url", ""))
            if not _KEY.match(key) or not url.startswith(("http://", "https://")):
                raise CompError("CodaBench answered the upload request without a usable key/URL; try again later")
            why = self._put(url, data)
            if why:
                return "", why
            self._json("PUT", f"/api/datasets/completed/{key}/", "finishing the upload")
            created = self._json(
                "POST", "/api/submissions/", "creating the submission",
                json={"phase": int(self.phase), "data": key, "tasks": [], "description": message},
            )
            ref = str(created.get("id", ""))
            if not ref.isdigit():
                raise CompError("CodaBench accepted the upload but returned no submission id; check its website")
            return ref, ""

        return upload_with_retries(attempt, self.retries, self.backoff, "CodaBench",
                                   "Check your network and run the command again")

    def status(self, ref: str) -> Remote | None:
        if not str(ref).isdigit():
            raise CompError(f"CodaBench submission id {ref!r} is not a number; was the ledger edited by hand?")
        answer = self._json("GET", f"/api/submissions/{ref}/", "reading the submission")
        raw = str(answer.get("status", ""))
        status = _FINAL.get(raw, "pending")
        scores = [s for s in answer.get("scores") or [] if isinstance(s, dict)]
        public = str(scores[0].get("score", "")) if scores else ""
        error = f"CodaBench status {raw}; open the submission's logs on CodaBench" if status == "error" else ""
        return Remote(ref=str(ref), status=status, public_score=public if status == "complete" else "", error=error)

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

    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        return self._request(method, path, what, **kwargs)

    def _request(self, method: str, path: str, what: str, auth: bool = True, **kwargs: Any) -> dict[str, Any]:
        import requests

        headers = self._auth_header() if auth else {}
        try:
            response = self._session.request(
                method, self.base_url + path, headers=headers, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as err:
            raise CompError(
                f"could not reach CodaBench at {self.base_url} while {what} ({type(err).__name__}); check the network "
                "and CODABENCH_URL, then run the command again"
            ) from None
        if response.status_code >= 400:
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
        elif code == 401:
            why = f"CodaBench rejected the credential from {self.source} (401); {_CREDENTIALS_HELP}"
        elif code == 403:
            why = f"CodaBench refused (403: {text}); register for the competition and wait for approval"
        elif code == 404:
            why = f"CodaBench has no such resource (404) — is phase {self.phase} right? (--phase / CODABENCH_PHASE)"
        else:
            why = f"CodaBench answered {code} ({text})"
        return CompError(f"{why} (while {what})")

    def _put(self, url: str, data: bytes) -> str:
        import requests

        try:
            # The sassy URL is pre-signed storage: it must not receive the API token.
            answer = requests.put(url, data=data, headers={"Content-Type": "application/zip"}, timeout=300)
        except requests.RequestException as err:
            return f"upload PUT failed: {type(err).__name__}"
        return "" if answer.status_code in (200, 201, 204) else f"upload PUT answered HTTP {answer.status_code}"

    def _redact(self, text: str) -> str:
        return redact(text, [self._token, self._password])
