"""`comp submit --kernel NAME`: the bundle to Kaggle (dataset, notebook), the notebook run there, its output
submitted, scored and recorded in the ledger.

Nothing is sent unless the bundle passed `comp bundle NAME --run-local` as it is now (its dataset content hash is
the one the local run recorded) and the local run's submission.csv passes `comp check`. The dataset is uploaded
only when its content hash differs from the last upload (bundles/NAME/uploaded.json) or Kaggle lacks it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from rich.markup import escape

from comp.bundle.build import OWNER_PLACEHOLDER, dataset_hash
from comp.core import atomic
from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.provenance import sha256_bytes, sha256_file
from comp.core.workspace import BundlePaths, Workspace
from comp.platforms.base import Say, env_float, poll
from comp.platforms.submit import checked
from comp.submission import ledger

DATASET_WAIT_S = 1800.0  # Kaggle processes a new dataset version before a kernel can mount it


@dataclass(frozen=True)
class KernelSubmitResult:
    ref: str  # the submission's ref ("" for a dry run)
    status: str  # dry-run | pending | complete | error
    kernel_version: int = 0
    dataset_uploaded: bool = False
    public_score: str = ""
    error: str = ""


def passed_local_run(paths: BundlePaths) -> dict[str, Any]:
    """The record `--run-local` wrote for the bundle as it is now; CompError when there is none or it is stale."""
    record_path = paths.local_run / "passed.json"
    fix = f"run `comp bundle {paths.dir.name} --run-local` first (it must pass before anything is sent)"
    if not paths.manifest.is_file():
        raise CompError(f"no bundle {paths.dir.name!r} ({paths.manifest}); build it: `comp bundle {paths.dir.name}`")
    if not record_path.is_file():
        raise CompError(f"bundle {paths.dir.name!r} has not been run locally; {fix}")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    if record.get("dataset_hash") != dataset_hash(paths):
        raise CompError(f"bundle {paths.dir.name!r} changed since its local run; {fix}")
    return record


def submit_kernel(comp: Competition, ws: Workspace, name: str, message: str, *, backend: Any = None,
                  make: Callable[[], Any] | None = None, dry_run: bool = False, wait: bool = True,
                  timeout: float = 600.0, kernel_timeout: float | None = None, poll_interval: float | None = None,
                  say: Say = print) -> KernelSubmitResult:
    """Send bundle `name` to its code competition (see the module doc); `make` builds the backend after the checks."""
    if comp.platform != "kaggle":
        raise CompError(f"comp.toml platform is {comp.platform!r}: `--kernel` submits to Kaggle code competitions")
    if not message.strip():
        raise CompError("the submission message is empty; say what this is, e.g. -m 'bundle v2, 2 models, hflip'")
    paths = ws.bundle(name)
    record = passed_local_run(paths)
    local_csv = paths.local_run / "submission.csv"
    report = checked(comp, ws, local_csv)
    for warning in report.warnings:
        if str(ws.submission_csv(name)) not in warning:  # equal to the stack's CSV: what the local run proves
            say(f"[yellow]warning:[/] {escape(warning)}")
    dataset_meta = json.loads(paths.dataset_metadata.read_text(encoding="utf-8"))
    kernel_meta = json.loads(paths.kernel_metadata.read_text(encoding="utf-8"))
    dataset_ref, kernel_ref = dataset_meta["id"], kernel_meta["id"]
    if dataset_ref.startswith(OWNER_PLACEHOLDER + "/"):
        raise CompError(f"the bundle's slugs use {OWNER_PLACEHOLDER!r}; rebuild it with your Kaggle user name: "
                        f"`comp bundle {name} --owner NAME --run-local`")
    digest = dataset_hash(paths)
    uploaded = json.loads(paths.uploaded.read_text(encoding="utf-8")) if paths.uploaded.is_file() else {}
    unchanged = uploaded.get("dataset_hash") == digest and uploaded.get("dataset") == dataset_ref
    notebook_file = paths.kernel / kernel_meta["code_file"]
    code = notebook_file.read_text(encoding="utf-8")
    size = sum(p.stat().st_size for p in paths.dataset.rglob("*") if p.is_file() and p != paths.dataset_metadata)
    n_files = sum(1 for p in paths.dataset.rglob("*") if p.is_file() and p != paths.dataset_metadata)

    if dry_run:
        say(escape(f"dry run: bundle {name} passed its local run ({record.get('compared')} ids matched "
                   f"submissions/{name}.csv) and {local_csv} passes the check; these calls would be made (no network "
                   "used):"))
        dataset_step = (f"skip the upload: content {digest[:12]} unchanged since the last upload (if Kaggle still "
                        "has it; else CreateDataset)" if unchanged else
                        f"StartBlobUpload + PUT x {n_files} files ({size / 2**20:.1f} MiB), then CreateDataset "
                        f"{dataset_ref} (private; or CreateDatasetVersion if it exists)")
        for line in (
            f"GetSubmissionLimits {comp.name}",
            f"GetKernelSessionStatus {kernel_ref}: resume the version a previous run pushed, when it is this "
            "bundle's and not submitted",
            f"GetDatasetStatus {dataset_ref}",
            dataset_step,
            f"GetDatasetStatus {dataset_ref} until READY",
            f"SaveKernel {kernel_ref} ({kernel_meta['code_file']}, enable_internet false, enable_gpu "
            f"{str(kernel_meta['enable_gpu']).lower()}, private, sources: competition {comp.name}, dataset "
            f"{dataset_ref})",
            f"GetKernelSessionStatus {kernel_ref} until COMPLETE (ERROR: the log's last lines from "
            "ListKernelSessionOutput)",
            f"ListKernelSessionOutput {kernel_ref}: submission.csv must be there; download it and check it (its "
            "sha256 goes in the ledger: what Kaggle scores is the kernel's own output)",
            f"CreateCodeSubmission {comp.name}: kernel {kernel_ref} at the version SaveKernel returns, file "
            f"submission.csv, message {message!r} (sent once; after a 5xx the listing is read, not the call repeated)",
            f"ListSubmissions {comp.name} until scored; then a ledger row in {ws.ledger}",
        ):
            say(f"  {escape(line)}")
        try:  # builds a client only; nothing is sent
            backend = backend or (make() if make else _default_backend(comp.name))
        except CompError as err:
            say(f"  [yellow]a real submit would fail:[/] {escape(str(err))}")
        for line in backend.describe() if backend is not None else []:
            say(f"  {escape(line)}")
        return KernelSubmitResult(ref="", status="dry-run")

    backend = backend or (make() if make else _default_backend(comp.name))
    interval = poll_interval if poll_interval is not None else env_float("COMP_POLL_INTERVAL", 30.0)
    say(escape(backend.preflight()))
    code_sha = sha256_bytes(code.encode())
    version, uploaded_now = _resumable(backend, uploaded, kernel_ref, digest, code_sha, say), False
    if not version:
        uploaded_now = _upload_dataset(backend, paths, name, dataset_meta, uploaded, digest, unchanged, n_files, size,
                                       say)
        backend.wait_dataset(dataset_ref, DATASET_WAIT_S, interval, say)
        url, version = backend.push_kernel(kernel_meta, code)
        say(escape(f"kernel {kernel_ref} version {version} pushed ({url}); Kaggle runs it now"))
        _remember(paths, kernel=kernel_ref, kernel_version=version, pushed=_now(), notebook_sha256=code_sha,
                  dataset_hash=digest, dataset=dataset_ref, submitted=None, submitting=None)
    limit = kernel_timeout if kernel_timeout is not None else _time_limit(paths)
    outcome = backend.wait_kernel(kernel_ref, limit, interval, say)
    if outcome.status != "complete":
        files, tail = backend.kernel_output(kernel_ref)
        why = outcome.message or outcome.status
        if outcome.status == "running":
            raise CompError(f"kernel {kernel_ref} v{version} is still running after {limit / 3600:.1f} h; nothing was "
                            f"submitted. Run `comp submit --kernel {name} -m ...` again later: it resumes waiting for "
                            f"v{version} (no new version is pushed, the dataset is not re-uploaded)")
        raise CompError(f"kernel {kernel_ref} v{version} ended {outcome.status} ({why}); nothing was submitted. "
                        f"The last lines of its log:\n{tail or '(empty)'}")
    files, _ = backend.kernel_output(kernel_ref)
    if "submission.csv" not in files:
        raise CompError(f"kernel {kernel_ref} v{version} finished without a submission.csv (outputs: "
                        f"{', '.join(files) or 'none'}); nothing was submitted")
    # What Kaggle scores is the kernel's own output: download it, check it, and record its hash (not the local run's).
    output = paths.kernel_output
    backend.download_output(kernel_ref, "submission.csv", output)
    output_report = checked(comp, ws, output)
    for warning in output_report.warnings:
        if "identical" not in warning:
            say(f"[yellow]warning:[/] the kernel's output: {escape(warning)}")
    ref = _create_once(backend, paths, kernel_ref, version, message, say)
    row = {
        "time": _now(), "file": ws.shown(output), "sha256": sha256_file(output), "message": message,
        **ledger.sidecar(ws, ws.submission_csv(name)), "platform": comp.platform, "ref": ref, "status": "pending",
        "kernel": f"{kernel_ref} v{version}; dataset {dataset_ref} @{digest[:12]}",
    }
    try:
        ledger.append(ws, row)
    except CompError as err:
        raise CompError(f"kernel {kernel_ref} v{version} WAS submitted as {ref}, but the ledger could not record it: "
                        f"{err}") from None
    _remember(paths, submitted={"version": version, "ref": ref}, submitting=None)
    say(escape(f"submitted kernel {kernel_ref} v{version} to {comp.name} as {ref}; recorded in {ws.ledger}"))
    if not wait:
        return KernelSubmitResult(ref, "pending", version, uploaded_now)
    remote = poll(backend, ref, timeout, env_float("COMP_POLL_INTERVAL", 5.0) if poll_interval is None
                  else poll_interval, say)
    if remote is None or remote.status == "pending":
        say(f"[yellow]{ref} is still being scored after {timeout:g} s;[/] run `comp submissions --refresh` later")
        return KernelSubmitResult(ref, "pending", version, uploaded_now)
    ledger.update(ws, comp.platform, ref, status=remote.status, public_score=remote.public_score,
                  private_score=remote.private_score)
    return KernelSubmitResult(ref, remote.status, version, uploaded_now, remote.public_score, remote.error)


def _resumable(backend: Any, uploaded: dict, kernel_ref: str, digest: str, code_sha: str, say: Say) -> int:
    """The kernel version a previous run pushed and did not submit, when it is this bundle's (same dataset content
    and notebook) and Kaggle still runs it or has finished it; 0 otherwise (push a new version)."""
    version = int(uploaded.get("kernel_version") or 0)
    same = (uploaded.get("kernel") == kernel_ref and uploaded.get("dataset_hash") == digest
            and uploaded.get("notebook_sha256") == code_sha)
    if not version or not same or (uploaded.get("submitted") or {}).get("version") == version:
        return 0
    try:
        state = backend.kernel_state(kernel_ref)
    except CompError:  # gone (deleted on the website) or unreadable: push a new version as a first run would
        return 0
    if state.status not in ("running", "complete"):
        return 0
    say(escape(f"kernel {kernel_ref} v{version} (pushed {uploaded.get('pushed', '?')}) is {state.status}: resuming "
               "it, nothing pushed or uploaded again"))
    return version


def _upload_dataset(backend: Any, paths: BundlePaths, name: str, dataset_meta: dict, uploaded: dict, digest: str,
                    unchanged: bool, n_files: int, size: int, say: Say) -> bool:
    """Upload the dataset unless Kaggle already holds this content ready; True when it was uploaded. A version that
    Kaggle failed to process is uploaded again, even with unchanged content."""
    dataset_ref = dataset_meta["id"]
    state = backend.dataset_status(dataset_ref)
    if unchanged and state not in ("missing", "failed", "deleted"):
        say(escape(f"dataset {dataset_ref}: unchanged (content {digest[:12]}), not uploaded again"))
        return False
    verb = {"missing": "creating", "failed": "uploading again (Kaggle failed to process the last version)",
            "deleted": "uploading again (Kaggle reports the last version deleted)"}.get(state, "new version")
    say(escape(f"dataset {dataset_ref}: {verb} ({n_files} files, {size / 2**20:.1f} MiB)"))
    backend.upload_dataset(paths.dataset, dataset_ref, dataset_meta.get("title", ""), create=state == "missing",
                           notes=f"comp bundle {name} {digest[:12]}", say=say)
    _remember(paths, dataset=dataset_ref, dataset_hash=digest, uploaded=_now())
    return True


def _create_once(backend: Any, paths: BundlePaths, kernel_ref: str, version: int, message: str, say: Say) -> str:
    """CreateCodeSubmission for `version`, never twice blindly: an earlier attempt whose answer was lost is looked
    up in the listing first (by message and time), and an attempt that fails that way is recorded for the next run."""
    from comp.platforms.kaggle_code import SubmitUnknown

    uploaded = json.loads(paths.uploaded.read_text(encoding="utf-8")) if paths.uploaded.is_file() else {}
    earlier = uploaded.get("submitting") or {}
    if earlier.get("version") == version and earlier.get("message") == message:
        found = backend.find_code_submission(message, "submission.csv", datetime.fromisoformat(earlier["since"]))
        if found:
            say(escape(f"the earlier attempt to submit v{version} did create {found}; recording it (not sent again)"))
            return found
        say(escape(f"the earlier attempt to submit v{version} is not in Kaggle's listing; submitting it now"))
    since = datetime.now(timezone.utc)
    _remember(paths, submitting={"version": version, "message": message, "since": since.isoformat()})
    try:
        return backend.submit_code(kernel_ref, version, message, since=since)
    except SubmitUnknown:
        raise
    except CompError:
        _remember(paths, submitting=None)  # refused: nothing was created
        raise


def _remember(paths: BundlePaths, **fields: Any) -> None:
    """Merge `fields` into bundles/NAME/uploaded.json (None removes a field)."""
    before = json.loads(paths.uploaded.read_text(encoding="utf-8")) if paths.uploaded.is_file() else {}
    merged = {k: v for k, v in {**before, **fields}.items() if v is not None}
    atomic.write_json(paths.uploaded, merged)


def _default_backend(competition: str) -> Any:
    from comp.platforms.kaggle_code import KaggleCodeBackend

    return KaggleCodeBackend.from_env(competition)


def _time_limit(paths: BundlePaths) -> float:
    try:
        hours = float(json.loads(paths.record.read_text(encoding="utf-8")).get("time_limit_h") or 9.0)
    except (OSError, ValueError):
        hours = 9.0
    return hours * 3600 + 600  # Kaggle stops the session at the limit; a little more for queueing


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
