"""`comp train --budget 2h`: time the first training steps, then choose epochs (and maybe a smaller img_size) so the
whole command, every requested fold included, ends within the budget.

The plan is a cost model fitted to this machine at this moment: per fold, building the model, then per epoch the
training images at the measured training rate plus the held-out images at the measured evaluation rate, and at the
end the held-out and test images once per TTA view. Every term is measured on the real data with the real recipe
(a few steps of the real Trainer on the real loader), so what the model leaves out is small; the plan keeps 5% of
the budget in reserve for it. Epochs fill the budget up to `MAX_EPOCH_FACTOR` times the recipe's; when even the
recipe's own epochs do not fit and the recipe sets `min_img_size`, the image side shrinks (compute grows with the
square of the side) before epochs are cut.

The chosen epochs and img_size become ordinary recipe settings (`--set epochs=N --set img_size=S`), so they are
hashed, recorded in each fold's provenance and resolved recipe, and a resumed run (same command again) reuses the
plan its folds recorded instead of planning anew.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from comp.core.errors import CompError
from comp.modeling.recipe import Recipe
from comp.training.pace import duration

RESERVE = 0.05  # fraction of the budget kept for what the cost model leaves out
MAX_EPOCH_FACTOR = 3  # a budget never plans more than this many times the recipe's epochs
SIZE_STEP = 32  # candidate image sides go down from img_size in steps of this many px (CNN strides divide it)
PROBE_STEPS = 4  # at least this many timed training steps (after 2 untimed warm-up steps) ...
PROBE_SHARE = 0.02  # ... and more until this share of the budget (at least PROBE_MIN_S) or one epoch is spent:
PROBE_MIN_S = 3.0  # on a shared machine the rate swings with other processes, and a longer probe averages them


class _ProbeDone(Exception):
    """Raised from the probe's progress callback to end its epoch early."""


@dataclass(frozen=True)
class Rates:
    """Seconds per image on this machine for one image side, and the fixed costs of a fold."""

    img_size: int
    train_s: float  # one training image (forward + backward + optimizer step, loader included)
    eval_s: float  # one evaluation image, one view
    fold_s: float  # building the model and writing a fold's artifacts
    epoch_s: float = 0.0  # per epoch: starting the loader and its first batches, beyond the steady rate

    def scaled(self, side: int) -> Rates:
        """The rates at another image side: compute grows with the pixel count."""
        f = (side / self.img_size) ** 2
        return Rates(side, self.train_s * f, self.eval_s * f, self.fold_s, self.epoch_s)


@dataclass(frozen=True)
class FoldShape:
    """What one fold processes: training rows per epoch, held-out rows, test rows, TTA views at the end."""

    n_train: int
    n_val: int
    n_test: int
    views: int


@dataclass(frozen=True)
class Plan:
    budget_s: float
    epochs: int
    img_size: int
    planned_s: float  # the predicted time of the whole command, set-up so far included
    elapsed_s: float  # spent before training started (loading, decoding, probing)
    rates: Rates
    capped: bool = False  # the budget allowed more than MAX_EPOCH_FACTOR x the recipe's epochs
    reused: bool = False  # taken from the folds of an interrupted run under the same budget

    @property
    def overrides(self) -> list[str]:
        return [f"epochs={self.epochs}", f"img_size={self.img_size}"]

    def describe(self, recipe: Recipe, n_folds: int) -> str:
        if self.reused:
            return (f"budget {duration(self.budget_s)}: resuming with the plan these folds were started with, "
                    f"{self.epochs} epochs at {self.img_size} px")
        r = self.rates
        was = f"recipe: {recipe.epochs} epochs at {recipe.img_size or 'the model default'} px"
        cap = f"; capped at {MAX_EPOCH_FACTOR}x the recipe's epochs" if self.capped else ""
        return (
            f"budget {duration(self.budget_s)}: measured {1 / r.train_s:.0f} training and {1 / r.eval_s:.0f} "
            f"evaluation img/s at {r.img_size} px; plan {n_folds} fold{'s' if n_folds != 1 else ''} x {self.epochs} "
            f"epoch{'s' if self.epochs != 1 else ''} at {self.img_size} px, about {duration(self.planned_s)} in all "
            f"({duration(self.elapsed_s)} of it already spent setting up; {was}{cap})"
        )


def predicted_seconds(epochs: int, rates: Rates, folds: list[FoldShape]) -> float:
    """Seconds that `folds` take at `epochs` with `rates`."""
    total = 0.0
    for f in folds:
        per_epoch = rates.epoch_s + f.n_train * rates.train_s + f.n_val * rates.eval_s
        total += rates.fold_s + epochs * per_epoch + (f.n_val + f.n_test) * f.views * rates.eval_s
    return total


def choose(budget_s: float, elapsed_s: float, recipe: Recipe, rates: Rates, folds: list[FoldShape],
           resize_s: float = 0.0) -> Plan:
    """The plan for `folds` within what is left of `budget_s`: the largest image side (down to min_img_size) that
    fits the recipe's epochs, then as many epochs as fit. `resize_s` is what re-decoding the images at another side
    costs (paid only when the side changes)."""
    usable = budget_s * (1 - RESERVE) - elapsed_s
    want = recipe.epochs
    sides = [rates.img_size]
    if recipe.min_img_size and recipe.min_img_size < rates.img_size:
        side = rates.img_size - SIZE_STEP
        while side > recipe.min_img_size:
            sides.append(side)
            side -= SIZE_STEP
        sides.append(recipe.min_img_size)
    best: tuple[int, int, Rates, float] | None = None
    for side in sides:
        at = rates if side == rates.img_size else rates.scaled(side)
        left = usable - (0.0 if side == rates.img_size else resize_s)
        fixed = predicted_seconds(0, at, folds)
        per_epoch = predicted_seconds(1, at, folds) - fixed
        epochs = int((left - fixed) // per_epoch) if per_epoch > 0 else want
        best = (side, epochs, at, left)
        if epochs >= want:
            break
    side, epochs, at, _ = best
    if epochs < 1:
        one = predicted_seconds(1, at, folds)
        raise CompError(
            f"budget {duration(budget_s)} is too short: one epoch of {len(folds)} fold(s) at {side} px takes about "
            f"{duration(one)} here, after {duration(elapsed_s)} of set-up; give a longer --budget, fewer folds "
            f"(--fold K), or a smaller image (--set img_size=N, or min_img_size in the recipe)"
        )
    cap = MAX_EPOCH_FACTOR * recipe.epochs
    capped = epochs > cap
    epochs = min(epochs, cap)
    planned = elapsed_s + predicted_seconds(epochs, at, folds) + (0.0 if side == rates.img_size else resize_s)
    return Plan(budget_s, epochs, side, planned, elapsed_s, at, capped)


def measure(job, train_idx: np.ndarray, val_idx: np.ndarray, budget_s: float) -> Rates:
    """Time the fold's real work on `job` (comp.training.train's): building the model and trainer, training steps on
    the real loader (the first two untimed: worker start-up and allocation; then for PROBE_SHARE of the budget), and
    evaluating a few batches."""
    from comp.modeling.models import build_model
    from comp.training.loop import Trainer
    from comp.vision import augment, images

    recipe = job.recipe
    t0 = time.perf_counter()
    model = build_model(recipe, job.comp.num_classes, ws=job.ws)
    trainer = Trainer(recipe, model, job.data_config, job.ddp.device, len(train_idx), job.ddp.world,
                      multilabel=job.multilabel)
    fold_s = time.perf_counter() - t0
    dataset = images.ArrayDataset(job.train_images, job.y, augment.train_transform(job.data_config, recipe))
    rows = probe_indices(train_idx, recipe.batch_size, max(PROBE_STEPS + 2, -(-len(train_idx) // recipe.batch_size)),
                         recipe.seed)
    probe_s = max(PROBE_MIN_S, PROBE_SHARE * budget_s)
    loader = job._loader(dataset, rows, trainer, 0, 0)
    marks: list[float] = []
    counts: list[int] = []

    def advance(n: int) -> None:
        marks.append(time.perf_counter())
        counts.append(n)
        if len(marks) >= PROBE_STEPS + 2 and marks[-1] - marks[1] >= probe_s:
            raise _ProbeDone

    # An epoch past the frozen ones: the whole model trains (the costliest step the run will take).
    start = time.perf_counter()
    try:
        trainer.train_epoch(loader, recipe.freeze_epochs, advance)
    except _ProbeDone:
        pass
    del loader
    if hasattr(trainer, "close"):
        trainer.close()  # the probe's loader workers stop here
    if len(marks) >= 3:
        train_s = (marks[-1] - marks[1]) / max(1, sum(counts[2:]))
        epoch_s = max(0.0, (marks[1] - start) - sum(counts[:2]) * train_s)
    else:
        train_s, epoch_s = (marks[-1] - start) / max(1, sum(counts)), 0.0
    batch = recipe.eval_batch_size or 2 * recipe.batch_size
    sample = np.resize(val_idx, min(len(val_idx), 2 * batch) or 1)
    job.predict(trainer.eval_model(), job.train_images, sample[:batch], "none")  # warm-up
    t1 = time.perf_counter()
    job.predict(trainer.eval_model(), job.train_images, sample, "none")
    eval_s = (time.perf_counter() - t1) / len(sample)
    return Rates(int(job.data_config["input_size"][-1]), max(train_s, 1e-6), max(eval_s, 1e-7), fold_s, epoch_s)


def process_started() -> float | None:
    """When this process started (epoch seconds; Linux /proc), so a --budget also covers Python's and torch's own
    start-up; None where unknown (the budget then starts when training does)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5), counted after the ")" that ends the command name
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        started = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    # More than a minute ago: not one command's start-up but a long-lived host process (a notebook, a test run).
    return started if 0 <= time.time() - started < 60 else None


def tta_views(tta: str, data_config: dict) -> int:
    from comp.vision.tta import tta_transforms

    return max(1, sum(1 for _ in tta_transforms(tta, data_config)))


def probe_indices(rows: np.ndarray, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """`steps` batches of training rows (rows repeat when the fold is small)."""
    rng = np.random.default_rng(seed)
    need = steps * batch_size
    return rng.permutation(np.resize(rows, need))


def finished_line(plan: Plan, took_s: float) -> str:
    off = (took_s - plan.planned_s) / max(plan.planned_s, 1e-9)
    return (f"budget {duration(plan.budget_s)}: planned {duration(plan.planned_s)}, took {duration(took_s)} "
            f"({off:+.0%} of the plan)")
