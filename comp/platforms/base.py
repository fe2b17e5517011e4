"""What every platform backend shares: the `Backend` protocol, `Remote` (a submission as the platform sees it),
credential redaction, safe names, upload retries and polling.

Credentials are read by the backends and never leave them: every message built from a server's answer goes through
`redact`, and the ledger only ever holds where a credential came from, not its value.
"""

from __future__ import annotations

import email.utils
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar

from comp.core.errors import CompError

Say = Callable[[str], None]
T = TypeVar("T")


# Names a platform may see: Kaggle and CodaBench keep the upload's file name, and a slug names a folder under data/.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass(frozen=True)
class Remote:
    """One submission as the platform reports it."""

    ref: str  # Kaggle's submission ref / CodaBench's submission id, as text
    status: str  # pending | complete | error
    public_score: str = ""
    private_score: str = ""
    error: str = ""  # the platform's error text when status is "error"


class Backend(Protocol):
    """What `submit_file` needs from a platform."""

    platform: str

    def describe(self) -> list[str]:
        """Lines saying where a submission would go and with which credential source (never its value)."""

    def preflight(self) -> str:
        """Cheap checks before uploading (access, limits); returns a line to show, raises CompError to refuse."""

    def upload(self, path: Path, message: str) -> str:
        """Send the file; return the platform's ref once it has accepted the submission."""

    def status(self, ref: str) -> Remote | None:
        """The submission's current state, or None when the platform does not list it (yet)."""


def redact(text: str, secrets: list[str]) -> str:
    """`text` with every credential value replaced, for messages that quote a server's answer."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def safe_name(value: str, what: str) -> str:
    """Refuse names with path components or odd characters (they become URL paths, upload names or folders)."""
    if not _SAFE_NAME.match(value or "") or value in (".", ".."):
        raise CompError(
            f"{what} {value!r} is not a plain name: use letters, digits, '.', '_' or '-' only, "
            "no '/' or '..' (rename the file or fix the value)"
        )
    return value


def safe_file_name(value: str, what: str = "submission file name") -> str:
    """A file name the platform keeps as given: no folders, no control characters, not hidden."""
    if not value or any(c in value for c in '/\\:') or value.startswith(".") or not value.isprintable():
        raise CompError(
            f"{what} {value!r} has path components or odd characters; rename the file to a plain name such as "
            "submission.csv"
        )
    return value


def env_float(name: str, default: float) -> float:
    """A float setting from the environment (poll intervals, backoff), with a clear error when malformed."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise CompError(f"${name} = {raw!r} is not a number of seconds; unset it or use e.g. {name}=5") from None
    if value < 0:
        raise CompError(f"${name} = {raw!r} is negative; use a number of seconds >= 0")
    return value


RETRY_STATUS = frozenset({429, 500, 502, 503, 504})  # answers that may pass on a later attempt
MAX_RETRY_AFTER = 120.0  # seconds: a longer Retry-After is not waited out, the command fails and says so


def retry_after(response: Any) -> float:
    """Seconds a 429/503 answer asks to wait (`Retry-After`: seconds or an HTTP date); 0 when it does not say."""
    raw = str(getattr(response, "headers", {}).get("Retry-After", "") or "").strip()
    if not raw:
        return 0.0
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds()) if when.tzinfo else 0.0


def with_retries(call: Callable[[], T], wait_for: Callable[[BaseException], float | None], retries: int,
                 backoff: float) -> T:
    """`call()`, tried up to `retries` times while it raises an error `wait_for` calls transient (a number of seconds
    the server asked for, 0 for "no preference"; None: final). Waits grow exponentially from `backoff` and are
    never shorter than the server's Retry-After. Only for calls that are safe to repeat."""
    for n in range(1, retries + 1):
        try:
            return call()
        except Exception as err:
            asked = wait_for(err)
            if asked is None or n == retries or asked > MAX_RETRY_AFTER:
                raise
            time.sleep(max(asked, backoff * 2 ** (n - 1)))
    raise AssertionError("unreachable")  # the loop returns or raises


def upload_with_retries(attempt: Callable[[], tuple[str, str]], retries: int, backoff: float, platform: str,
                        hint: str) -> str:
    """Run `attempt` (-> (ref, "") on success, ("", why) on a retryable failure) up to `retries` times with
    exponential backoff; returns the ref, or raises a CompError saying nothing was submitted. Final refusals are
    raised by `attempt` itself and end the loop at once."""
    why = ""
    for n in range(1, retries + 1):
        ref, why = attempt()
        if ref:
            return ref
        if n < retries:
            time.sleep(backoff * 2 ** (n - 1))
    raise CompError(
        f"the upload to {platform} failed after {retries} attempts ({why}); nothing was submitted and nothing "
        f"recorded. {hint}"
    )


def poll(backend: Backend, ref: str, timeout: float, interval: float, say: Say | None = None) -> Remote | None:
    """Ask for `ref` until it is no longer pending or `timeout` seconds pass; returns the last answer."""
    deadline = time.monotonic() + timeout
    said = -math.inf
    last: Remote | None = None
    while True:
        last = backend.status(ref)
        if last is not None and last.status != "pending":
            return last
        if time.monotonic() + interval > deadline:
            return last
        if say and time.monotonic() - said >= 60:  # a sign of life now and then, not a line per poll
            say(f"  {ref}: {'pending' if last is None else last.status}, waiting up to {timeout:g} s...")
            said = time.monotonic()
        time.sleep(interval)
