"""The lock of a (model, fold) run while it trains: which process (pid) on which machine (host) holds it.

`comp train` takes it for each fold and removes it when the fold ends, however it ends (finished, error, Ctrl-C).
A lock left behind means the process died (SIGKILL, power loss, a crashed node). `comp status` reads it to tell a
run that is training now from one that is not, and a second `comp train` of the same fold is refused while the
first is alive. A process on another host cannot be checked from here, so such a lock counts as alive.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from comp.core import atomic
from comp.core.errors import CompError
from comp.core.workspace import RunPaths, Workspace


@dataclass(frozen=True)
class Holder:
    """Who holds a run's lock; `alive` is False when that process is gone (a dead run)."""

    pid: int
    host: str
    started: str
    alive: bool


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (signal 0 checks without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder(paths: RunPaths) -> Holder | None:
    """The lock's holder, or None when the run is not locked (an unreadable lock counts as a dead one)."""
    try:
        data: dict[str, Any] = json.loads(paths.lock.read_text(encoding="utf-8"))
        pid, host = int(data["pid"]), str(data["host"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return Holder(0, "?", "", alive=False)
    alive = pid_alive(pid) if host == socket.gethostname() else True
    return Holder(pid, host, str(data.get("started", "")), alive)


@contextmanager
def run_lock(paths: RunPaths, alias: str, fold: int | str, enabled: bool = True) -> Iterator[None]:
    """Hold `paths`' lock while the block runs; refuse when a live process already holds it."""
    if not enabled:  # DDP ranks other than 0: rank 0 holds the lock for the group
        yield
        return
    current = holder(paths)
    if current is not None and current.alive and current.pid != os.getpid():
        raise CompError(
            f"{alias} fold {fold} is being trained by process {current.pid} on {current.host} (since "
            f"{current.started}); wait for it, or stop it and run the command again ({paths.lock} holds the lock)"
        )
    paths.lock.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(paths.lock, {"pid": os.getpid(), "host": socket.gethostname(),
                                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    try:
        yield
    finally:
        paths.lock.unlink(missing_ok=True)


def live_runs(ws: Workspace) -> list[tuple[str, str, Holder]]:
    """(alias, run, holder) of every run of the workspace (a fold, or the full fit) a live process trains now."""
    out = []
    for lock in sorted(ws.models_dir.glob("*/.*.lock")) if ws.models_dir.is_dir() else []:
        name = lock.name[1:-len(".lock")]
        found = holder(RunPaths(lock.with_name(name)))
        if found is not None and found.alive:
            out.append((lock.parent.name, name.removeprefix("fold"), found))
    return out
