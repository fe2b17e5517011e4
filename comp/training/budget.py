"""`comp train --budget 5m`: what to train for the time given — image side, epochs, how many of the K folds, and
whether to add a fit on every labelled row — chosen to maximise the expected held-out score.

The planner weighs every allocation that fits and prints each with its predicted score and cost:

    5 folds x 1 epoch at 96 px                   predicted 0.906   4m40s
    1 fold + full fit x 6 epochs at 96 px        predicted 0.962   4m35s  <- chosen

Two models meet in it.

**Cost** is measured, not guessed: the trainer (comp.training.train, through the `Probe` interface) times a few real
training steps on the real loader and a few evaluation batches at the largest candidate side, and each run is then
priced from its own row counts: per run, building the model; per epoch, its training rows at the training rate plus
(for a fold) its held-out rows at the evaluation rate; at the end, held-out and test rows once per TTA view. Other
sides are priced at (side / probed side) ** SIDE_COST_EXP: slower than the pixel count falls, because a CPU step's
fixed costs (loader, per-layer overhead) do not shrink with the image, so the price of a small side is not
underestimated. 5% of the budget is kept for what the model leaves out.

**Score** comes from a rule fitted on real runs (`expected_error`; the runs and the fit are in README "A time budget"):
ImageNet-pretrained fine-tuning of small photo sets reaches a floor error within a few epochs and the remaining
error falls about exponentially with the epochs trained (time constant TAU epochs); one trained on a fraction f of
the rows errs f ** -DATA_EXP times more; averaging m models removes ENSEMBLE_GAIN x (1 - 1/m) of the error. What a
smaller side costs is measured on the set itself when the budget affords it (`SideErrors`: a linear probe on frozen
features at three sides, cheap because it is forward passes only), else the rule's (native / side) **
SIDE_ERROR_EXP. The rule ranks plans; its absolute numbers are a typical set's, not a promise for this one. The
epochs are not piloted: a pilot long enough to extrapolate a learning curve (3+ epochs of one fold) costs a large
share of a short budget (a 3-5 minute budget is 3-6 epochs in all on a CPU), exactly where the allocation matters
most. Instead the plan is held against the clock (`repace`): after a third of the first epoch and after the first
run's early epochs it is chosen again from the measured speed, and later runs the time left cannot hold are dropped
(`run_fits`); `finished_line` reports plan vs. real time.

Where the rule saturates (more epochs than pay off), extra budget goes to more folds (OOF rows for stacking and more
models to average) and a full-data fit. Image sides never exceed the images' native shorter side unless asked
(`--set img_size=N` or img_size in the workspace's own recipe), and go down to `FLOOR_PX` (or the recipe's
min_img_size when it sets one); images smaller than FLOOR_PX are the one exception, weighed upsampled up to
UPSAMPLE_PX against their own side (`capped_side`), the side pilot measuring what that buys. A budget too short
for the recipe is not refused: the largest plan that fits runs; when not even one epoch of one fold at the smallest
side fits, the largest fraction of one epoch that does (recipe `epoch_fraction`: the trainer stops after that share
of the steps, its schedule sized to them), and only when not even FRACTION_FLOOR of an epoch fits is it refused,
naming the budget that would fit. With one epoch or more, time
that a whole epoch more does not fit in is spread over one epoch more (E epochs of a fraction f of their steps).

The plan is written to models/<alias>/plan.json; the same command again (a resumed run) keeps it, and its epochs and
img_size become ordinary recipe settings (hashed and recorded in every run's provenance).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from comp.core.errors import CompError
from comp.core.workspace import FULL
from comp.modeling.recipe import Recipe
from comp.training.pace import duration

RESERVE = 0.05  # fraction of the budget kept for what the cost model leaves out
MAX_EPOCH_FACTOR = 3  # a budget never plans more than this many times the recipe's epochs
SIZE_STEP = 32  # candidate image sides go down in steps of this many px (CNN strides divide it)
FLOOR_PX = 64  # the smallest candidate side (or the images' own side when they are smaller)
UPSAMPLE_PX = 128  # images smaller than FLOOR_PX are weighed upsampled up to this side under a budget
SIDE_COST_EXP = 1.5  # seconds per image scale as side ** this between sides (conservative: a square would be 2)
PROBE_WARMUP = 1  # untimed first training steps (loader start-up, allocation, optimizer state) ...
PROBE_STEPS = 3  # ... then at least this many timed steps ...
PROBE_SHARE = 0.02  # ... and more until this share of the budget (at least PROBE_MIN_S) or one epoch is spent:
PROBE_MIN_S = 3.0  # on a shared machine the rate swings with other processes, and a longer probe averages them
PROBE_CPU_BATCH = 8  # on a CPU a step's seconds grow about linearly with its images, so the probe times small
# steps: a per-image rate at a quarter of the cost (at 224 px on one core, 4 steps of 32 took over a minute of a
# 3-minute budget). Slightly pessimistic (a step's fixed costs count more), so plans err short; on a GPU the rate
# depends on the batch, and the probe keeps the recipe's.

# The side pilot (SideErrors): a linear probe on frozen features of up to PILOT_MAX_ROWS training rows at three
# sides, costing at most PILOT_SHARE of the budget; skipped below PILOT_MIN_ROWS rows or PILOT_MIN_PER_CLASS a class.
PILOT_SHARE = 0.05
PILOT_MAX_ROWS = 384
PILOT_MIN_ROWS = 48
PILOT_MIN_PER_CLASS = 3

# The score rule (see README "How --budget plans" for the runs it was fitted on).
ERROR_FLOOR = 0.02  # held-out error a well-trained fold model reaches at native side
ERROR_SPAN = 0.12  # error above the floor that training removes ...
TAU = 2.5  # ... about exponentially, with this time constant in epochs
SIDE_ERROR_EXP = 0.6  # error x (native / side) ** this below the native side
DATA_EXP = 0.3  # error x fraction_of_rows ** -this
ENSEMBLE_GAIN = 0.15  # averaging m models removes this x (1 - 1/m) of the error
PAYOFF = 0.0005  # an epoch that adds less expected accuracy than this does not pay off
# Plans whose expected error is within this share of the best plan's are equal: the cheaper one is chosen. Relative,
# not absolute, so it means the same on every set: once epochs stop paying, what more folds and a full fit remove is
# a few % of the error, which an absolute tie measured against the rule's small error floor (0.02) called nothing.
TIE = 0.005
# When not even one whole epoch of the cheapest plan fits, a fraction of one is planned (recipe epoch_fraction: the
# trainer stops after that share of the epoch's steps, with warmup and cosine sized to them, so it ends annealed),
# in steps of FRACTION_STEP, down to FRACTION_FLOOR: below a quarter of an epoch a fine-tune has barely left its
# pretrained start (and on a small set it is a handful of steps), so the budget is refused instead.
FRACTION_STEP = 0.05
FRACTION_FLOOR = 0.25
# With one epoch or more, the time a whole epoch more does not fit in is not left unused: one epoch more is planned
# with each epoch stopped after the share of its steps that fits (E x f epochs of training, f >= SPREAD_FLOOR), when
# the rule scores it higher. Measured on the hand-sign photos at a 150 s budget: 1 epoch fits with 39 s to spare.
SPREAD_FLOOR = 0.5
REPACE_MAX_SCALE = 4.0  # a measured epoch corrects the probe's rates by at most this factor either way
REPACE_SLACK = 0.15  # a later run that would overrun what is left by more than this share of itself is dropped
REPACE_AT = 1 / 3  # the first re-pace: after this share of the first epoch's training images


@dataclass(frozen=True)
class Rates:
    """Seconds per image on this machine for one image side, and the fixed costs of a run."""

    img_size: int
    train_s: float  # one training image (forward + backward + optimizer step, loader included)
    eval_s: float  # one evaluation image, one view
    fold_s: float  # building the model and writing a run's artifacts
    epoch_s: float = 0.0  # per epoch: starting the loader and its first batches, beyond the steady rate

    def scaled(self, side: int) -> Rates:
        """The rates at another image side (see SIDE_COST_EXP)."""
        if side == self.img_size:
            return self
        f = (side / self.img_size) ** SIDE_COST_EXP
        return Rates(side, self.train_s * f, self.eval_s * f, self.fold_s, self.epoch_s)


class Probe(Protocol):
    """What the planner asks of the trainer: time real training steps and evaluation of one fold at the side the
    trainer's images are decoded at, for about `seconds` (comp.training.train implements it)."""

    def measure(self, seconds: float) -> Rates: ...


@dataclass(frozen=True)
class SideErrors:
    """How much this set loses at smaller image sides, measured: the error of a linear probe on the frozen
    pretrained backbone's features of a few hundred training rows (3-fold CV inside them), at a few sides.

    A fine-tune ends far below a linear probe's error, but what the side costs it follows the features: on large
    photos of ImageNet-like things (hymenoptera, 370 px) the probe's error triples from 224 to 64 px, on 100 px hand
    signs it grows by 1.7x from 96 to 64 px (bench/quality.py sets, README "How --budget plans"). A fixed rule
    cannot tell those apart; ~5% of the budget spent looking can."""

    errors: tuple[tuple[int, float], ...]  # (side, probe error), largest side first
    rows: int
    seconds: float

    def factor(self, side: int) -> float:
        """The error at `side` over the error at the largest measured side (at least 1: the probe's noise must not
        make a smaller side look better), log-linear in the side between measured sides, flat outside them."""
        pts = sorted(self.errors)  # smallest side first
        top_err = pts[-1][1]
        # Monotone from the top down: a side never errs less than a larger one (noise on a few hundred rows).
        worst, mono = top_err, {}
        for side_, err in reversed(pts):
            worst = max(worst, err)
            mono[side_] = worst
        if side >= pts[-1][0]:
            return 1.0
        if side <= pts[0][0]:
            return mono[pts[0][0]] / top_err
        for (a, _), (b, _) in zip(pts, pts[1:], strict=False):
            if a <= side <= b:
                t = math.log(side / a) / math.log(b / a)
                return math.exp((1 - t) * math.log(mono[a]) + t * math.log(mono[b])) / top_err
        return 1.0

    def describe(self) -> str:
        shown = ", ".join(f"{1 - e:.2f} at {s} px" for s, e in self.errors)
        return f"linear probe on {self.rows} rows: accuracy {shown} ({duration(self.seconds)})"


@dataclass(frozen=True)
class Workload:
    """What the planner knows of the data, per process: held-out rows of each fold (fold order), rows that train in
    every run but no fold holds out (pseudo-labels), test rows, TTA views of the final logits, the images' native
    shorter side (None: unknown) and the runs the command may train (fold numbers and/or FULL)."""

    fold_rows: tuple[int, ...]
    n_extra: int
    n_test: int
    views: int
    native_side: int | None
    runs: tuple[int | str, ...]
    choose_runs: bool = True  # may plan a subset of `runs` (False: train them all, choose side and epochs)
    side_errors: SideErrors | None = None  # measured cost of smaller sides (None: the rule's SIDE_ERROR_EXP)
    head_probe: bool = False  # recipe head_init = probe: each run first fits its head on frozen features

    @property
    def n_rows(self) -> int:
        return sum(self.fold_rows) + self.n_extra

    def shape(self, run: int | str) -> tuple[int, int]:
        """(training rows per epoch, held-out rows) of a run."""
        if run == FULL:
            return self.n_rows, 0
        return self.n_rows - self.fold_rows[int(run)], self.fold_rows[int(run)]


@dataclass(frozen=True)
class Candidate:
    """One allocation the planner weighed."""

    folds: tuple[int, ...]  # fold numbers trained (their OOF rows are what stack fits on)
    full: bool  # and a fit on every labelled row
    img_size: int
    epochs: int
    seconds: float  # predicted seconds of training from now (re-decoding at another side included)
    predicted: float  # the rule's expected held-out accuracy of the stacked test predictions
    fraction: float = 1.0  # of each epoch's steps (below 1 only when not one whole epoch fits)

    @property
    def runs(self) -> list[int | str]:
        return [*self.folds, *([FULL] if self.full else [])]

    def runs_label(self, n_folds: int) -> str:
        """'2 folds of 5 + full fit'."""
        what = []
        if self.folds:
            k = len(self.folds)
            what.append(f"{k} fold{'s' if k != 1 else ''}" + (f" of {n_folds}" if 0 < k < n_folds else ""))
        if self.full:
            what.append("full fit")
        return " + ".join(what)

    def label(self, n_folds: int) -> str:
        e = self.epochs
        if self.fraction < 1 and e > 1:
            return f"{self.runs_label(n_folds)} x {e} epochs of {self.fraction:.0%} at {self.img_size} px"
        if self.fraction < 1:
            return f"{self.runs_label(n_folds)} x {self.fraction:g} epoch at {self.img_size} px"
        return f"{self.runs_label(n_folds)} x {e} epoch{'s' if e != 1 else ''} at {self.img_size} px"


@dataclass(frozen=True)
class Plan:
    budget_s: float
    epochs: int
    img_size: int
    runs: tuple[int | str, ...]  # what to train, in order: fold numbers, then FULL
    planned_s: float  # the predicted time of the whole command, set-up so far included
    elapsed_s: float  # spent before training started (loading, decoding, probing)
    rates: Rates | None = None
    candidates: tuple[Candidate, ...] = ()  # what was weighed (the best allocation of each shape)
    chosen: Candidate | None = None
    capped: bool = False  # the budget allowed more epochs than pay off (`epoch_cap`)
    reused: bool = False  # read back from plan.json (the same command again)
    native_side: int | None = None
    setup: str = ""  # where the set-up time went, e.g. "start-up and checks 20s, decoding 5s, timing 9s"
    fraction: float = 1.0  # of each epoch's steps (recipe epoch_fraction)
    epoch_cap: int = 0  # the most epochs the plan may give a run (`epoch_cap` of the recipe before the plan)
    work: Workload | None = None  # what it was planned for (not persisted: a resumed plan is not re-paced)
    repaced: str = ""  # what re-pacing changed, e.g. "epoch 1 took 41s, planned 58s"

    @property
    def overrides(self) -> list[str]:
        return [f"epochs={self.epochs}", f"epoch_fraction={self.fraction:g}", f"img_size={self.img_size}"]

    def describe(self, recipe: Recipe, n_folds: int) -> str:
        """The plan and what it was weighed against, one line each, the chosen one marked."""
        if self.reused:
            what = self.chosen.label(n_folds) if self.chosen else f"{self.epochs} epochs at {self.img_size} px"
            return (f"budget {duration(self.budget_s)}: resuming with the plan these runs were started with "
                    f"(plan.json): {what}")
        r = self.rates
        native = f"images ~{self.native_side} px on their shorter side; " if self.native_side else ""
        head = (f"budget {duration(self.budget_s)}: measured {1 / r.train_s:.0f} training and {1 / r.eval_s:.0f} "
                f"evaluation img/s at {r.img_size} px ({native}recipe: {recipe.epochs} epochs at "
                f"{recipe.img_size or 'the model default'} px); weighed:")
        width = max(len(c.label(n_folds)) for c in self.candidates)
        lines = [head]
        for c in self.candidates:
            mark = "  <- chosen" if c == self.chosen else ""
            lines.append(f"  {c.label(n_folds):<{width}}  predicted {c.predicted:.3f}  {duration(c.seconds):>6}"
                         f"{mark}")
        cap = " (the epochs that pay off; more would add little)" if self.capped else ""
        if self.fraction < 1 and self.epochs > 1:
            cap = (f" (each epoch stops after {self.fraction:.0%} of its steps: {self.epochs} such epochs beat "
                   f"{self.epochs - 1} whole ones in the same time; the schedule is sized to them)")
        elif self.fraction < 1:
            cap = (f" (not one whole epoch fits: it stops after {self.fraction:.0%} of the epoch's steps, its learning "
                   f"rate schedule sized to them)")
        lines.append(f"plan: {self.chosen.label(n_folds)}{cap}, about {duration(self.planned_s)} in all "
                     f"({duration(self.elapsed_s)} of it already spent setting up"
                     f"{': ' + self.setup if self.setup else ''})")
        return "\n".join(lines)

    def to_json(self, budget: str, asked: str) -> dict[str, Any]:
        c = self.chosen
        return {"budget": budget, "fold": asked, "epochs": self.epochs, "epoch_fraction": self.fraction,
                "img_size": self.img_size,
                "runs": list(self.runs), "planned_s": round(self.planned_s, 1),
                "chosen": asdict(c) if c else None, "candidates": [asdict(x) for x in self.candidates],
                "rates": asdict(self.rates) if self.rates else None, "native_side": self.native_side,
                "repaced": self.repaced}

    @classmethod
    def from_json(cls, data: dict[str, Any], budget_s: float, elapsed_s: float) -> Plan:
        c = data.get("chosen")
        chosen = Candidate(**{**c, "folds": tuple(c["folds"])}) if c else None
        return cls(budget_s, int(data["epochs"]), int(data["img_size"]), tuple(data["runs"]), 0.0, elapsed_s,
                   chosen=chosen, reused=True, fraction=float(data.get("epoch_fraction", 1.0)))


# ---------------------------------------------------------------------------------------------------------------
# cost


def run_seconds(run: int | str, epochs: int, rates: Rates, work: Workload, fraction: float = 1.0) -> float:
    """Seconds one run (a fold or the full fit) takes at `epochs` with `rates`, training `fraction` of each epoch's
    rows (its held-out rows are still all scored after each epoch)."""
    n_train, n_val = work.shape(run)
    per_epoch = rates.epoch_s + fraction * n_train * rates.train_s + n_val * rates.eval_s
    # head_init = probe: one evaluation pass over the training rows (features), one over the held-out rows (the
    # fitted head is scored as epoch 0).
    head = (n_train + n_val) * rates.eval_s if work.head_probe else 0.0
    return rates.fold_s + head + epochs * per_epoch + (n_val + work.n_test) * work.views * rates.eval_s


def predicted_seconds(epochs: int, rates: Rates, work: Workload, runs: Sequence[int | str],
                      fraction: float = 1.0) -> float:
    return sum(run_seconds(r, epochs, rates, work, fraction) for r in runs)


# ---------------------------------------------------------------------------------------------------------------
# score


def expected_error(epochs: float, side: int, native: int | None, fractions: Sequence[float],
                   measured: SideErrors | None = None) -> float:
    """The rule's held-out error of the average of models trained `epochs` at `side` on `fractions` of the rows;
    what the side costs is `measured` on this set when given, else the rule's (native / side) ** SIDE_ERROR_EXP."""
    base = ERROR_FLOOR + ERROR_SPAN * math.exp(-epochs / TAU)
    if measured is not None:
        base *= measured.factor(side)
    elif native and side < native:
        base *= (native / side) ** SIDE_ERROR_EXP
    m = len(fractions)
    data = sum(f ** -DATA_EXP for f in fractions) / m
    return base * data * (1 - ENSEMBLE_GAIN * (1 - 1 / m))


def paying_epochs() -> int:
    """The epochs after which one more adds less than PAYOFF to the rule's expected accuracy: where the learning
    curve has flattened (12 with the constants above)."""
    return math.ceil(TAU * math.log(ERROR_SPAN / (TAU * PAYOFF)))


def epoch_cap(recipe: Recipe) -> int:
    """The most epochs a plan gives a run: those that pay off, or the recipe's own when it asks for more, and never
    more than MAX_EPOCH_FACTOR x the recipe's (so extra budget buys folds and a full fit instead)."""
    return min(MAX_EPOCH_FACTOR * recipe.epochs, max(recipe.epochs, paying_epochs()))


def _fractions(folds: Sequence[int], full: bool, work: Workload) -> list[float]:
    return [work.shape(k)[0] / work.n_rows for k in folds] + ([1.0] if full else [])


# ---------------------------------------------------------------------------------------------------------------
# the choice


def candidate_sides(top: int, native: int | None, recipe: Recipe, fixed: bool) -> list[int]:
    """Sides to weigh, largest first: `top` (the probed side), then down in SIZE_STEP steps to the floor."""
    if fixed:
        return [top]
    floor = recipe.min_img_size or FLOOR_PX
    floor = min(floor, top, native or top)
    sides = [top]
    side = (top - 1) // SIZE_STEP * SIZE_STEP
    while side >= floor:
        sides.append(side)
        side -= SIZE_STEP
    if sides[-1] != floor:
        sides.append(floor)
    return sides


def shapes(work: Workload) -> list[tuple[tuple[int, ...], bool]]:
    """(folds, full fit) allocations the command may choose: with several folds asked, the first k of them for
    every k, each with and without a full fit (when asked for); a single run is what it is."""
    folds = tuple(int(r) for r in work.runs if r != FULL)
    full_asked = FULL in work.runs
    if len(folds) <= 1 or not work.choose_runs:
        return [(folds, full_asked)]
    out = []
    for k in range(1, len(folds) + 1):
        out.append((folds[:k], False))
        out.append((folds[:k], True))
    return out


def choose(budget_s: float, elapsed_s: float, recipe: Recipe, rates: Rates, work: Workload, resize_s: float = 0.0,
           fixed_side: bool = False, setup: str = "", min_epochs: int = 1, cap: int | None = None) -> Plan:
    """The plan with the best expected score that fits what is left of `budget_s`; `resize_s` is what re-decoding
    the images at another side than the probed one costs. CompError only when nothing fits. `min_epochs` and `cap`
    bound the epochs (re-pacing: a run under way keeps at least one epoch more than it has done)."""
    usable = budget_s * (1 - RESERVE) - elapsed_s
    cap = cap or epoch_cap(recipe)
    sides = candidate_sides(rates.img_size, work.native_side, recipe, fixed_side)
    n_folds = len(work.fold_rows)
    best_of_shape: list[Candidate] = []
    capped_any: dict[Candidate, bool] = {}
    for folds, full in shapes(work):
        runs = [*folds, *([FULL] if full else [])]
        fractions = _fractions(folds, full, work)
        best: Candidate | None = None
        for side in sides:
            at = rates.scaled(side)
            left = usable - (0.0 if side == rates.img_size else resize_s)
            fixed = predicted_seconds(0, at, work, runs)
            per_epoch = predicted_seconds(1, at, work, runs) - fixed
            fit = int((left - fixed) // per_epoch) if per_epoch > 0 else cap
            if fit < min_epochs:
                continue
            epochs = min(fit, cap)
            extra = 0.0 if side == rates.img_size else resize_s
            options = [(epochs, 1.0)]
            if fit < cap:  # the time left after `fit` whole epochs, spread over one epoch more
                options.append((fit + 1, _spread(left - fixed, fit + 1, at, work, runs)))
            for n, fraction in options:
                if fraction < SPREAD_FLOOR:
                    continue
                seconds = fixed + n * _epoch_cost(at, work, runs, fraction) + extra
                c = Candidate(tuple(folds), full, side, n, seconds,
                              1 - expected_error(n * fraction, side, work.native_side, fractions, work.side_errors),
                              fraction)
                if best is None or c.predicted > best.predicted + 1e-9:
                    best = c
                    capped_any[c] = fit > cap
        if best is not None:
            best_of_shape.append(best)
    partial = not best_of_shape
    if partial and min_epochs > 1:
        raise CompError(f"not {min_epochs} epochs fit in what is left of the budget")
    if partial:
        best_of_shape = _partial_epochs(usable, rates, work, sides, resize_s)
    if not best_of_shape:
        first = shapes(work)[0]
        runs = [*first[0], *([FULL] if first[1] else [])]
        # The cheapest floor fraction of an epoch over the sides (another side than the probed one re-decodes).
        cost, side = min((predicted_seconds(1, rates.scaled(x), work, runs, FRACTION_FLOOR)
                          + (0.0 if x == rates.img_size else resize_s), x) for x in sides)
        need = (elapsed_s + cost) / (1 - RESERVE) + 1
        raise CompError(
            f"budget {duration(budget_s)} is too short: even {FRACTION_FLOOR:.0%} of one epoch of "
            f"{Candidate(first[0], first[1], side, 1, 0, 0).runs_label(n_folds)} at {side} px takes about "
            f"{duration(cost)} here, after {duration(elapsed_s)} of set-up{' (' + setup + ')' if setup else ''}; "
            f"give a longer --budget (at least {duration(need)}), or a smaller image (--set img_size=N)"
        )
    if partial:  # the most training steps (see _partial_epochs)
        chosen = max(best_of_shape, key=_steps_first)
    else:  # the best expected score; a tie (expected error within TIE of the best's) goes to the cheaper plan
        least = 1 - max(c.predicted for c in best_of_shape)
        chosen = min((c for c in best_of_shape if 1 - c.predicted <= least * (1 + TIE)), key=lambda c: c.seconds)
    planned = elapsed_s + chosen.seconds
    return Plan(budget_s, chosen.epochs, chosen.img_size, tuple(chosen.runs), planned, elapsed_s, rates,
                tuple(best_of_shape), chosen, capped_any.get(chosen, False), native_side=work.native_side,
                setup=setup, fraction=chosen.fraction, epoch_cap=cap, work=work)


def _epoch_cost(rates: Rates, work: Workload, runs: Sequence[int | str], fraction: float) -> float:
    """Seconds one epoch of each of `runs` costs when it trains `fraction` of its steps (all held-out rows scored)."""
    return predicted_seconds(1, rates, work, runs, fraction) - predicted_seconds(0, rates, work, runs)


def _spread(seconds: float, epochs: int, rates: Rates, work: Workload, runs: Sequence[int | str]) -> float:
    """The largest fraction of each epoch's steps (in FRACTION_STEP steps, below 1) that lets `epochs` epochs of
    `runs` fit in `seconds`."""
    fixed = _epoch_cost(rates, work, runs, 0.0)  # per epoch: start-up and held-out scoring
    steps = _epoch_cost(rates, work, runs, 1.0) - fixed
    if steps <= 0:
        return 0.0
    fraction = math.floor((seconds / epochs - fixed) / steps / FRACTION_STEP + 1e-9) * FRACTION_STEP
    return round(min(fraction, 1.0 - FRACTION_STEP), 2)


def _partial_epochs(usable: float, rates: Rates, work: Workload, sides: Sequence[int],
                    resize_s: float) -> list[Candidate]:
    """When not one whole epoch of any shape fits: for each shape, the side with the largest fraction of one epoch
    (in FRACTION_STEP steps, at least FRACTION_FLOOR); none where not even the floor fits. Within the first epoch
    the steps decide, not the side: the score rule was fitted on runs of one epoch or more, and below one a model
    is still leaving its zero-initialised head (its error falls from chance, not from the rule's 0.14), so the most
    images seen wins (the smallest side, unless re-decoding for it costs more than it saves). The printed
    prediction is the rule's, extrapolated: optimistic there."""
    out = []
    for folds, full in shapes(work):
        runs = [*folds, *([FULL] if full else [])]
        fractions = _fractions(folds, full, work)
        best: Candidate | None = None
        for side in sides:
            at = rates.scaled(side)
            extra = 0.0 if side == rates.img_size else resize_s
            fixed = predicted_seconds(1, at, work, runs, 0.0)  # a run's costs besides its training steps
            per_whole = predicted_seconds(1, at, work, runs, 1.0) - fixed
            if per_whole <= 0:
                continue
            fraction = math.floor((usable - extra - fixed) / per_whole / FRACTION_STEP + 1e-9) * FRACTION_STEP
            fraction = round(min(fraction, 1.0 - FRACTION_STEP), 2)
            if fraction < FRACTION_FLOOR - 1e-9:
                continue
            c = Candidate(tuple(folds), full, side, 1, fixed + fraction * per_whole + extra,
                          1 - expected_error(fraction, side, work.native_side, fractions, work.side_errors), fraction)
            if best is None or _steps_first(c) > _steps_first(best):
                best = c
        if best is not None:
            out.append(best)
    return out


def _steps_first(c: Candidate) -> tuple[float, float]:
    return (c.fraction, c.predicted)


# ---------------------------------------------------------------------------------------------------------------
# re-pacing: the plan against the clock while it runs


def repace(plan: Plan, recipe: Recipe, done: int, scale: float, run_spent_s: float, elapsed_s: float, what: str
           ) -> Plan | None:
    """The plan again once the first run has shown how fast it really goes, or None to keep it: `done` whole epochs
    of it are behind, and it ran `scale` times the time the plan's rates predicted (`what` says so in words);
    `run_spent_s` since that run started, `elapsed_s` since the command did.

    The probe times a few small steps up front, on a machine whose load changes; a third of the first epoch, then
    whole epochs, at the chosen side and batch are the better measure, so the rates are corrected by `scale` and the
    plan chosen again at the same side (the images are decoded for it): more epochs when ahead, fewer when behind,
    and which folds and full fit the time left buys. Only while the first run can still take it smoothly: in its
    first epoch, then while it is in the first third of its epochs (the cosine schedule is stretched or shrunk to
    the new count, which moves the learning rate little that early). Later runs must train the same epochs (one
    recipe for all runs of a model), so after that only `run_fits` can drop a run the clock has no room for.
    The share of each epoch's steps (epoch_fraction) is chosen again too; the epoch under way ends at the new one.
    """
    if plan.reused or plan.rates is None or plan.work is None or not plan.runs:
        return None
    if done >= plan.epochs or (done > 1 and done > plan.epochs / 3):
        return None
    scale = min(REPACE_MAX_SCALE, max(1 / REPACE_MAX_SCALE, scale))
    at = plan.rates.scaled(plan.img_size)
    rates = Rates(plan.img_size, at.train_s * scale, at.eval_s * scale, at.fold_s, at.epoch_s * scale)
    # The first run is priced from its start (its time so far at the corrected rate, about what it took).
    try:
        new = choose(plan.budget_s, elapsed_s - run_spent_s, recipe, rates, plan.work, fixed_side=True,
                     min_epochs=done + 1, cap=plan.epoch_cap or None)
    except CompError:  # not even one more epoch of the shortest plan: end the first run after the one under way
        chosen = Candidate(_first_fold(plan), plan.runs[0] == FULL, plan.img_size, done + 1, 0.0, 0.0)
        new = dataclasses.replace(plan, epochs=done + 1, runs=(plan.runs[0],), chosen=chosen)
    new = dataclasses.replace(new, rates=rates, budget_s=plan.budget_s, setup=plan.setup,
                              native_side=plan.native_side, elapsed_s=plan.elapsed_s)
    if new.epochs == plan.epochs and new.runs == plan.runs:
        return dataclasses.replace(plan, rates=rates, repaced="")  # the same plan, priced by the measured time
    return dataclasses.replace(new, repaced=what)


def epoch_seconds(plan: Plan, run: int | str, images: int | None = None) -> float:
    """What the plan's rates predict for one epoch of `run` (its training and its held-out scoring), or with
    `images` for that many training images of it in steady steps (a part of the epoch under way)."""
    at = plan.rates.scaled(plan.img_size)
    n_train, n_val = plan.work.shape(run)
    if images is not None:  # steady steps: the epoch's start-up is not in them
        return images * at.train_s
    return at.epoch_s + plan.fraction * n_train * at.train_s + n_val * at.eval_s


def _first_fold(plan: Plan) -> tuple[int, ...]:
    return () if plan.runs[0] == FULL else (int(plan.runs[0]),)


def repaced_line(old: Plan, new: Plan, n_folds: int) -> str:
    was = old.chosen.label(n_folds) if old.chosen else f"{old.epochs} epochs"
    return (f"budget {duration(new.budget_s)}: {new.repaced}: re-planned to {new.chosen.label(n_folds)} "
            f"(was {was}), about {duration(new.planned_s)} in all")


def run_fits(plan: Plan, run: int | str, elapsed_s: float) -> tuple[bool, float, float]:
    """Whether run `run` (not the first) still fits what is left of the budget at the plan's (measured) rates:
    (fits, its predicted seconds, seconds left). A run more than REPACE_SLACK over what is left is dropped: a fold
    fewer leaves its rows out of the stack's fit, a missing full fit leaves the folds' average; either beats a
    command that runs far past the time it was given."""
    if plan.reused or plan.rates is None or plan.work is None:
        return True, 0.0, 0.0
    need = run_seconds(run, plan.epochs, plan.rates.scaled(plan.img_size), plan.work, plan.fraction)
    left = plan.budget_s * (1 - RESERVE) - elapsed_s
    return need <= left + REPACE_SLACK * need, need, left


# ---------------------------------------------------------------------------------------------------------------
# inputs from the data and the process


def native_side(paths: Sequence[str], sample: int = 256, seed: int = 0) -> int | None:
    """The images' typical (median) shorter side in px, from the headers of up to `sample` of them (PIL reads the
    size without decoding pixels); None when none can be read."""
    import random

    from PIL import Image

    chosen = list(paths) if len(paths) <= sample else random.Random(seed).sample(list(paths), sample)
    sides = []
    for p in chosen:
        try:
            with Image.open(p) as im:
                sides.append(min(im.size))
        except (OSError, ValueError):
            continue
    if not sides:
        return None
    sides.sort()
    return int(sides[len(sides) // 2])


def capped_side(want: int, native: int | None, upsample_to: int = 0) -> int:
    """`want` (the recipe's side), not above the images' native side: the native side rounded down to SIZE_STEP
    (the native side itself when smaller than one step); but images smaller than FLOOR_PX start from `upsample_to`
    when given (a --budget plan: UPSAMPLE_PX), so the planner weighs upsampling them (ImageNet features see little
    in 32 px CIFAR; the side pilot measures how much) against their own side."""
    if not native or want <= native:
        return want
    if native < FLOOR_PX and upsample_to:
        return min(want, upsample_to)
    return native // SIZE_STEP * SIZE_STEP if native >= SIZE_STEP else native


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


def probe_rows(rows: Sequence[int], batch_size: int, steps: int, seed: int):
    """`steps` batches of training rows (rows repeat when the fold is small)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.permutation(np.resize(np.asarray(rows), steps * batch_size))


def pilot_sides(sides: Sequence[int]) -> list[int]:
    """The candidate sides the linear-probe pilot measures: the largest, the smallest and one between (in log)."""
    if len(sides) < 2:
        return []
    top, low = max(sides), min(sides)
    mid = min(sides, key=lambda x: abs(math.log(x) - (math.log(top) + math.log(low)) / 2))
    return sorted({top, mid, low}, reverse=True)


def pilot_rows(budget_s: float, rates: Rates, sides: Sequence[int], n_rows: int, n_classes: int) -> int:
    """Rows the pilot can afford: PILOT_SHARE of the budget at the evaluation rate, summed over `sides`, at most
    PILOT_MAX_ROWS and the rows there are; 0 (no pilot) when that is fewer than PILOT_MIN_PER_CLASS per class or
    PILOT_MIN_ROWS in all (its errors would be noise)."""
    per_row = sum(rates.scaled(side).eval_s for side in sides)
    rows = min(n_rows, PILOT_MAX_ROWS, int(PILOT_SHARE * budget_s / max(per_row, 1e-9)))
    return rows if rows >= max(PILOT_MIN_ROWS, PILOT_MIN_PER_CLASS * n_classes) else 0


def probe_seconds(budget_s: float) -> float:
    return max(PROBE_MIN_S, PROBE_SHARE * budget_s)


def finished_line(plan: Plan, took_s: float) -> str:
    if plan.reused or plan.planned_s <= 0:
        return f"budget {duration(plan.budget_s)}: this command took {duration(took_s)}"
    off = (took_s - plan.planned_s) / max(plan.planned_s, 1e-9)
    return (f"budget {duration(plan.budget_s)}: planned {duration(plan.planned_s)}, took {duration(took_s)} "
            f"({off:+.0%} of the plan)")


def estimate_line(recipe: Recipe, rates: Rates, work: Workload, runs: Sequence[int | str]) -> str:
    """Without --budget: what the recipe will run and about how long, before it starts."""
    seconds = predicted_seconds(recipe.epochs, rates, work, runs)
    n = len(runs)
    return (f"plan: {n} run{'s' if n != 1 else ''} x {recipe.epochs} epochs at {rates.img_size} px, about "
            f"{duration(seconds)} here (measured {1 / rates.train_s:.0f} training img/s); `--budget T` fits a time")

