"""Sending a checked submission somewhere and recording it: the only package that talks to the network.

`submit_file` is the one road from a CSV to a platform: it always runs `comp.submission.check.check_file` first, sends
the file with the competition's backend (`kaggle.KaggleBackend`, `codabench.CodabenchBackend`, or none), records
it in the ledger as soon as the platform has accepted it, then polls for the score. A backend is any object with
the methods of `Backend`; tests pass one built against a local server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rich.markup import escape

from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.provenance import sha256_file
from comp.core.workspace import Workspace
from comp.platforms.base import Backend, Say, env_float, poll, safe_file_name
from comp.submission import ledger


def newest_submission(ws: Workspace) -> Path:
    """The most recently written submissions/*.csv (the ledger itself excluded)."""
    candidates = [
        p for p in ws.submissions_dir.glob("*.csv") if p.resolve() != ws.ledger.resolve() and not p.name.startswith(".")
    ]
    if not candidates:
        raise CompError(
            f"no submission CSV in {ws.submissions_dir}: build one with `comp stack ...` or pass the file, "
            "e.g. `comp submit path/to/submission.csv -m 'first try'`"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime)


def make_backend(comp: Competition, phase: str = "", zip_name: str = "") -> Backend | None:
    """The backend for `comp.platform` built from the environment (credentials, URLs); None for platform none."""
    if comp.platform == "kaggle":
        from comp.platforms.kaggle import KaggleBackend

        return KaggleBackend.from_env(comp.name)
    if comp.platform == "codabench":
        from comp.platforms.codabench import CodabenchBackend

        return CodabenchBackend.from_env(phase=phase, zip_name=zip_name, toml_phase=comp.codabench_phase,
                                         toml_zip_name=comp.submission_zip_name)
    return None


def checked(comp: Competition, ws: Workspace, path: Path, strict: bool = False):
    """Run the submission check; raise CompError listing the errors. Returns the report (warnings to show)."""
    from comp.submission.check import check_file

    report = check_file(comp, ws, path, strict=strict)
    if report.errors:
        shown = "\n  - ".join(report.errors[:20])
        more = f"\n  ... and {len(report.errors) - 20} more" if len(report.errors) > 20 else ""
        raise CompError(
            f"{path} failed the check, so nothing was sent:\n  - {shown}{more}\n"
            f"Fix it and run `comp check {path}` until it passes."
        )
    return report


@dataclass(frozen=True)
class SubmitResult:
    ref: str  # "" for a dry run
    status: str  # dry-run | recorded | pending | complete | error
    public_score: str = ""
    error: str = ""


def submit_file(
    comp: Competition,
    ws: Workspace,
    path: Path,
    message: str,
    *,
    backend: Backend | None = None,
    make: Callable[[], Backend | None] | None = None,
    dry_run: bool = False,
    wait: bool = True,
    timeout: float = 600.0,
    poll_interval: float | None = None,
    say: Say = print,
) -> SubmitResult:
    """Check `path`, send it to the competition's platform, record it in the ledger and (with `wait`) poll its score.

    `make` builds the backend after the check passed (default: `make_backend(comp)`), so a bad file is reported
    before missing credentials. Nothing reaches the ledger unless the platform accepted the submission; once it
    has, the row is written before polling, so a network error while waiting never loses it
    (`comp submissions --refresh` pulls the score later).
    """
    path = Path(path)
    if not path.is_file():
        raise CompError(f"{path} does not exist or is not a file; pass the submission CSV, e.g. submissions/NAME.csv")
    if not message.strip():
        raise CompError("the submission message is empty; say what this is, e.g. -m 'convnext fold-mean + hflip TTA'")
    safe_file_name(path.name)
    report = checked(comp, ws, path)
    for warning in report.warnings:
        say(f"[yellow]warning:[/] {escape(warning)}")
    digest = sha256_file(path)
    if dry_run:
        say(escape(f"dry run: {path} passed the check; this would be sent (no network used):"))
        say(escape(f"  platform: {comp.platform}   competition: {comp.name}"))
        size = path.stat().st_size
        say(escape(f"  file: {path.name} ({size} bytes, sha256 {digest[:16]}...)   message: {message!r}"))
    if backend is None and comp.platform != "none":
        try:
            backend = (make or (lambda: make_backend(comp)))()  # builds a client; sends nothing yet
        except CompError as err:
            if not dry_run:
                raise
            say(f"  [yellow]a real submit would fail:[/] {escape(str(err))}")
    if dry_run:
        for line in backend.describe() if backend is not None else []:
            say(f"  {escape(line)}")
        return SubmitResult(ref="", status="dry-run")

    row = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "file": ws.shown(path),
        "sha256": digest,
        "message": message,
        **ledger.sidecar(ws, path),
        "platform": comp.platform,
    }
    if backend is None:
        ledger.append(ws, {**row, "ref": "", "status": "recorded"})
        say(escape(f"platform is none: recorded {path.name} in {ws.ledger} (nothing was uploaded)"))
        return SubmitResult(ref="", status="recorded")

    say(escape(backend.preflight()))
    ref = backend.upload(path, message)
    try:
        ledger.append(ws, {**row, "ref": ref, "status": "pending"})
    except CompError as err:
        raise CompError(f"{path.name} WAS submitted to {comp.platform} as {ref}, but the ledger could not record it: "
                        f"{err}") from None
    say(escape(f"submitted {path.name} to {comp.platform} as {ref}; recorded in {ws.ledger}"))
    if not wait:
        try:  # the platform said yes; make sure it also lists the submission before calling it done
            listed = backend.status(ref) is not None
        except CompError as err:
            listed, why = False, str(err)
        else:
            why = "it does not list it yet"
        if not listed:
            say(f"[yellow]warning:[/] could not confirm {ref} on {comp.platform} ({escape(why)}); "
                "check with `comp submissions --refresh`")
        return SubmitResult(ref=ref, status="pending")

    interval = poll_interval if poll_interval is not None else env_float("COMP_POLL_INTERVAL", 5.0)
    try:
        remote = poll(backend, ref, timeout, interval, say)
    except CompError as err:
        raise CompError(
            f"{err}\nThe submission went through ({ref}) and is in the ledger; later run `comp submissions --refresh`"
        ) from None
    if remote is None or remote.status == "pending":
        say(f"[yellow]{ref} is still being scored after {timeout:g} s;[/] run `comp submissions --refresh` later")
        return SubmitResult(ref=ref, status="pending")
    ledger.update(ws, comp.platform, ref, status=remote.status, public_score=remote.public_score,
                  private_score=remote.private_score)
    return SubmitResult(ref=ref, status=remote.status, public_score=remote.public_score, error=remote.error)


def refresh(comp: Competition, ws: Workspace, backend: Backend | None = None) -> int:
    """Pull the state of every ledger row of this platform that is not final yet; returns how many rows changed."""
    frame = ledger.read(ws)
    # Final rows are not asked again: an error, or a complete one whose last score is known (Kaggle reveals the
    # private score after the deadline, so its complete rows stay open until then; CodaBench has one score).
    final = (frame["status"] == "error") | ((frame["status"] == "complete") & (
        (frame["platform"] != "kaggle") | (frame["private_score"] != "")))
    rows = frame[(frame["platform"] == comp.platform) & (frame["ref"] != "") & ~final]
    if rows.empty or comp.platform == "none":
        return 0
    backend = backend or make_backend(comp)
    changed = 0
    for ref in dict.fromkeys(rows["ref"]):
        remote = backend.status(ref)
        if remote is None:
            continue
        before = frame[(frame["platform"] == comp.platform) & (frame["ref"] == ref)].iloc[0]
        after = {"status": remote.status, "public_score": remote.public_score, "private_score": remote.private_score}
        if any(str(before[k]) != v for k, v in after.items()):
            ledger.update(ws, comp.platform, ref, **after)
            changed += 1
    return changed
