"""Kaggle code competitions through kagglesdk: a dataset (created or versioned), a notebook pushed and run on Kaggle,
and its output submitted with CreateCodeSubmission.

The calls, as the kaggle client makes them (kaggle 2.2.4 `dataset_create_new` / `dataset_create_version` /
`kernels_push` / `competition_submit_code`):
  blobs.BlobApiService/StartBlobUpload {type: DATASET, name, contentLength, lastModifiedEpochSeconds} -> {token,
      createUrl}, then a plain PUT of the file to createUrl (a signed URL: no credential), once per file;
  datasets.DatasetApiService/CreateDataset {ownerSlug, slug, title, licenseName, isPrivate, files, directories}
      or CreateDatasetVersion {ownerSlug, datasetSlug, body: {versionNotes, files, directories}} -> {ref, url, error};
      GetDatasetStatus {ownerSlug, datasetSlug} -> {status: READY | ...} (404 when there is no such dataset);
  kernels.KernelsApiService/SaveKernel {slug, newTitle, text, language, kernelType, datasetDataSources,
      competitionDataSources, isPrivate, enableGpu, enableInternet: false} -> {ref, url, versionNumber, error,
      invalid*Sources}; GetKernelSessionStatus {userName, kernelSlug} -> {status: QUEUED | RUNNING | COMPLETE |
      ERROR | CANCEL_*, failureMessage}; ListKernelSessionOutput {userName, kernelSlug} -> {files: [{fileName, url}],
      log};
  competitions.CompetitionApiService/CreateCodeSubmission {competitionName, kernelOwner, kernelSlug, kernelVersion,
      fileName, submissionDescription} -> {message, ref}; the score then comes from ListSubmissions, as for a CSV.
Folders of the dataset (models/<alias>/fold<k>/, wheels/) travel as `directories`, the request's own tree of
uploaded files, so Kaggle mounts the same layout the kernel reads locally.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from comp.core.errors import CompError
from comp.platforms.base import Say, env_float, safe_name, upload_with_retries
from comp.platforms.kaggle import KaggleBackend, KaggleCredential, default_client_factory, find_credential

_KERNEL_STATES = {"QUEUED": "running", "RUNNING": "running", "NEW_SCRIPT": "running", "COMPLETE": "complete",
                  "ERROR": "error", "CANCEL_REQUESTED": "cancelled", "CANCEL_ACKNOWLEDGED": "cancelled"}
LOG_TAIL = 25  # lines of the kernel's log shown when it fails


@dataclass(frozen=True)
class KernelState:
    status: str  # running | complete | error | cancelled
    message: str = ""  # Kaggle's failure message


def split_ref(ref: str, what: str) -> tuple[str, str]:
    """'owner/slug' -> (owner, slug), both plain names."""
    owner, _, slug = ref.partition("/")
    return safe_name(owner, f"{what} owner"), safe_name(slug, f"{what} slug")


class KaggleCodeBackend(KaggleBackend):
    """The dataset, kernel and code-submission calls for one code competition (scores as `KaggleBackend`)."""

    def __init__(self, competition: str, credential: KaggleCredential,
                 client_factory: Callable[[KaggleCredential], Any] = default_client_factory, **kwargs: Any) -> None:
        super().__init__(competition, credential, client_factory, **kwargs)
        self._missing = ""  # what a 404 means for the call in flight (a dataset or kernel, not the competition)
        self._missing_codes: tuple[int, ...] = (404,)
        self._creating = ""  # the dataset being created: a 403 then means its owner is not this user

    @classmethod
    def from_env(cls, competition: str) -> KaggleCodeBackend:
        credential = find_credential()
        if credential is None:
            raise CompError("no Kaggle credentials found; save an API token in ~/.kaggle/access_token (or set "
                            "KAGGLE_API_TOKEN, or KAGGLE_USERNAME + KAGGLE_KEY)")
        return cls(competition, credential, backoff=env_float("COMP_RETRY_BACKOFF", 2.0))

    def describe(self) -> list[str]:
        return [f"Kaggle code competition {self.competition} with the credential from {self.credential.source}"]

    def preflight(self) -> str:
        """The daily limit, read as for a CSV (a code submission counts against it too): only a reached limit or a
        credential/slug refusal stops; a 5xx or a dropped connection is a line, not a failure."""
        self._check_credential()
        return "\n".join([*self.notes, self._limits_line()])

    # -- the dataset
    def dataset_status(self, ref: str) -> str:
        """'missing', or the status of the dataset's latest version in lower case ('ready', 'failed', ...)."""
        from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetStatusRequest

        owner, slug = split_ref(ref, "dataset")
        request = ApiGetDatasetStatusRequest()
        request.owner_slug, request.dataset_slug = owner, slug
        try:
            # 403 too: Kaggle answers a dataset that does not exist (yet) with 403 as often as with 404, and the
            # first submit must then create it, not tell the user to accept the rules.
            answer = self._on_missing(ref, "reading the dataset's status", self._client.datasets.dataset_api_client
                                      .get_dataset_status, request, missing_codes=(403, 404))
        except _Missing:
            return "missing"
        return getattr(answer.status, "name", str(answer.status)).lower()

    def upload_dataset(self, folder: Path, ref: str, title: str, create: bool, notes: str,
                       say: Say | None = None) -> str:
        """Upload every file under `folder` (dataset-metadata.json excepted) and create the dataset (private) or a
        new version of it; returns Kaggle's URL (or ref) for it."""
        from kagglesdk.datasets.types.dataset_api_service import (
            ApiCreateDatasetRequest,
            ApiCreateDatasetVersionRequest,
            ApiCreateDatasetVersionRequestBody,
        )

        owner, slug = split_ref(ref, "dataset")
        files, directories = self._upload_tree(folder, folder, say)
        api = self._client.datasets.dataset_api_client
        if create:
            request = ApiCreateDatasetRequest()
            request.owner_slug, request.slug, request.title = owner, slug, title
            request.license_name, request.is_private = "CC0-1.0", True
            request.files, request.directories = files, directories
            self._creating = ref
            try:
                answer = self._call("creating the dataset", api.create_dataset, request, idempotent=False)
            finally:
                self._creating = ""
        else:
            body = ApiCreateDatasetVersionRequestBody()
            body.version_notes, body.files, body.directories = notes, files, directories
            request = ApiCreateDatasetVersionRequest()
            request.owner_slug, request.dataset_slug, request.body = owner, slug, body
            answer = self._on_missing(ref, "creating a dataset version", api.create_dataset_version, request,
                                     idempotent=False)
        if answer.error:
            raise CompError(f"Kaggle refused the dataset {ref}: {self._redact(answer.error)}; nothing was submitted")
        return answer.url or answer.ref or ref

    def wait_dataset(self, ref: str, timeout: float, interval: float, say: Say | None = None) -> None:
        """Until the new version is READY (Kaggle processes uploaded files before a kernel can mount them)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.dataset_status(ref)
            if state == "ready":
                return
            if state in ("failed", "deleted", "missing"):
                raise CompError(f"Kaggle reports the dataset {ref} as {state} after the upload; open "
                                f"https://www.kaggle.com/datasets/{ref} to see why, then run the command again")
            if time.monotonic() + interval > deadline:
                raise CompError(f"the dataset {ref} was still {state} after {timeout:g} s; run the command again "
                                "later (the unchanged dataset will not be uploaded twice)")
            if say:
                say(f"  dataset {ref}: {state}...")
            time.sleep(interval)

    def _upload_tree(self, root: Path, folder: Path, say: Say | None) -> tuple[list[Any], list[Any]]:
        from kagglesdk.datasets.types.dataset_api_service import ApiDatasetNewFile, ApiUploadDirectoryInfo

        files, directories = [], []
        for entry in sorted(folder.iterdir()):
            if entry.is_dir():
                sub_files, sub_dirs = self._upload_tree(root, entry, say)
                info = ApiUploadDirectoryInfo()
                info.name, info.files, info.directories = entry.name, sub_files, sub_dirs
                directories.append(info)
            elif entry.is_file() and not (folder == root and entry.name == "dataset-metadata.json"):
                new = ApiDatasetNewFile()
                new.token = self._upload_blob(entry)
                files.append(new)
                if say:
                    say(f"  uploaded {entry.relative_to(root)} ({entry.stat().st_size} bytes)")
        return files, directories

    def _upload_blob(self, path: Path) -> str:
        from kagglesdk.blobs.types.blob_api_service import ApiBlobType, ApiStartBlobUploadRequest

        def attempt() -> tuple[str, str]:
            request = ApiStartBlobUploadRequest()
            request.type = ApiBlobType.DATASET
            request.name = path.name
            request.content_length = path.stat().st_size
            request.last_modified_epoch_seconds = int(path.stat().st_mtime)
            answer = self._call(f"starting the upload of {path.name}", self._client.blobs.blob_api_client
                                .start_blob_upload, request)
            why = self._put_file(answer.create_url, path)
            return (answer.token, "") if not why else ("", why)

        return upload_with_retries(attempt, self.retries, self.backoff, "Kaggle",
                                   "Check your network, then run the command again (nothing was submitted)")

    def _put_file(self, url: str, path: Path) -> str:
        """PUT the file, streamed (weights can be large), to the signed URL; returns "" or why it failed."""
        import requests

        try:
            with open(path, "rb") as fh:
                answer = requests.put(url, data=fh, timeout=600)
        except requests.RequestException as err:
            return f"upload PUT of {path.name} failed: {type(err).__name__}"
        return "" if answer.status_code in (200, 201) else f"upload PUT of {path.name} answered {answer.status_code}"

    # -- the kernel
    def push_kernel(self, metadata: dict[str, Any], code: str) -> tuple[str, int]:
        """SaveKernel from kernel-metadata.json and the notebook's text; returns (kernel URL or ref, version)."""
        from kagglesdk.kernels.types.kernels_api_service import ApiSaveKernelRequest

        split_ref(metadata["id"], "kernel")
        if metadata.get("enable_internet") is not False:
            raise CompError("kernel-metadata.json must say enable_internet: false (code competitions run offline); "
                            "rebuild it with `comp bundle`")
        request = ApiSaveKernelRequest()
        request.slug = metadata["id"]
        request.new_title = metadata.get("title") or metadata["id"].split("/")[1]
        request.text = notebook_text(code) if metadata.get("kernel_type", "notebook") == "notebook" else code
        request.language = metadata.get("language", "python")
        request.kernel_type = metadata.get("kernel_type", "notebook")
        request.is_private = bool(metadata.get("is_private", True))
        request.enable_gpu = bool(metadata.get("enable_gpu", False))
        request.enable_tpu = False
        request.enable_internet = False
        request.dataset_data_sources = list(metadata.get("dataset_sources", []))
        request.competition_data_sources = list(metadata.get("competition_sources", []))
        request.kernel_data_sources = list(metadata.get("kernel_sources", []))
        request.model_data_sources = list(metadata.get("model_sources", []))
        request.category_ids = []
        answer = self._call("pushing the kernel", self._client.kernels.kernels_api_client.save_kernel, request,
                            idempotent=False)
        invalid = [*answer.invalid_dataset_sources, *answer.invalid_competition_sources,
                   *answer.invalid_kernel_sources, *answer.invalid_model_sources]
        if answer.error or invalid:
            why = self._redact(answer.error or "")
            raise CompError(f"Kaggle refused the kernel {metadata['id']}: {why}"
                            + (f" (unknown sources: {', '.join(invalid)})" if invalid else "")
                            + "; accept the competition's rules and check the dataset exists, then run again")
        return answer.url or answer.ref or metadata["id"], int(answer.version_number or 0)

    def kernel_state(self, ref: str) -> KernelState:
        from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusRequest

        owner, slug = split_ref(ref, "kernel")
        request = ApiGetKernelSessionStatusRequest()
        request.user_name, request.kernel_slug = owner, slug
        answer = self._on_missing(ref, "reading the kernel's status", self._client.kernels.kernels_api_client
                                  .get_kernel_session_status, request)
        name = getattr(answer.status, "name", str(answer.status))
        return KernelState(_KERNEL_STATES.get(name, "running"), self._redact(answer.failure_message or ""))

    def kernel_output(self, ref: str) -> tuple[list[str], str]:
        """(output file names, the log's last LOG_TAIL lines) of the kernel's latest run."""
        answer = self._session_output(ref)
        return [f.file_name for f in answer.files], self._redact(log_tail(answer.log or ""))

    def download_output(self, ref: str, name: str, dest: Path) -> None:
        """The kernel's own output file `name` (what CreateCodeSubmission submits), written to `dest` atomically."""
        import requests

        from comp.core import atomic

        found = [f for f in self._session_output(ref).files if f.file_name == name]
        if not found or not found[0].url:
            raise CompError(f"kernel {ref} lists no downloadable {name}; nothing was submitted")
        try:
            answer = requests.get(found[0].url, timeout=300)
        except requests.RequestException as err:
            raise CompError(f"downloading {name} of kernel {ref} failed ({type(err).__name__}); run the command "
                            "again (it resumes with the same kernel version)") from None
        if answer.status_code != 200:
            raise CompError(f"downloading {name} of kernel {ref} answered HTTP {answer.status_code}; run the command "
                            "again (it resumes with the same kernel version)")
        atomic.write_bytes(dest, answer.content)

    def _session_output(self, ref: str) -> Any:
        from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

        owner, slug = split_ref(ref, "kernel")
        request = ApiListKernelSessionOutputRequest()
        request.user_name, request.kernel_slug = owner, slug
        return self._on_missing(ref, "reading the kernel's output", self._client.kernels.kernels_api_client
                                .list_kernel_session_output, request)

    def wait_kernel(self, ref: str, timeout: float, interval: float, say: Say | None = None) -> KernelState:
        deadline, said = time.monotonic() + timeout, 0.0
        while True:
            state = self.kernel_state(ref)
            if state.status != "running" or time.monotonic() + interval > deadline:
                return state
            if say and time.monotonic() - said >= 60:
                say(f"  kernel {ref}: running, waiting up to {timeout / 3600:.1f} h...")
                said = time.monotonic()
            time.sleep(interval)

    # -- the submission
    def submit_code(self, kernel_ref: str, version: int, message: str, file_name: str = "submission.csv",
                    since: datetime | None = None) -> str:
        """CreateCodeSubmission, sent once. When it fails in a way that may have created the submission anyway (5xx,
        429, a dropped connection), the listing is read: a submission found there is the result; else CompError
        (`SubmitUnknown`) says it may still appear, and nothing is sent again."""
        import requests
        from kagglesdk.competitions.types.competition_api_service import ApiCreateCodeSubmissionRequest

        from comp.platforms.base import RETRY_STATUS
        from comp.platforms.kaggle import _error_code, error_text

        owner, slug = split_ref(kernel_ref, "kernel")
        request = ApiCreateCodeSubmissionRequest()
        request.competition_name = self.competition
        request.kernel_owner, request.kernel_slug = owner, slug
        request.kernel_version = version
        request.file_name = file_name
        request.submission_description = message
        started = since or datetime.now(timezone.utc)
        try:
            answer = self._api.create_code_submission(request)
        except requests.HTTPError as err:
            if _error_code(err) not in RETRY_STATUS:
                raise self._http_error("creating the code submission", err) from None
            why = f"Kaggle answered {_error_code(err)} ({self._redact(error_text(err))})"
        except (requests.ConnectionError, requests.Timeout) as err:
            why = f"the connection broke ({type(err).__name__})"
        else:
            if not answer.ref:
                raise CompError(f"Kaggle did not accept the code submission: "
                                f"{self._redact(answer.message or 'no ref')}; nothing was recorded")
            return str(answer.ref)
        found = self.find_code_submission(message, file_name, started, why)
        if found:
            return found
        raise SubmitUnknown(
            f"{why} while creating the code submission of kernel {kernel_ref} v{version}, and the listing does not "
            f"show it (yet). It was sent once and not repeated; it may still appear: look at "
            f"https://www.kaggle.com/competitions/{self.competition}/submissions. Running the same command again "
            "looks for it first and submits the same kernel version only if it is not there"
        )

    def find_code_submission(self, message: str, file_name: str, since: datetime, why: str = "") -> str:
        """The ref of a submission with this description and file made since `since` (listing, newest first)."""
        try:
            listed = self._listing(max_pages=1)
        except CompError as err:
            raise SubmitUnknown(
                f"{why or 'the code submission may exist'}; the listing that would show it failed too ({err}). Look "
                f"at https://www.kaggle.com/competitions/{self.competition}/submissions before submitting again"
            ) from None
        after = since - timedelta(minutes=10)  # the server's clock may differ from this machine's
        for sub in listed:
            when = sub.date.replace(tzinfo=sub.date.tzinfo or timezone.utc) if sub.date is not None else None
            if (sub.description or "") == message and (sub.file_name or file_name) == file_name and (
                    when is None or when >= after):
                return str(sub.ref)
        return ""

    # -- errors
    def _on_missing(self, ref: str, what: str, method: Callable[[Any], Any], request: Any,
                    idempotent: bool = True, missing_codes: tuple[int, ...] = (404,)) -> Any:
        """`_call`, except that a 404 (or another of `missing_codes`) means `ref` (a dataset or kernel) does not
        exist, raised as `_Missing`."""
        self._missing, self._missing_codes = ref, missing_codes
        try:
            return self._call(what, method, request, idempotent=idempotent)
        finally:
            self._missing = ""

    def _http_error(self, what: str, err: Any, attempts: int = 1) -> CompError:
        from comp.platforms.kaggle import _error_code, error_text

        code = _error_code(err)
        if self._missing and code in self._missing_codes:
            return _Missing(f"Kaggle has no {self._missing} ({code}, while {what})")
        if self._creating and code == 403:  # the slug's owner is not the credential's user
            return CompError(f"Kaggle refused {what} (403: {self._redact(error_text(err))}): the owner in "
                             f"{self._creating!r} must be the Kaggle user of {self.credential.source}; rebuild "
                             "with `comp bundle NAME --owner YOUR_USER_NAME --run-local`")
        return super()._http_error(what, err, attempts)


class _Missing(CompError):
    """A dataset or kernel that does not exist (yet)."""


class SubmitUnknown(CompError):
    """CreateCodeSubmission failed in a way that may have created the submission, and the listing does not show it."""


def notebook_text(code: str) -> str:
    """The notebook as `kaggle kernels push` sends it (kaggle 2.2.4 and 1.7.4.5): outputs cleared and each cell's
    source joined into one string ("the server expects just one")."""
    try:
        nb = json.loads(code)
    except ValueError:
        raise CompError("the kernel's notebook is not valid JSON; rebuild it with `comp bundle NAME`") from None
    for cell in nb.get("cells", []) if isinstance(nb, dict) else []:
        if cell.get("cell_type") == "code" and "outputs" in cell:
            cell["outputs"] = []
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
    return json.dumps(nb)


def log_tail(log: str, lines: int = LOG_TAIL) -> str:
    """The last lines of a kernel log: Kaggle's is a JSON list of {stream_name, time, data} chunks, or plain text."""
    try:
        chunks = json.loads(log)
        text = "".join(str(c.get("data", "")) for c in chunks if isinstance(c, dict))
    except (ValueError, TypeError, AttributeError):
        text = log
    return os.linesep.join(text.rstrip().splitlines()[-lines:])
