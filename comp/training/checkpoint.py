"""A run's files on disk: best weights (safetensors), the resumable last state, provenance and staleness checks.

The last state is written atomically after every completed epoch, so a run killed at any moment (even SIGKILL
mid-write) restarts from the last whole epoch. Provenance is written when a run starts and again when it finishes;
it records the hashes of what the run was made from, and a later run compares them before reusing anything.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from comp.core import atomic
from comp.core.errors import CompError, StaleError
from comp.core.workspace import RunPaths
from comp.runs import read_provenance

# What a run is made from; a change in any of these makes its artifacts stale.
INPUTS = {
    "recipe_hash": "the recipe",
    "folds_hash": "the folds (folds/folds.csv)",
    "competition_hash": "comp.toml",
}


@dataclass(frozen=True)
class RunState:
    """Where a run stands before training: `finished` (skip it), `resume_epoch` (epochs already done)."""

    finished: bool
    resume_epoch: int


def check_run(paths: RunPaths, inputs: dict[str, str], alias: str, fold: int, force: bool, wipe: bool) -> RunState:
    """Compare a run's recorded inputs with `inputs`; raise StaleError on a mismatch unless `force`.

    With `force` nothing is reused: the run directory is emptied (by the caller that `wipe`s, i.e. rank 0 under DDP)
    and training starts over. A finished run with matching inputs is reported as finished (the caller skips it).
    """
    recorded = read_provenance(paths)
    if force:
        if wipe and paths.dir.exists():
            shutil.rmtree(paths.dir)
        return RunState(False, 0)
    if recorded is None:
        if paths.last.exists() or paths.oof.exists():
            raise StaleError(
                f"{paths.dir} holds artifacts without provenance.json, so their inputs are unknown; "
                f"re-run with --force to retrain {alias} fold {fold} from scratch"
            )
        return RunState(False, 0)
    changed = [what for key, what in INPUTS.items() if recorded.get(key) != inputs[key]]
    if changed:
        raise StaleError(
            f"{alias} fold {fold} in {paths.dir} was made from other inputs: {', '.join(changed)} changed since. "
            f"Re-run with --force to retrain it from scratch (its old artifacts are replaced)"
        )
    if recorded.get("finished") and paths.oof.exists():
        return RunState(True, int(recorded.get("epochs_done", 0)))
    return RunState(False, 0)


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


def save_last(paths: RunPaths, state: dict[str, Any]) -> None:
    """The resumable state (model, optimizer, scheduler, scaler, EMA, RNG, epoch, history), written atomically."""
    with atomic.atomic_path(paths.last) as tmp:
        torch.save({**state, "rng": rng_state()}, tmp)


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
