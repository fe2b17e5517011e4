"""A run's files on disk: the resumable last state (written after every epoch), history and curves, and whether
an existing run may be skipped, resumed or must be refused.

The last state is written atomically after every completed epoch, so a run killed at any moment (even SIGKILL
mid-write) restarts from the last whole epoch. Provenance (comp.runs.Run) is written when a run starts and again
when it finishes; `plan_run` compares it with the inputs in force through `comp.runs.require_current` before
reusing anything. A replacement (`--force`) is built beside the run and swapped in when finished (`swap_in`).
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from comp.core import atomic
from comp.core.errors import CompError, StaleError
from comp.core.workspace import RunPaths
from comp.runs import INPUTS, Run, differences, read_run, require_current, set_args


@dataclass(frozen=True)
class Target:
    """Where one fold trains now, decided before anything is touched (`plan_run`)."""

    paths: RunPaths  # the run itself, or its staging folder when an existing run is being replaced
    finished: bool = False  # nothing to train: `paths` holds a finished, current run
    wipe: bool = False  # empty `paths.dir` before training (stale leftovers of an interrupted replacement)
    swap: bool = False  # `paths` is the staging folder: swap it in for the run once finished (`swap_in`)


# Training compares the resolved recipe, not the file: a comment edited in the file changes no setting.
COMPARED = tuple(f for f in INPUTS if f != "recipe_file_hash")


def plan_run(paths: RunPaths, current: Run, force: bool, file_recipe: dict[str, Any]) -> Target:
    """Where the run at `paths` trains for the inputs of `current`, without changing any file.

    Without `force`: a finished current run is skipped, an unfinished one resumes, a stale one is refused
    (StaleError naming each changed input). With `force` an existing run is never deleted first: the new one is
    built in `paths.staging` and swapped in only when finished (`swap_in`), so an error, a full disk or Ctrl-C half
    way leaves the trained run as it was; running the same command again resumes the staging run. A staging run
    that finished but was not swapped in yet (killed at the swap) is swapped in by either command.
    `file_recipe` (the recipe file without --set) lets a refusal print the --set that reproduce the recorded ones.
    """
    staging = paths.staging
    pending = _current_record(staging, current)
    if pending is not None and pending.finished and staging.output.exists():
        return Target(staging, finished=True, swap=True)
    if force:
        if not _has_files(paths.dir):
            return Target(paths, wipe=paths.dir.exists())
        return Target(staging, wipe=pending is None and staging.dir.exists(), swap=True)
    recorded = read_run(paths)
    alias, k = current.model, current.fold
    if recorded is None:
        if paths.last.exists() or paths.oof.exists():
            raise StaleError(
                f"{alias} fold {k} ({paths.dir}) holds artifacts without provenance.json, so their inputs are "
                f"unknown; re-run with --force to retrain {alias} fold {k} from scratch"
            )
        return Target(paths)

    def fix(changed: list[str]) -> str:
        text = (f"Re-run with --force to retrain {alias} fold {k} (the trained one stays until the new one is "
                "finished)")
        if changed == ["recipe_hash"] and recorded.recipe:
            command = " ".join([f"comp train --model {alias} --fold {k}", *set_args(file_recipe, recorded.recipe)])
            text += f", or keep it by training with the settings it was made with: `{command}`"
        return text

    require_current(recorded, current, f"{alias} fold {k} ({paths.dir})", fix, fields=COMPARED, required=COMPARED)
    return Target(paths, finished=recorded.finished and paths.output.exists())


def _has_files(folder) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _current_record(paths: RunPaths, current: Run) -> Run | None:
    """The record at `paths` when it was made from the inputs of `current`, else None (absent, unreadable, stale)."""
    try:
        recorded = read_run(paths)
    except CompError:
        return None
    if recorded is None or differences(recorded, current, COMPARED, COMPARED):
        return None
    return recorded


def prepare(target: Target) -> None:
    """Empty the target folder when the plan says so (rank 0 only under DDP)."""
    if target.wipe and target.paths.dir.exists():
        shutil.rmtree(target.paths.dir)


def swap_in(paths: RunPaths) -> None:
    """Put the finished run built in `paths.staging` in place of the run at `paths`: the old one is renamed aside,
    the new one renamed in, the old one removed. A kill between the two renames is finished by `RunPaths.settle`
    (every `Workspace.run` calls it), so a reader sees the old run or the new one, never neither."""
    new, old = paths.staging.dir, paths.retired
    try:
        shutil.rmtree(old, ignore_errors=True)
        if paths.dir.exists():
            atomic.fault_point(old)
            os.replace(paths.dir, old)
        atomic.fault_point(paths.dir)
        try:
            os.replace(new, paths.dir)
        except FileNotFoundError:
            if not paths.dir.exists():  # else a reader's settle() moved it in first
                raise
    except OSError as err:
        paths.settle()
        raise CompError(f"could not move the retrained run {new} into {paths.dir} ({err.strerror}); it is "
                        "complete: move it there by hand") from err
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# weights and state


def rng_state() -> dict[str, Any]:
    # Plain lists and tensors only, so the state loads with torch.load(weights_only=True).
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Sink:
    """A file torch.save writes through, keeping the OSError of a failed write (torch only raises a RuntimeError
    "unexpected pos ..." without it), so a full disk is worded as one."""

    def __init__(self, fh) -> None:
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.fh.flush()


def save_last(paths: RunPaths, state: dict[str, Any]) -> None:
    """The resumable state (model, optimizer, scheduler, scaler, EMA, RNG, epoch, history), written atomically."""
    with atomic.atomic_path(paths.last) as tmp, open(tmp, "wb") as fh:
        sink = _Sink(fh)
        try:
            torch.save({**state, "rng": rng_state()}, sink)
        except RuntimeError as err:
            raise (sink.error or atomic.library_error(err)) from err


def load_last(paths: RunPaths) -> dict[str, Any] | None:
    if not paths.last.exists():
        return None
    try:
        return torch.load(paths.last, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CompError(
            f"cannot read the resume state {paths.last} ({err}); re-run with --force to start over"
        ) from err


def write_history(paths: RunPaths, history: list[dict[str, Any]], metric: str) -> None:
    """history.csv (one row per epoch) and curves.png (losses and the validation metric per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(history)
    atomic.write_csv(paths.history, frame)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(frame["epoch"], frame["train_loss"], marker="o", label="train loss")
    left.plot(frame["epoch"], frame["val_loss"], marker="o", label="validation loss")
    left.set_xlabel("epoch")
    left.legend()
    right.plot(frame["epoch"], frame[f"val_{metric}"], marker="o", color="tab:green")
    right.set_xlabel("epoch")
    right.set_ylabel(f"validation {metric}")
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):  # whole epochs only; one epoch gets a readable axis around it, not 0.96 .. 1.04
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(frame) == 1:
            ax.set_xlim(frame["epoch"].iloc[0] - 1, frame["epoch"].iloc[0] + 1)
    last = frame[f"val_{metric}"].iloc[-1] if len(frame) else float("nan")
    fig.suptitle(f"{paths.dir.parent.name} {paths.dir.name}: validation {metric} {last:.4f} after epoch "
                 f"{frame['epoch'].iloc[-1] if len(frame) else 0}")
    fig.tight_layout()
    with atomic.atomic_path(paths.curves) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
