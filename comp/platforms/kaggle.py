"""Kaggle: find one credential, upload a submission, poll its score, download a competition's files.

Built on `kagglesdk.KaggleClient` (imported lazily), not on `import kaggle`, which authenticates and prints at
import time. The client is given exactly one credential: left to itself it sends a token found in the environment
as a Bearer header even after falling back to a username and key. The environment (PROD by default) can be set
with `COMP_KAGGLE_ENV` (e.g. TEST = http://localhost:7777, which the tests serve), or a `client_factory` passed in.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from comp.core.errors import CompError
from comp.platforms.base import (
    MAX_RETRY_AFTER,
    RETRY_STATUS,
    Remote,
    env_float,
    redact,
    retry_after,
    safe_file_name,
    safe_name,
    upload_with_retries,
    with_retries,
)

_STATUS = {"PENDING": "pending", "COMPLETE": "complete", "ERROR": "error"}
PAGE_SIZE = 20  # submissions per ListSubmissions page, as the official client asks
_TOKEN_HELP = (
    "create an API token at https://www.kaggle.com/settings (API section) and save it in ~/.kaggle/access_token "
    "(or set KAGGLE_API_TOKEN), or put kaggle.json with your username and key in ~/.kaggle/"
)


@dataclass(frozen=True)
class KaggleCredential:
    """One Kaggle credential: an access token, or a username + key. `source` is safe to print; values are not."""

    source: str  # where it was found, e.g. "KAGGLE_API_TOKEN" or "/home/me/.kaggle/kaggle.json"
    token: str = field(default="", repr=False)
    username: str = field(default="", repr=False)
    key: str = field(default="", repr=False)
    oauth_file: str = ""  # `kaggle auth login`'s credentials.json, exchanged for an access token with the client

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.key) if s]


def find_credential(environ: Mapping[str, str] | None = None, home: Path | None = None,
                    tokens: bool = True) -> KaggleCredential | None:
    """The credential the Kaggle client would use, in its order; None when there is none (`tokens=False`: the
    username + key only, the fallback after an invalid token).

    1. an access token: `KAGGLE_API_TOKEN` (the value, or the path of a file holding it), then ~/.kaggle/access_token;
    2. username + key from kaggle.json in `KAGGLE_CONFIG_DIR`, ~/.kaggle or ~/.config/kaggle, each field overridden
       by `KAGGLE_USERNAME` / `KAGGLE_KEY`;
    3. the OAuth credentials `kaggle auth login` saves in ~/.kaggle/credentials.json (a refresh token), read as
       kagglesdk's `KaggleCredentials.load` reads them; the access token is made from it when the client is built.
    """
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home()) if home is None else home
    raw = env.get("KAGGLE_API_TOKEN", "").strip() if tokens else ""
    if raw:
        as_file = Path(raw).expanduser()
        if len(raw) < 4096 and as_file.is_file():
            token = _read_secret(as_file)
            if token:
                return KaggleCredential(source=f"the file named by KAGGLE_API_TOKEN ({as_file})", token=token)
        elif "/" in raw or raw.startswith("~"):  # tokens have no slashes: this is a mistyped path (not echoed)
            raise CompError(
                "KAGGLE_API_TOKEN looks like a file path but no such file exists; point it at the file holding your "
                "token, or set it to the token itself"
            )
        else:
            return KaggleCredential(source="KAGGLE_API_TOKEN", token=raw)
    for name in ("access_token", "access_token.txt") if tokens else ():
        token_file = home / ".kaggle" / name
        if token_file.is_file():
            token = _read_secret(token_file)
            if token:
                return KaggleCredential(source=str(token_file), token=token)

    username, key, source = "", "", ""
    dirs = [Path(env["KAGGLE_CONFIG_DIR"]).expanduser()] if env.get("KAGGLE_CONFIG_DIR") else []
    for folder in [*dirs, home / ".kaggle", home / ".config" / "kaggle"]:
        path = folder / "kaggle.json"
        if path.is_file():
            data = _read_kaggle_json(path)
            username, key, source = str(data.get("username", "")), str(data.get("key", "")), str(path)
            break
    if env.get("KAGGLE_USERNAME"):
        username, source = env["KAGGLE_USERNAME"], source or "KAGGLE_USERNAME/KAGGLE_KEY"
    if env.get("KAGGLE_KEY"):
        key, source = env["KAGGLE_KEY"], source or "KAGGLE_USERNAME/KAGGLE_KEY"
    if not username and not key:
        return _oauth_credential(home / ".kaggle" / "credentials.json")
    if not (username and key):
        lacking = "key (KAGGLE_KEY)" if username else "username (KAGGLE_USERNAME)"
        raise CompError(f"Kaggle credentials from {source} lack the {lacking}; {_TOKEN_HELP}")
    if env.get("KAGGLE_USERNAME") or env.get("KAGGLE_KEY"):
        source = f"{source} + KAGGLE_USERNAME/KAGGLE_KEY" if source.endswith(".json") else source
    return KaggleCredential(source=source, username=username, key=key)


def _oauth_credential(path: Path) -> KaggleCredential | None:
    """`kaggle auth login`'s file when it holds a refresh token (what KaggleCredentials.load requires), else None."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None  # as the official client: an unreadable file is no credential
    if not isinstance(data, dict) or not data.get("refresh_token"):
        return None
    return KaggleCredential(source=str(path), username=str(data.get("username") or ""), oauth_file=str(path))


def oauth_access_token(credential: KaggleCredential) -> str:
    """The access token of `kaggle auth login`'s credentials, as the official client gets it: the saved one while it
    is valid, else a new one from GenerateAccessToken with the refresh token (saved back to the file)."""
    import requests
    from kagglesdk import KaggleClient
    from kagglesdk.kaggle_creds import KaggleCredentials

    client = KaggleClient(env=kaggle_env())
    http = client._http_client
    http._signed_in = True  # no other credential may ride along on the exchange (see default_client_factory)
    http._init_session()
    creds = KaggleCredentials.load(client=client, file_path=credential.oauth_file)
    if creds is None:
        raise CompError(f"{credential.source} holds no refresh token; run `kaggle auth login` again")
    try:
        original_save = creds.save
        creds.save = lambda file_path=credential.oauth_file: original_save(file_path)  # keep it where it was
        token = creds.get_access_token()
    except requests.HTTPError as err:
        code = _error_code(err)
        raise CompError(f"Kaggle refused the OAuth credentials in {credential.source} ({code}); run `kaggle auth "
                        "login` again") from None
    except requests.RequestException as err:
        raise CompError(f"could not reach Kaggle to renew the OAuth access token ({type(err).__name__}); check "
                        "your network") from None
    if not token:
        raise CompError(f"{credential.source} gave no access token; run `kaggle auth login` again")
    return token


def _read_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise CompError(f"cannot read the Kaggle token file {path} ({type(err).__name__}); fix its permissions") \
            from None


def _read_kaggle_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        # The parser's message may quote the file, which holds the key: say only where the problem is.
        raise CompError(f'{path} is not valid JSON; it should read {{"username": "...", "key": "..."}}') from None
    if not isinstance(data, dict):
        raise CompError(f"{path} should hold a JSON object {{\"username\": \"...\", \"key\": \"...\"}}")
    return data


def kaggle_env() -> Any:
    """The kagglesdk environment from `COMP_KAGGLE_ENV` (PROD when unset; TEST = http://localhost:7777)."""
    from kagglesdk import KaggleEnv

    name = os.environ.get("COMP_KAGGLE_ENV", "PROD").upper()
    try:
        return KaggleEnv[name]
    except KeyError:
        allowed = ", ".join(e.name for e in KaggleEnv)
        raise CompError(f"$COMP_KAGGLE_ENV = {name!r} is not one of {allowed}; unset it to reach kaggle.com") from None


def default_client_factory(credential: KaggleCredential) -> Any:
    from kagglesdk import KaggleClient

    if credential.token:
        return KaggleClient(env=kaggle_env(), api_token=credential.token)
    if credential.oauth_file:
        return KaggleClient(env=kaggle_env(), api_token=oauth_access_token(credential))
    client = KaggleClient(env=kaggle_env(), username=credential.username, password=credential.key)
    # Left alone, kagglesdk adds a token it finds in the environment (KAGGLE_API_TOKEN, ~/.kaggle/access_token) as
    # Bearer even when given a username and key: after a rejected token fell back to kaggle.json, that bad token
    # would still be sent. Sign the session in with the key here, so kagglesdk never looks for one.
    http = client._http_client
    http._signed_in = True
    http._init_session()
    http._session.auth = (credential.username, credential.key)
    return client


def token_is_active(client: Any, token: str) -> bool | None:
    """IntrospectToken, as the official client checks a token before using it: True/False, or None when Kaggle could
    not be asked (then the token is used, and the first real call reports what is wrong)."""
    import requests
    from kagglesdk.security.types.oauth_service import IntrospectTokenRequest

    request = IntrospectTokenRequest()
    request.token = token
    try:
        answer = client.security.oauth_client.introspect_token(request)
    except requests.HTTPError as err:
        return False if _error_code(err) in (400, 401, 403, 404) else None
    except requests.RequestException:
        return None
    return bool(answer.active and answer.username)


class KaggleBackend:
    """Submissions to one Kaggle competition through kagglesdk (holds the client and its credential)."""

    platform = "kaggle"

    def __init__(
        self,
        competition: str,
        credential: KaggleCredential,
        client_factory: Callable[[KaggleCredential], Any] = default_client_factory,
        retries: int = 3,
        backoff: float = 2.0,
        fallback: Callable[[], KaggleCredential | None] | None = None,
    ) -> None:
        self.competition = safe_name(competition, "Kaggle competition slug (comp.toml `name`)")
        self.credential = credential
        self.retries = retries  # attempts of a call (or of the whole upload) that may pass on a retry
        self.backoff = backoff  # seconds before the 2nd attempt, doubled after each failure (or the Retry-After)
        self.notes: list[str] = []  # what preflight says besides the limits (a token replaced by kaggle.json)
        self._factory = client_factory
        self._fallback = fallback  # the credential to use when a token turns out invalid (kaggle.json)
        self._checked = not credential.token
        self._client = client_factory(credential)
        self._api = self._client.competitions.competition_api_client

    @classmethod
    def from_env(cls, competition: str) -> KaggleBackend:
        credential = find_credential()
        if credential is None:
            raise CompError(f"no Kaggle credentials found; {_TOKEN_HELP}")
        return cls(competition, credential, backoff=env_float("COMP_RETRY_BACKOFF", 2.0),
                   fallback=lambda: find_credential(tokens=False))

    # -- the Backend protocol
    def describe(self) -> list[str]:
        return [f"Kaggle competition {self.competition} with the credential from {self.credential.source}"]

    def preflight(self) -> str:
        """Best effort, as the official client: only a reached daily limit refuses. Kaggle reports zero counts for a
        user who is not on a team yet (before a first submission), and a failed limits call is not a reason to stop:
        CreateSubmission itself refuses what is over the limit."""
        self._check_credential()
        if self._code_competition():
            raise CompError(
                f"{self.competition} is a code competition: Kaggle scores only notebooks run on its servers, not an "
                "uploaded CSV; run your inference in a Kaggle notebook (internet off) and submit from there"
            )
        return "\n".join([*self.notes, self._limits_line()])

    def _limits_line(self) -> str:
        """GetSubmissionLimits as one line to show; refuses only a reached daily limit or a credential/slug problem
        (401/403/404, which the submission would meet too). 5xx and dropped connections are not fatal."""
        import requests
        from kagglesdk.competitions.types.competition_api_service import ApiGetSubmissionLimitsRequest

        request = ApiGetSubmissionLimitsRequest()
        request.competition_name = self.competition
        try:
            limits = with_retries(lambda: self._api.get_submission_limits(request), self._transient, self.retries,
                                  self.backoff)
        except requests.HTTPError as err:
            if _error_code(err) in (401, 403, 404):  # the upload would be refused the same way: say it now
                raise self._http_error("reading the submission limits", err) from None
            why = f"Kaggle answered {_error_code(err)}"
            return f"Kaggle: could not read the submission limits ({why}); submitting anyway"
        except requests.RequestException as err:
            return f"Kaggle: could not read the submission limits ({type(err).__name__}); submitting anyway"
        if limits.num_today > 0 and limits.num_allowed_now <= 0:
            raise CompError(
                f"Kaggle allows no more submissions to {self.competition} now ({limits.num_today} made today): the "
                "daily limit resets at 00:00 UTC; nothing was sent"
            )
        if not (limits.num_today or limits.num_total or limits.num_allowed_now):
            return "Kaggle: no submission made yet (the limits read 0 until a first submission makes a team)"
        left = limits.num_allowed_now
        return f"Kaggle: {left} submission(s) left today, {max(left - 1, 0)} after this one"

    def upload(self, path: Path, message: str) -> str:
        """StartSubmissionUpload -> PUT -> CreateSubmission, the whole sequence retried with backoff when the PUT
        fails, Kaggle answers ref 0 ("Could not submit"), or CreateSubmission fails in a way that may pass (5xx, 429,
        a dropped connection). After such a failure the submission may exist with its answer lost: the listing is
        read first, and a submission found there is the result (never a second one)."""
        from kagglesdk.competitions.types.competition_api_service import ApiStartSubmissionUploadRequest

        self._check_credential()
        data = Path(path).read_bytes()
        name = safe_file_name(Path(path).name)
        started = datetime.now(timezone.utc)

        def attempt() -> tuple[str, str]:
            start = ApiStartSubmissionUploadRequest()
            start.competition_name = self.competition
            start.file_name = name
            start.content_length = len(data)
            start.last_modified_epoch_seconds = int(Path(path).stat().st_mtime)
            upload = self._call("starting the upload", self._api.start_submission_upload, start)
            why = self._put(upload.create_url, data)
            if why:
                return "", why
            return self._create(upload.token, name, len(data), message, started)

        return upload_with_retries(attempt, self.retries, self.backoff, "Kaggle",
                                   "Check https://www.kaggle.com status and your network, then run the command again")

    def status(self, ref: str) -> Remote | None:
        """The listing is newest first and refs grow, so paging stops at the first page reaching back to `ref`."""
        self._check_credential()
        for sub in self._listing(max_pages=20, stop_at=str(ref)):
            if str(sub.ref) == str(ref):
                return _remote(sub)
        return None

    # -- credential and submission creation
    def _check_credential(self) -> None:
        """An access token is introspected once before use; an invalid one gives way to kaggle.json when there is
        one, as the official client does (and only that credential is sent from then on)."""
        if self._checked:
            return
        self._checked = True
        if token_is_active(self._client, self.credential.token) is not False:
            return
        rejected = self.credential.source
        fallback = self._fallback() if self._fallback else None
        if fallback is None:
            raise CompError(f"Kaggle says the access token from {rejected} is invalid or expired; {_TOKEN_HELP}")
        self.notes.append(f"the access token from {rejected} is invalid or expired; using {fallback.source}")
        self.credential = fallback
        self._client = self._factory(fallback)
        self._api = self._client.competitions.competition_api_client

    def _create(self, token: str, name: str, size: int, message: str, started: datetime) -> tuple[str, str]:
        import requests
        from kagglesdk.competitions.types.competition_api_service import ApiCreateSubmissionRequest

        create = ApiCreateSubmissionRequest()
        create.competition_name = self.competition
        create.blob_file_tokens = token
        create.submission_description = message
        try:
            result = self._api.create_submission(create)
        except requests.HTTPError as err:
            code = _error_code(err)
            if code not in RETRY_STATUS or _is_limit(self._redact(str(err))):
                raise self._http_error("creating the submission", err) from None
            why, wait = f"Kaggle answered {code} while creating the submission", retry_after(err.response)
        except (requests.ConnectionError, requests.Timeout) as err:
            why, wait = f"the connection broke while creating the submission ({type(err).__name__})", 0.0
        else:
            if result.ref:
                return str(result.ref), ""
            return "", f"Kaggle answered ref 0: {self._redact(result.message or 'Could not submit')}"
        found = self._find_created(name, size, message, started, why)
        if found:
            return found, ""
        if wait:
            time.sleep(min(wait, MAX_RETRY_AFTER))
        return "", why

    def _find_created(self, name: str, size: int, message: str, started: datetime, why: str) -> str:
        """The ref of the submission just created, found in the listing (newest first) by its description, file
        name and size, made since this upload began; "" when there is none."""
        try:
            listed = self._listing(max_pages=1)
        except CompError as err:
            raise CompError(
                f"{why}; the listing that would show whether it was created failed too ({err}). It may or may not "
                f"have been created: look at https://www.kaggle.com/competitions/{self.competition}/submissions "
                "before submitting again"
            ) from None
        since = started - timedelta(minutes=10)  # the server's clock may differ from this machine's
        for sub in listed:
            when = sub.date.replace(tzinfo=sub.date.tzinfo or timezone.utc) if sub.date is not None else None
            if ((sub.description or "") == message and (sub.file_name or name) == name
                    and sub.total_bytes in (None, 0, size) and (when is None or when >= since)):
                return str(sub.ref)
        return ""

    def _code_competition(self) -> bool:
        """Best effort: a failed lookup is not a reason to refuse (the upload itself will say what is wrong)."""
        from kagglesdk.competitions.types.competition_api_service import ApiGetCompetitionRequest

        request = ApiGetCompetitionRequest()
        request.competition_name = self.competition
        try:
            return bool(self._call("reading the competition", self._api.get_competition, request)
                        .is_kernels_submissions_only)
        except (CompError, ValueError, TypeError, KeyError):
            return False

    def evaluation_metric(self) -> str:
        """Kaggle's name of the competition's metric (GetCompetition's evaluationMetric); "" when not given."""
        from kagglesdk.competitions.types.competition_api_service import ApiGetCompetitionRequest

        self._check_credential()
        request = ApiGetCompetitionRequest()
        request.competition_name = self.competition
        return str(self._call("reading the competition", self._api.get_competition, request).evaluation_metric or "")

    def _competition_exists(self) -> bool | None:
        """GetCompetition as a probe: True, False (404), or None when Kaggle would not say."""
        import requests
        from kagglesdk.competitions.types.competition_api_service import ApiGetCompetitionRequest

        request = ApiGetCompetitionRequest()
        request.competition_name = self.competition
        try:
            self._api.get_competition(request)
        except requests.HTTPError as err:
            return False if _error_code(err) == 404 else None
        except (requests.RequestException, ValueError, TypeError, KeyError):
            return None
        return True

    # -- downloads
    def download(self, dest: Path, progress: Callable[[int, int], None] | None = None) -> None:
        """DownloadDataFiles: Kaggle answers a redirect to one zip, streamed to `dest` (the caller renames it)."""
        from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFilesRequest

        self._check_credential()
        request = ApiDownloadDataFilesRequest()
        request.competition_name = self.competition
        response = self._call("downloading the data", self._api.download_data_files, request)
        import requests

        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        try:
            with open(dest, "wb") as fh:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    fh.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except requests.RequestException as err:
            raise CompError(f"the download from Kaggle broke off ({type(err).__name__}); run it again") from None
        finally:
            response.close()
        if total and done != total:
            raise CompError(f"the download from Kaggle stopped at {done} of {total} bytes; run it again")

    # -- helpers
    def _listing(self, max_pages: int, stop_at: str = "") -> list[Any]:
        from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

        found: list[Any] = []
        token = ""
        for _ in range(max_pages):
            request = ApiListSubmissionsRequest()
            request.competition_name = self.competition
            request.page_size = PAGE_SIZE
            if token:
                request.page_token = token
            else:
                request.page = 1  # the official client's first request: page=1, pageSize=20
            answer = self._call("listing submissions", self._api.list_submissions, request)
            found.extend(answer.submissions)
            token = answer.next_page_token
            if not token or (stop_at.isdigit() and any(sub.ref <= int(stop_at) for sub in answer.submissions)):
                break
        return found

    def _put(self, url: str, data: bytes) -> str:
        """PUT the bytes to the upload URL (no auth header: it is a signed URL); returns "" or why it failed."""
        import requests

        try:
            answer = requests.put(url, data=data, timeout=300)
        except requests.RequestException as err:
            return f"upload PUT failed: {type(err).__name__}"
        if answer.status_code in (200, 201):
            return ""
        return f"upload PUT answered HTTP {answer.status_code}"

    def _call(self, what: str, method: Callable[[Any], Any], request: Any, idempotent: bool = True) -> Any:
        """One API call, retried on 429/5xx and dropped connections (Retry-After honoured) when it is safe to repeat;
        pass `idempotent=False` for a call that creates something (it is then sent once)."""
        import requests

        sent = [0]

        def once() -> Any:
            sent[0] += 1
            return method(request)

        try:
            return with_retries(once, self._transient, self.retries if idempotent else 1, self.backoff)
        except requests.HTTPError as err:
            raise self._http_error(what, err, attempts=sent[0]) from None
        except requests.RequestException as err:
            raise CompError(
                f"could not reach Kaggle while {what} ({type(err).__name__}); check your network and run the command "
                "again"
            ) from None

    @staticmethod
    def _transient(err: BaseException) -> float | None:
        """Seconds to wait before repeating a call that failed with `err` (429/5xx, a dropped connection); None when
        repeating it cannot help."""
        import requests

        if isinstance(err, requests.HTTPError):
            if _error_code(err) in RETRY_STATUS and not _is_limit(str(err)):
                return retry_after(err.response)
            return None
        return 0.0 if isinstance(err, requests.ConnectionError | requests.Timeout) else None

    def _http_error(self, what: str, err: Any, attempts: int = 1) -> CompError:
        code, text = _error_code(err), self._redact(error_text(err))
        slug = self.competition
        rules = f"https://www.kaggle.com/competitions/{slug}/rules"
        if code == 401:
            why = f"Kaggle rejected the credential from {self.credential.source} (401); {_TOKEN_HELP}"
        elif code == 403:
            # Kaggle answers a mistyped slug with 403 "Permission 'competitions.participate' was denied" too, so
            # GetCompetition tells the two apart where it can.
            exists = self._competition_exists()
            slug_fix = (f"check `name` in comp.toml: it must be the slug in the competition's URL, "
                        f"kaggle.com/competitions/<slug> (now {slug!r})")
            accept = f"accept the competition's rules at {rules} with the account of {self.credential.source}"
            if exists is False:
                why = f"Kaggle has no competition {slug!r} (403: {text}); {slug_fix}"
            elif exists:
                why = f"Kaggle refused access to {slug} (403: {text}); {accept}"
            else:
                why = f"Kaggle refused access to {slug} (403: {text}): either {slug_fix}, or {accept}"
        elif code == 404:
            why = (
                f"Kaggle has no competition {slug!r} (404); set `name` in comp.toml to the slug in the competition's "
                "URL, kaggle.com/competitions/<slug>"
            )
        elif code in (400, 429) and _is_limit(text):
            why = f"Kaggle's submission limit is reached ({code}: {text}); it resets at 00:00 UTC"
        elif code in RETRY_STATUS:
            times = f"{attempts} times" if attempts > 1 else "(sent once: it creates something, so it is not repeated)"
            why = f"Kaggle answered {code} ({text}) {times}; it may be busy: run the command again later"
        else:
            why = f"Kaggle answered {code} ({text})"
        return CompError(f"{why} (while {what})")

    def _redact(self, text: str) -> str:
        return redact(text, [*self.credential.secrets, self.credential.username])


# Kaggle's evaluation-metric names (GetCompetition's evaluationMetric), compared on lower-case letters and digits,
# -> comp's metrics. A name not here is reported as unknown, never mapped by a guess.
_KAGGLE_METRICS = {
    "accuracy": "accuracy", "categorizationaccuracy": "accuracy", "multiclassaccuracy": "accuracy",
    "quadraticweightedkappa": "qwk", "qwk": "qwk", "cohenskappaquadratic": "qwk",
    "logloss": "log_loss", "multiclassloss": "log_loss", "multiclasslogloss": "log_loss", "binarylogloss": "log_loss",
    "auc": "roc_auc", "rocauc": "roc_auc", "aucroc": "roc_auc", "areaundercurve": "roc_auc",
    "areaunderroccurve": "roc_auc", "areaunderreceiveroperatingcharacteristiccurve": "roc_auc",
    "weightedauc": "weighted_auc", "alaska2weightedauc": "weighted_auc",
    "meancolumnwiseauc": "mean_column_auc", "meancolumnwiserocauc": "mean_column_auc",
    "macrofscore": "f1_macro", "fscoremacro": "f1_macro", "macrof1": "f1_macro", "f1macro": "f1_macro",
    "meanf1macro": "f1_macro", "microfscore": "f1_micro", "fscoremicro": "f1_micro", "f1micro": "f1_micro",
    "meanfscorebeta": "f2_samples", "meanf2score": "f2_samples", "f2score": "f2_samples", "meanf2": "f2_samples",
}


def comp_metric(kaggle_name: str) -> str:
    """comp's name for Kaggle's metric `kaggle_name` ("" when comp does not compute it); MAP@K keeps its K."""
    key = "".join(ch for ch in kaggle_name.lower() if ch.isalnum())
    if key in _KAGGLE_METRICS:
        return _KAGGLE_METRICS[key]
    for prefix in ("map", "meanaverageprecision", "meanaverageprecisionat"):
        rest = key.removeprefix(prefix)
        if rest != key and (rest.isdigit() or rest in ("k", "")):
            return f"map@{rest}" if rest.isdigit() else "map@k"
    return ""


def _is_limit(text: str) -> bool:
    """A daily-limit refusal (400, sometimes 429): final until 00:00 UTC, never retried."""
    return any(w in text.lower() for w in ("daily", "allowance", "submission limit"))


def error_text(err: Any) -> str:
    """What the server said: kagglesdk's message for a JSON error, else the plain-text body (a proxy's or a load
    balancer's reason), which requests' "500 Server Error ... for url" would otherwise replace."""
    text = str(err)
    response = getattr(err, "response", None)
    if response is None:
        return text
    kind = str(getattr(response, "headers", {}).get("Content-Type", ""))
    try:
        body = response.text if "json" not in kind else ""
    except (AttributeError, ValueError, RuntimeError):
        body = ""
    body = " ".join((body or "").split())[:300]
    if body and body not in text:
        text = f"{body}" if text.startswith(f"{response.status_code} ") else f"{text}: {body}"
    return text


def _error_code(err: Any) -> int:
    """kagglesdk raises HTTPError for a JSON body {"code": >= 400} even when the HTTP status is 200."""
    response = getattr(err, "response", None)
    if response is None:
        return 0
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("code"), int):
            return body["code"]
    except ValueError:
        pass
    return int(response.status_code or 0)


def _remote(sub: Any) -> Remote:
    status = _STATUS.get(getattr(sub.status, "name", str(sub.status)), "pending")
    return Remote(
        ref=str(sub.ref),
        status=status,
        public_score=sub.public_score or "",
        private_score=sub.private_score or "",
        error=sub.error_description or "",
    )
