"""A run's files on disk: the resumable last state (written after every epoch), history and curves, and whether
an existing run may be skipped, resumed or must be refused.

The last state is written atomically after every completed epoch, so a run killed at any moment (even SIGKILL
mid-write) restarts from the last whole epoch. Provenance (comp.runs.Run) is written when a run starts and again
when it finishes; `check_run` compares it with the inputs in force through `comp.runs.require_current` before
reusing anything.
"""

from __future__ import annotations

import random
import shutil
from typing import Any

import numpy as np
import torch

from comp.core import atomic
from comp.core.errors import CompError, StaleError
from comp.core.workspace import RunPaths
from comp.runs import INPUTS, Run, read_run, require_current, set_args


def check_run(paths: RunPaths, current: Run, force: bool, wipe: bool, file_recipe: dict[str, Any]) -> bool:
    """Whether the run at `paths` is finished and current (the caller skips it); StaleError when it was made from
    other inputs than `current`'s, unless `force`.

    With `force` nothing is reused: the run directory is emptied (by the caller that `wipe`s, i.e. rank 0 under DDP)
    and training starts over. An unfinished run with matching inputs resumes from its last state. `file_recipe` (the
    recipe file without --set) lets a refusal over recipe settings print the --set that reproduce the recorded ones.
    """
    if force:
        if wipe and paths.dir.exists():
            shutil.rmtree(paths.dir)
        return False
    recorded = read_run(paths)
    alias, k = current.model, current.fold
    if recorded is None:
        if paths.last.exists() or paths.oof.exists():
            raise StaleError(
                f"{alias} fold {k} ({paths.dir}) holds artifacts without provenance.json, so their inputs are "
                f"unknown; re-run with --force to retrain {alias} fold {k} from scratch"
            )
        return False

    def fix(changed: list[str]) -> str:
        text = f"Re-run with --force to retrain {alias} fold {k} from scratch (its old artifacts are replaced)"
        if changed == ["recipe_hash"] and recorded.recipe:
            command = " ".join([f"comp train --model {alias} --fold {k}", *set_args(file_recipe, recorded.recipe)])
            text += f", or keep it by training with the settings it was made with: `{command}`"
        return text

    # Training compares the resolved recipe, not the file: a comment edited in the file changes no setting.
    compared = tuple(f for f in INPUTS if f != "recipe_file_hash")
    require_current(recorded, current, f"{alias} fold {k} ({paths.dir})", fix, fields=compared, required=compared)
    return recorded.finished and paths.output.exists()


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
