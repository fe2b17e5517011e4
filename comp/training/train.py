"""One (model, fold): the training loop, optional features switched once at setup, resume, OOF and test logits.

`train(comp, ws, alias, fold, ...)` is what `comp train` calls. Each fold trains on the other folds, is evaluated on its
own rows every epoch with the competition's metric, keeps its best weights, and writes its logits (see
comp.logits) plus metrics, history, curves, the resolved recipe and provenance under `ws.run(alias, k)`.

Reproducibility: every epoch starts from RNG seeds derived from (recipe seed, fold, epoch, rank), and the fold's one
loader (workers kept across epochs) seeds each item's augmentation from (seed, fold, epoch, index), so an epoch's
shuffle, augmentation and mixup draws do not depend on what ran before it. That is what lets a
run killed mid-epoch resume from the last saved epoch and end with the same logits as an uninterrupted run.
Under `torchrun` the same code runs with DDP: a DistributedSampler splits training, evaluation is split into
disjoint shards (no padding duplicates) and gathered, and only rank 0 writes. Several machines work the same way,
with torchrun's rendezvous flags and a workspace every node sees at the same path (shared filesystem):

    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        -m comp train --model swag --fold 0
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console

from comp import logits as logits_io
from comp.core import atomic, metrics
from comp.core.config import Competition, save_toml, with_overrides
from comp.core.device import resolve_device
from comp.core.errors import CompError
from comp.core.provenance import code_version, competition_hash
from comp.core.runlock import run_lock
from comp.core.workspace import FULL, RunPaths, Workspace
from comp.kinds import kind_of
from comp.modeling import models
from comp.modeling.models import build_model, data_config, load_weights, require_weights, save_weights, unwrap
from comp.modeling.recipe import Recipe, load_recipe, parse_duration, recipe_dict, recipe_file_hash, recipe_hash
from comp.runs import INPUTS, Run, write_run
from comp.training import budget as budgeting
from comp.training import checkpoint
from comp.training.budget import Plan
from comp.training.fold_parallel import fold_share, join_plan_group
from comp.training.head_init import apply_head, probe_head
from comp.training.loop import Trainer, epoch_progress
from comp.training.pace import Pace, duration
from comp.training.pseudo import PseudoSource, add_pseudo_rows
from comp.training.runtime import Dist, process_cores, seed_everything, setup_distributed
from comp.vision import augment, images
from comp.vision.tta import eval_view, predict_logits

# ---------------------------------------------------------------------------------------------------------------
# the command's library function


def train(
    comp: Competition,
    ws: Workspace,
    alias: str,
    fold: int | str,
    device: str = "auto",
    overrides: list[str] | None = None,
    force: bool = False,
    console: Console | None = None,
    budget: str | None = None,
    fold_parallel: bool = False,
    pseudo_source: PseudoSource | None = None,
    started: float | None = None,
) -> list[dict[str, Any]]:
    """Train `alias` on fold `fold` (an int, "all", or FULL: every labelled row) of the workspace; returns one
    summary dict per run.

    `budget` ("2h"; else the recipe's) plans image side, epochs, which folds and whether to add a full fit, for the
    best expected score that fits (comp.training.budget). The recipe's side is capped at the images' native side
    unless the user asked for one. `fold_parallel`:
    under torchrun each process trains its own share of the folds alone (no DDP). `pseudo_source` turns the recipe's
    `pseudo` stack into pseudo-labelled test rows (comp.ensemble.pseudo.pseudo_labels; the CLI passes it).
    """
    from comp.folds import load_folds, parse_runs
    from comp.setup.items import test_items, train_items, with_folds
    from comp.setup.verify import ensure_verified, require_verified

    started = started or time.time()  # the budget's clock: the CLI passes its process's start
    console = console or Console(stderr=True)
    overrides = [*(overrides or []), *([f"budget={budget}"] if budget else [])]
    file_recipe = load_recipe(ws, alias)  # the recipe file without --set (refusals print --set from it)
    # Every setting checked before any work (comp.core.config.Bound).
    recipe = with_overrides(file_recipe, overrides, source=f"--set (recipe {alias})")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        verified = require_verified(comp, ws)  # under torchrun every rank checks; verifying is left to `comp verify`
    else:
        verified = ensure_verified(comp, ws, console)  # cached: milliseconds when the data is unchanged
    folds = load_folds(ws, comp)
    runs = parse_runs(fold, folds.n_folds)
    if FULL in runs and not comp.test_dir:
        raise CompError("--fold full: a full fit makes test predictions only, and comp.toml has no test_dir; train "
                        "folds instead (`--fold all`)")
    inherited = _folds_settings(ws, alias, folds.n_folds, overrides) if fold == FULL else []
    if inherited:
        overrides = [*inherited, *overrides]
        recipe = with_overrides(file_recipe, overrides, source=f"--set (recipe {alias}, and its folds' settings)")
    if force or any(not ws.run(alias, k).output.exists() for k in runs):
        require_weights(recipe, ws)  # in seconds, before images are decoded: offline hub weights, a missing file
    items = with_folds(train_items(comp, ws), folds.frame)
    pseudo = None
    if recipe.pseudo:
        if pseudo_source is None:
            raise CompError(f"recipe {alias!r} sets pseudo = {recipe.pseudo!r}; pseudo-labels are read by "
                            "`comp train --pseudo STACK` (library callers: pass pseudo_source)")
        pseudo = pseudo_source(comp, ws, recipe.pseudo, recipe.pseudo_threshold)
        items = add_pseudo_rows(items, pseudo)
    ddp, runs = _processes(device, fold_parallel, recipe, runs)
    # The images' native side caps the recipe's (a 224 px recipe on 100 px photos would upsample them 2x and train
    # 5x slower for no detail), unless the user asked for a side (--set img_size, or img_size in their own recipe).
    native = None if models.fixed_side(recipe) else budgeting.native_side(items["path"].astype(str).tolist())
    asked = models.fixed_side(recipe) or _side_asked(ws, alias, overrides)
    want = int(data_config(None, recipe)["input_size"][-1])
    side = want if asked else budgeting.capped_side(want, native, budgeting.UPSAMPLE_PX if recipe.budget else 0)
    capped_note = ""
    applied = list(overrides)  # every --set the recipe file is resolved with: recorded, so later stages resolve it too
    if side != want:
        applied.append(f"img_size={side}")
        recipe = with_overrides(recipe, [f"img_size={side}"], source="the images' native side")
        capped_note = (f"img_size {side} px: the images are ~{native} px on their shorter side, so the recipe's "
                       f"{want} px would only upsample them (--set img_size={want} keeps it)")
        if native and side > native:
            capped_note = (f"img_size {side} px: the images are ~{native} px on their shorter side; the --budget plan "
                           f"weighs upsampling them to {side} px against their own side (--set img_size=N chooses)")

    def record(recipe: Recipe) -> Run:
        return _record(ws, alias, recipe, applied, folds.hash, competition_hash(comp),
                       pseudo.source if pseudo is not None else "")

    # Deterministic CPU kernels make a resumed run repeat the interrupted one exactly; restored afterwards because
    # the switch is process-wide (a library caller may not want it).
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(ddp.device.type == "cpu" or was_deterministic, warn_only=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(process_cores())  # evaluation's; the training step runs with its Trainer's thread plan
    try:
        test = test_items(comp, ws)
        job = _Job(ws, comp, recipe, items, test, record(recipe), ddp, console, verified.broken_test)
        job.file_recipe = recipe_dict(file_recipe)
        if capped_note:
            job.say(capped_note)
        if pseudo is not None:
            job.say(pseudo.describe(comp.classes))
        plan = None
        # A budget inherited from the folds (`--fold full` after `--budget`) is recorded, not planned again.
        if recipe.budget and not any(o.startswith("budget=") for o in inherited):
            plan = plan_budget(job, runs, str(fold), force, started, native, asked, choose_runs=not fold_parallel)
            job.say(plan.describe(recipe, folds.n_folds))
            unplanned, before_plan = recipe, list(applied)

            def planned(plan: Plan) -> tuple[Recipe, Run]:
                """The recipe and run record of `plan` (the first plan, or a re-paced one)."""
                applied[:] = [*before_plan, *plan.overrides]
                planned_recipe = with_overrides(unplanned, plan.overrides, source="the --budget plan")
                return planned_recipe, record(planned_recipe)

            recipe, current = planned(plan)
            runs = list(plan.runs)
            job.use(recipe, current)  # re-decodes the images only when the plan changed their side
            # Re-paced against the clock in one process only: under torchrun every rank would have to agree.
            if ddp.world == 1 and not fold_parallel and not plan.reused:
                job.pacing = _Pacing(plan, planned, started, str(fold), folds.n_folds)
        else:
            job.say_estimate(runs)
        job.pace = Pace(runs, recipe.epochs)
        summaries = []
        todo = list(runs)
        while todo:
            k = todo.pop(0)
            if job.pacing is not None and not job.pacing.keeps(job, k):
                continue
            # The lock tells `comp status` this run is training now; one left behind marks a dead run.
            with run_lock(ws.run(alias, k), alias, k, enabled=ddp.main):
                summaries.append(job.fold(k, force))
            if job.pacing is not None:  # a re-paced plan may train other runs than the first plan
                trained = {s["fold"] for s in summaries}
                todo = [r for r in job.pacing.plan.runs if r not in trained]
        if plan is not None:
            job.say(budgeting.finished_line(job.pacing.plan if job.pacing else plan, time.time() - started))
        return summaries
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)


# What a full fit takes from its model's folds unless --set.
PLAN_KEYS = ("epochs", "epoch_fraction", "img_size", "budget")


def _folds_settings(ws: Workspace, alias: str, n_folds: int, overrides: list[str]) -> list[str]:
    """`--fold full`: the folds' recorded epochs, img_size and budget (their plan, or the recipe they trained with)
    as --set arguments, for those the command does not --set itself, so the full fit is the model the folds
    validated (stack applies the folds' blend weights to it)."""
    from comp.runs import recorded_recipe

    given = {o.split("=", 1)[0].strip() for o in overrides}
    for k in range(n_folds):
        rec = recorded_recipe(ws.run(alias, k))
        if rec and ws.run(alias, k).oof.exists():
            return [f"{key}={_toml_value(rec[key])}" for key in PLAN_KEYS if key in rec and key not in given]
    return []


def _toml_value(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)


def _side_asked(ws: Workspace, alias: str, overrides: list[str]) -> bool:
    """Whether the user chose the image side: --set img_size=N, or an img_size in the workspace's recipe file that
    is not the stock recipe's (`comp init` copies the stock recipes into models/; a copy asks for nothing)."""
    from comp.core.config import load_toml
    from comp.core.workspace import STOCK_RECIPES

    if any(o.split("=", 1)[0].strip() == "img_size" for o in overrides):
        return True
    local = ws.recipe_path(alias)
    if not local.exists() or "img_size" not in (mine := load_toml(local)):
        return False
    stock = STOCK_RECIPES / f"{alias}.toml"
    return not stock.exists() or load_toml(stock).get("img_size") != mine["img_size"]


def _processes(device: str, fold_parallel: bool, recipe: Recipe, fold_list: list[int]) -> tuple[Dist, list[int]]:
    """This process's device and process group (DDP under torchrun; with `fold_parallel` no group, each process
    trains its own share of the folds), and the folds it trains."""
    if fold_parallel:
        ddp, fold_list = fold_share(resolve_device(device), fold_list)
        if recipe.budget:
            join_plan_group()  # rank 0 plans, every process follows (no gradients are exchanged)
    else:
        ddp = setup_distributed(resolve_device(device))
    if ddp.device.type == "cuda":
        # Fixed input sizes: let cuDNN pick the fastest kernels; TF32 matmuls on Ampere+ (fp32 runs, bf16 unaffected).
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    return ddp, fold_list


def _record(ws: Workspace, alias: str, recipe: Recipe, overrides: list[str], folds_hash: str, comp_hash: str,
            pseudo_labels: str) -> Run:
    """The run record of `alias` trained now with `recipe`, resolved from the recipe file with `overrides` (its fold
    is set per fold)."""
    return Run(
        model=alias, recipe_hash=recipe_hash(recipe), folds_hash=folds_hash, competition_hash=comp_hash,
        overrides=list(overrides),
        # Not compared by training (the resolved recipe is); lets later stages see the recipe file edited since.
        recipe_file_hash=recipe_file_hash(ws, alias),
        code_version=code_version(), name=recipe.name, recipe=recipe_dict(recipe), tta=recipe.tta,
        pseudo_labels=pseudo_labels,
    )


@dataclass
class _Progress:
    """Where a fold's epochs stand: what the resumable state carries from one epoch to the next."""

    history: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch
    best: float | None = None  # best validation score so far
    best_epoch: int | None = None  # its epoch (0-based)
    start_epoch: int = 0  # the first epoch still to run


class _ProbeDone(Exception):
    """Raised from the probe's progress callback to end its epoch early."""


class _Job:
    """Everything the folds of one `comp train` share: images (decoded once), labels, the run record, processes."""

    def __init__(self, ws: Workspace, comp, recipe: Recipe, items, test, current: Run, ddp: Dist,
                 console: Console, broken_test: list[str] | None = None) -> None:
        from comp.setup.items import class_indices

        self.ws, self.comp, self.recipe, self.items, self.test = ws, comp, recipe, items, test
        self.alias, self.current, self.ddp, self.console = current.model, current, ddp, console
        self.file_recipe: dict[str, Any] = {}
        self.pace = Pace()
        self.pacing: _Pacing | None = None  # a --budget plan held against the clock (one process only)
        self.y = class_indices(comp, items["label"], "training labels")
        # What differs by kind in training, decided once: the objective (softmax CE or per-class sigmoid BCE, in
        # the Trainer), the validation loss and how TTA views merge.
        self.kind = kind_of(comp)
        self.multilabel = self.kind.multilabel
        self.data_config = data_config(None, recipe)  # from the recipe: no model is built to read it
        self.decode_s = 0.0  # seconds spent building (or opening) the image caches
        self.memory_formats: dict[int, bool] = {}  # image side -> channels_last, as the first Trainer chose it
        self.broken_test = list(broken_test or [])  # truncated test images let through (comp verify)
        if self.broken_test and len(test):
            shown = ", ".join(self.broken_test[:3]) + (" ..." if len(self.broken_test) > 3 else "")
            self.say(f"{len(self.broken_test)} truncated test image(s) are predicted from the part that decodes "
                     f"(`comp verify --allow-broken-test`): {shown}")
        self.train_images = self._images(items["path"].tolist())
        self.test_images = self._images(test["path"].tolist(), self.broken_test) if len(test) else None

    def _images(self, paths: list[str], truncated_ok: list[str] | None = None) -> np.ndarray:
        # Rank 0 builds the cache; the others wait and memory-map the finished file.
        side = self.data_config["cache_size"]
        t0 = time.perf_counter()
        if self.ddp.main:
            pixels = images.cached_images(self.ws, paths, side, truncated_ok=truncated_ok or ())
        self.ddp.barrier()
        out = pixels if self.ddp.main else images.cached_images(self.ws, paths, side)
        self.decode_s += time.perf_counter() - t0
        return out

    def redecode_seconds(self) -> float:
        """What decoding the images again at another side would cost: as long as this job's decoding took, or (the
        cache was already there) DECODE_S_PER_IMAGE per image."""
        n = len(self.items) + len(self.test)
        return max(self.decode_s, n * DECODE_S_PER_IMAGE)

    def use(self, recipe: Recipe, current: Run) -> None:
        """Train with `recipe` from now on (a --budget plan's); the images are decoded again only when its side
        needs another cache."""
        self.recipe, self.current = recipe, current
        config = data_config(None, recipe)
        if config["cache_size"] != self.data_config["cache_size"]:
            self.data_config = config
            self.train_images = self._images(self.items["path"].tolist())
            self.test_images = self._images(self.test["path"].tolist(), self.broken_test) if len(self.test) else None
        self.data_config = config

    # -- the trainer's side of the budget planner (comp.training.budget.Probe)
    def measure(self, seconds: float, k: int | str = 0) -> budgeting.Rates:
        """Time run `k`'s real work: building the model and trainer, training steps on the real loader (the first
        first PROBE_WARMUP untimed: worker start-up, allocation, optimizer state; then for `seconds`), and one
        evaluation batch after a small warm-up one."""
        recipe = self.recipe
        if self.ddp.device.type == "cpu" and recipe.batch_size > budgeting.PROBE_CPU_BATCH:
            recipe = dataclasses.replace(recipe, batch_size=budgeting.PROBE_CPU_BATCH,
                                         eval_batch_size=budgeting.PROBE_CPU_BATCH)
        t0 = time.perf_counter()
        model = build_model(recipe, self.comp.num_classes, ws=self.ws)
        val_idx, train_idx = self._split(k)
        trainer = self._trainer(recipe, model, len(train_idx))
        fold_s = time.perf_counter() - t0
        dataset = images.ArrayDataset(self.train_images, self.y, augment.train_transform(self.data_config, recipe))
        warm, least = budgeting.PROBE_WARMUP, budgeting.PROBE_WARMUP + budgeting.PROBE_STEPS
        steps = max(least, -(-len(train_idx) // recipe.batch_size))
        rows = budgeting.probe_rows(train_idx, recipe.batch_size, steps, recipe.seed)
        loader = self._loader(dataset, rows, trainer, k, 0)
        marks: list[float] = []
        counts: list[int] = []

        def advance(n: int) -> None:
            marks.append(time.perf_counter())
            counts.append(n)
            if len(marks) >= least and marks[-1] - marks[warm - 1] >= seconds:
                raise _ProbeDone

        # An epoch past the frozen ones: the whole model trains (the costliest step the run will take).
        start = time.perf_counter()
        try:
            trainer.train_epoch(loader, recipe.freeze_epochs, advance)
        except _ProbeDone:
            pass
        del loader
        trainer.close()  # the probe's loader workers stop here
        if len(marks) > warm:
            train_s = (marks[-1] - marks[warm - 1]) / max(1, sum(counts[warm:]))
            epoch_s = max(0.0, (marks[warm - 1] - start) - sum(counts[:warm]) * train_s)
        else:
            train_s, epoch_s = (marks[-1] - start) / max(1, sum(counts)), 0.0
        batch = recipe.eval_batch_size or 2 * recipe.batch_size
        pool = val_idx if len(val_idx) else train_idx
        sample = np.resize(pool, min(len(pool), batch) or 1)
        self.predict(trainer.eval_model(), self.train_images, sample[:8], "none")  # warm-up
        t1 = time.perf_counter()
        self.predict(trainer.eval_model(), self.train_images, sample, "none")
        eval_s = (time.perf_counter() - t1) / len(sample)
        return budgeting.Rates(int(self.data_config["input_size"][-1]), max(train_s, 1e-6), max(eval_s, 1e-7),
                               fold_s, epoch_s)

    def side_errors(self, sides: list[int], k: int | str, rows: int) -> budgeting.SideErrors | None:
        """The side pilot (budget.SideErrors): a linear probe's error at each of `sides` on the frozen pretrained
        features of `rows` of run k's training rows (stratified; never its held-out rows), 3-fold CV inside them.
        The images are the cached squares' centre view at this job's side, resized down for the smaller sides
        (as a cache decoded at that side would see them). None when the model's head is not one Linear layer."""
        from comp.training.head_init import fit_linear, linear_classifier

        t0 = time.perf_counter()
        _, train_idx = self._split(k)
        picked, cv = _stratified(train_idx, self.y, rows, self.recipe.seed)
        model = build_model(self.recipe, self.comp.num_classes, ws=self.ws)
        layer, name, _ = linear_classifier(model)
        if layer is None:
            return None
        model.set_submodule(name, torch.nn.Identity())
        view = eval_view(self.train_images, self.data_config, "none")
        batch = self.recipe.eval_batch_size or 2 * self.recipe.batch_size
        errors = []
        for side in sides:
            config = {**self.data_config, "input_size": (3, side, side)}
            features = predict_logits(model, view, config, "none", batch, self.ddp.device, progress=False,
                                      indices=picked, optimize=False)
            hits = 0.0
            for fold in range(PILOT_FOLDS):
                fit, held = cv != fold, cv == fold
                weight, bias, _ = fit_linear(features[fit], self.y[picked][fit], layer.out_features, self.multilabel,
                                             self.recipe.label_smoothing, self.ddp.device)
                logits = torch.as_tensor(features[held]) @ weight.T + bias
                truth = torch.as_tensor(self.y[picked][held])
                right = (logits > 0) == (truth > 0.5) if self.multilabel else logits.argmax(1) == truth
                hits += float(right.float().mean()) * int(held.sum())
            # Half an image wrong at least: a perfect probe on a few hundred rows is not a zero error.
            errors.append((side, max(1 - hits / len(picked), 0.5 / len(picked))))
        return budgeting.SideErrors(tuple(errors), len(picked), time.perf_counter() - t0)

    def say_estimate(self, runs: list[int | str]) -> None:
        """Without --budget: what will run, and (for a large CPU run, timed for a few seconds first) about how
        long, before it starts."""
        todo = [k for k in runs if not self.ws.run(self.alias, k).output.exists()]
        if not todo:
            return
        r = self.recipe
        side = int(self.data_config["input_size"][-1])
        what = (f"{len(todo)} run{'s' if len(todo) != 1 else ''} ({', '.join(_name(k) for k in todo)}) x "
                f"{r.epochs} epoch{'s' if r.epochs != 1 else ''} at {side} px")
        folds = self.items["fold"].to_numpy()
        work = budgeting.Workload(
            fold_rows=tuple(int((folds == k).sum()) for k in range(self.comp.n_folds)),
            n_extra=int((folds < 0).sum()), n_test=len(self.test),
            views=budgeting.tta_views(r.tta, self.data_config), native_side=None, runs=tuple(todo),
            head_probe=r.head_init == "probe")
        images_seen = r.epochs * sum(work.shape(k)[0] for k in todo)
        # Timed only in one process: under torchrun the probe's steps would be collective (every rank must join).
        if self.ddp.device.type != "cpu" or self.ddp.world > 1 or images_seen < ESTIMATE_MIN_IMAGES:
            self.say(f"{self.alias}: {what}")
            return
        rates = self.measure(budgeting.PROBE_MIN_S, todo[0])
        seconds = budgeting.predicted_seconds(r.epochs, rates, work, todo)
        self.say(f"{self.alias}: {what}, about {duration(seconds)} on this CPU (measured "
                 f"{1 / rates.train_s:.0f} training img/s); `--budget T` plans side, epochs and folds for a time T")

    # -- one fold, or the full fit (k == FULL)
    def fold(self, k: int | str, force: bool) -> dict[str, Any]:
        final = self.ws.run(self.alias, k)
        run = dataclasses.replace(self.current, fold=k)
        # Decided before anything changes; a replacement (--force) trains in a staging folder and is swapped in
        # only when finished, so a failure on the way never costs the trained run.
        target = checkpoint.plan_run(final, run, force, file_recipe=self.file_recipe)
        self.ddp.barrier()
        if self.ddp.main:
            checkpoint.prepare(target)
        if target.finished:
            if target.swap and self.ddp.main:
                checkpoint.swap_in(final)
                self.say(f"{self.alias} {_name(k)}: the finished retrain in {target.paths.dir} replaced {final.dir}")
            self.ddp.barrier()
            self.pace.finish(k)
            if not target.swap:
                self.say(f"{self.alias} {_name(k)}: already trained (use --force to retrain)")
            return {**_read_metrics(final), "fold": k, "status": "skipped"}
        paths = target.paths
        started = time.time()
        val_idx, train_idx = self._split(k)
        seed_everything(self.recipe.seed, _seed_key(k))
        model = build_model(self.recipe, self.comp.num_classes, ws=self.ws)  # a bad name fails before any write
        self.ddp.barrier()
        if self.ddp.main:
            write_run(paths, run)
        probed = False
        if self.recipe.head_init == "probe" and not paths.last.exists():
            # A fresh run only: a resumed one's saved state has the (fitted, then trained) head already. Before the
            # Trainer, so DDP's first broadcast and an EMA copy start from the fitted head.
            probed = self._probe_head(model, train_idx)
        dataset = images.ArrayDataset(self.train_images, self.y, augment.train_transform(self.data_config, self.recipe))
        trainer = self._trainer(self.recipe, model, len(train_idx))
        progress = self._resume(paths, trainer, k)
        if probed and len(val_idx) and progress.start_epoch == 0:
            self._score_probe(model, paths, val_idx, progress)
        self.pace.start(k, progress.start_epoch)
        epoch = progress.start_epoch
        while epoch < self.recipe.epochs:  # a re-paced budget may change the count after an epoch
            if self._epoch(k, epoch, paths, trainer, dataset, train_idx, val_idx, progress, started):
                break
            epoch += 1
        self.ddp.barrier()
        self.pace.finish(k)
        run = dataclasses.replace(self.current, fold=k)
        summary = self._finish(run, paths, trainer, val_idx, progress, started)
        if target.swap and self.ddp.main:
            checkpoint.swap_in(final)
        self.ddp.barrier()
        return summary

    def _probe_head(self, model, train_idx: np.ndarray) -> bool:
        """head_init = probe: fit the classifier on the frozen backbone's centre-view features of the training rows
        (comp.training.head_init). Every rank extracts its shard of the features; rank 0 fits and sends the head to
        the others, so all ranks start equal. Torch's RNG is left as it was: the fit shifts none of the run's draws."""
        def features_of(backbone) -> np.ndarray:
            return self.predict(backbone, self.train_images, train_idx, "none")

        with torch.random.fork_rng(devices=[]):
            result = probe_head(model, features_of, self.y[train_idx], self.multilabel, self.recipe.label_smoothing,
                                self.ddp.device, fit=self.ddp.main)
        if self.ddp.world > 1:
            shared = [result]
            dist.broadcast_object_list(shared, src=0)
            result = shared[0]
        apply_head(model, result)
        self.say(f"{self.alias}: {result.describe()}")
        return result.weight is not None

    def _score_probe(self, model, paths: RunPaths, val_idx: np.ndarray, progress: _Progress) -> None:
        """The fitted head on the frozen backbone is a model too (a linear probe): scored on the held-out rows like an
        epoch and kept as the best weights until an epoch beats it (best_epoch -1; reported as epoch 0). A short
        fine-tune can end below its own starting point (measured on sign digits: probe 0.82, one epoch from it 0.64);
        choosing between them on the held-out rows is the choice the run already makes between its epochs."""
        logits = self.predict(model, self.train_images, val_idx, "none")
        score = metrics.score(self.comp.metric, self.y[val_idx], logits, self.comp.top_k)
        if math.isnan(score):
            return
        progress.best, progress.best_epoch = score, -1
        if self.ddp.main:
            save_weights(paths.best, unwrap(model), {"epoch": "probe"})
        self.say(f"{self.alias}: the fitted head alone (epoch 0): {self.comp.metric} {score:.4f} on the held-out rows; "
                 "kept unless an epoch of fine-tuning beats it")

    def _trainer(self, recipe: Recipe, model, n_train: int) -> Trainer:
        """A Trainer; the CPU's memory-format probe (~2 s of a core) runs once per image side in this command and
        its answer is kept for the next runs at that side (the timing probe's run, every fold, the full fit)."""
        side = int(self.data_config["input_size"][-1])
        known = self.memory_formats.get(side)
        trainer = Trainer(recipe, model, self.data_config, self.ddp.device, n_train, self.ddp.world,
                          channels_last=known, multilabel=self.multilabel)
        if known is None:
            self.memory_formats[side] = trainer.channels_last
        elif recipe.channels_last and self.ddp.device.type == "cpu":
            trainer.speed["channels_last_from"] = "probed by an earlier run of this command"
        return trainer

    def _split(self, k: int | str) -> tuple[np.ndarray, np.ndarray]:
        """(held-out rows, training rows) of fold k; pseudo-labelled rows (fold -1) only ever train; the full fit
        holds out nothing."""
        fold = self.items["fold"].to_numpy()
        if k == FULL:
            return np.zeros(0, dtype=np.int64), np.arange(len(fold))
        val_idx, train_idx = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        if len(val_idx) == 0 or len(train_idx) == 0:
            raise CompError(f"fold {k} has {len(val_idx)} held-out and {len(train_idx)} training rows; remake folds")
        return val_idx, train_idx

    def _resume(self, paths: RunPaths, trainer: Trainer, k: int) -> _Progress:
        """The progress saved after the last whole epoch (model, optimizer, RNG restored), or a fresh start."""
        last = checkpoint.load_last(paths)
        if last is None:
            return _Progress()
        trainer.load_state_dict(last)
        checkpoint.set_rng_state(last["rng"])
        self.say(f"{self.alias} {_name(k)}: resuming after epoch {int(last['epoch']) + 1}")
        # An early-stopped run resumes past its last epoch: straight to its logits.
        start = int(last["epoch"]) + (self.recipe.epochs if last.get("stopped") else 1)
        return _Progress(last["history"], last["best"], last["best_epoch"], start)

    def _epoch(self, k: int, epoch: int, paths: RunPaths, trainer: Trainer, dataset, train_idx: np.ndarray,
               val_idx: np.ndarray, progress: _Progress, run_started: float) -> bool:
        """Train one epoch, score it on the held-out rows, keep the best weights, save the resumable state; returns
        whether to stop early. The full fit has no held-out rows: its last epoch's weights are the ones kept."""
        seed_everything(self.recipe.seed, _seed_key(k), epoch, self.ddp.rank)
        t0 = time.time()
        loader = self._loader(dataset, train_idx, trainer, k, epoch)
        with epoch_progress(f"{self.alias} {'full' if k == FULL else f'f{k}'} e{epoch + 1}/{self.recipe.epochs}",
                            min(len(loader), trainer.batches_per_epoch), enabled=self.ddp.main) as advance:
            if self.pacing is not None:
                total = min(len(train_idx), trainer.batches_per_epoch * self.recipe.batch_size)
                advance = self.pacing.watch(self, k, epoch, trainer, paths, run_started, advance, total)
            loss, n_seen = trainer.train_epoch(loader, epoch, advance)
        train_s = time.time() - t0
        metric = self.comp.metric
        score = val_loss = math.nan
        improved = False
        if len(val_idx):
            logits = self.predict(trainer.eval_model(), self.train_images, val_idx, "none")
            score = metrics.score(metric, self.y[val_idx], logits, self.comp.top_k)
            val_loss = self.kind.loss(logits, self.y[val_idx])
            improved = metrics.is_better(metric, score, progress.best)
        if improved:
            progress.best, progress.best_epoch = score, epoch
            if self.ddp.main:
                save_weights(paths.best, unwrap(trainer.eval_model()), {"epoch": str(epoch)})
        row = {"epoch": epoch + 1, "train_loss": loss, "val_loss": val_loss, f"val_{metric}": score,
               "lr": trainer.lr(), "images_per_s": n_seen * self.ddp.world / max(train_s, 1e-9),
               "seconds": time.time() - t0, "trainable": trainer.trainable_label}
        progress.history.append(row)
        self.pace.epoch_done(k, row["seconds"])
        patience = self.recipe.patience
        stop = bool(patience) and progress.best_epoch is not None and epoch - progress.best_epoch >= patience
        if self.pacing is not None and not stop:
            # Before the resumable state is saved: it must hold the schedule the run goes on with.
            self.pacing.after_epoch(self, k, trainer, paths, progress, run_started)
        if self.ddp.main:
            inputs = {name: getattr(self.current, name) for name in INPUTS}  # as last.pt always carried them
            checkpoint.save_last(paths, {**trainer.state_dict(), "epoch": epoch, "history": progress.history,
                                         "best": progress.best, "best_epoch": progress.best_epoch, "stopped": stop,
                                         **inputs})
            scored = (f"val_loss {val_loss:.4f}  {metric} {score:.4f}{' *' if improved else ''}  "
                      if len(val_idx) else "")
            part = f" ({self.recipe.epoch_fraction:.0%} of its steps)" if self.recipe.epoch_fraction < 1 else ""
            self.say(
                f"{self.alias} {self.pace.label(k)} epoch {epoch + 1}/{self.recipe.epochs}{part}: loss {loss:.4f}  "
                f"{scored}{row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s  {self.pace.eta()}".rstrip()
            )
        if stop:
            self.say(f"{self.alias} {_name(k)}: early stop, {metric} flat for {patience} epochs")
        return stop

    def _loader(self, dataset, train_idx: np.ndarray, trainer: Trainer, k: int | str, epoch: int):
        """The fold's loader set to `epoch`: built once (Trainer.loader), its workers kept across epochs; its shuffle
        (DistributedSampler, also with one process) and each item's augmentation seed follow from (seed, fold, epoch)
        alone, whatever ran before."""
        subset = torch.utils.data.Subset(dataset, train_idx)
        seed = self.recipe.seed + _seed_key(k)
        sampler = torch.utils.data.DistributedSampler(
            subset, num_replicas=self.ddp.world, rank=self.ddp.rank, shuffle=True, seed=seed
        )
        loader = trainer.loader(subset, sampler, seed=seed)  # the first epoch's call builds it
        loader.sampler.set_epoch(epoch)
        return loader

    def _finish(self, run: Run, paths: RunPaths, trainer: Trainer, val_idx: np.ndarray, progress: _Progress,
                started: float) -> dict[str, Any]:
        """The best weights' OOF and test logits with the recipe's TTA; then metrics, history, the resolved recipe
        and the finished run record."""
        model = unwrap(trainer.eval_model())
        if paths.best.exists():
            load_weights(paths.best, model)
        elif self.ddp.main:  # every epoch scored NaN: keep the last weights so the run still has predictions
            save_weights(paths.best, model)
        t0 = time.time()
        tta = self.recipe.tta
        oof = self.predict(model, self.train_images, val_idx, tta) if len(val_idx) else None
        test = self.predict(model, self.test_images, np.arange(len(self.test)), tta) if len(self.test) else None
        predict_s = time.time() - t0
        oof_score = (metrics.score(self.comp.metric, self.y[val_idx], oof, self.comp.top_k) if oof is not None
                     else None)
        best_epoch = progress.best_epoch
        summary = {"fold": run.fold, "status": "trained", "metric": self.comp.metric, "best_score": progress.best,
                   "best_epoch": None if best_epoch is None else best_epoch + 1, "oof_score": oof_score, "tta": tta,
                   "epochs_done": len(progress.history), "n_oof": len(val_idx), "n_test": len(self.test),
                   "n_train": len(self.items) - len(val_idx),
                   "speed": trainer.speed}  # thread plan and memory format, as chosen for this run
        if self.ddp.main:
            meta = run.meta(tta)
            classes = self.comp.classes
            if oof is not None:
                logits_io.save(paths.oof, logits_io.Logits(self.items["id"].to_numpy()[val_idx], oof, classes, meta))
            if test is not None:
                logits_io.save(paths.test, logits_io.Logits(self.test["id"].to_numpy(), test, classes, meta))
            checkpoint.write_history(paths, progress.history, self.comp.metric)
            atomic.write_json(paths.metrics, summary)
            save_toml(paths.recipe, run.recipe, f"# resolved recipe of {self.alias} fold {run.fold}")
            write_run(paths, dataclasses.replace(
                run, finished=True, epochs_done=len(progress.history), train_s=round(t0 - started, 2),
                predict_s=round(predict_s, 2), world_size=self.ddp.world, device=str(self.ddp.device),
            ))
            scored = f"OOF {self.comp.metric} {oof_score:.4f}" if oof is not None else "test logits"
            shown = self.ws.run(self.alias, run.fold).dir  # where it lands (a replacement is swapped in next)
            self.say(f"{self.alias} {_name(run.fold)}: {scored} (tta {tta}) -> {shown}")
        self.ddp.barrier()
        return summary

    def say(self, text: str) -> None:
        if self.ddp.main:
            self.console.print(text, highlight=False, soft_wrap=True)

    def predict(self, model, images: np.ndarray, idx: np.ndarray, tta: str) -> np.ndarray:
        """Logits for `images[idx]`: each rank takes a disjoint shard, rank 0 gathers them in order."""
        shard = idx[self.ddp.rank :: self.ddp.world]
        batch = self.recipe.eval_batch_size or 2 * self.recipe.batch_size
        out = predict_logits(model, eval_view(images, self.data_config, tta), self.data_config, tta, batch,
                             self.ddp.device, self.kind.merge("mean"),
                             progress=self.ddp.main and len(shard) > 4 * batch, indices=shard)
        if self.ddp.world == 1:
            return out
        gathered: list[Any] = [None] * self.ddp.world
        dist.all_gather_object(gathered, out)
        full = np.zeros((len(idx), gathered[0].shape[1]), np.float32)  # classes, or features (head_init probe)
        for r, part in enumerate(gathered):
            full[r :: self.ddp.world] = part
        return full


PILOT_FOLDS = 3  # the side pilot's CV folds inside its rows


def _stratified(rows: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` of `rows`, classes interleaved (each class's rows shuffled, then taken in turn), and a CV fold for each
    (its rank within its class mod PILOT_FOLDS): every class about evenly in the sample and in each fold.
    Multi-label rows (y 2-D) are shuffled as they are, folds by position."""
    rng = np.random.default_rng(seed)
    if y.ndim > 1:
        picked = np.asarray(rng.permutation(rows)[:n], dtype=np.int64)
        return picked, np.arange(len(picked)) % PILOT_FOLDS
    queues = [rng.permutation(rows[y[rows] == c]).tolist() for c in np.unique(y[rows])]
    order, depth = [], 0
    while len(order) < len(rows):
        order.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    picked = np.asarray(order[:n], dtype=np.int64)
    rank: dict[int, int] = {}
    cv = np.empty(len(picked), dtype=np.int64)
    for i, c in enumerate(y[picked].tolist()):
        cv[i] = rank.get(c, 0) % PILOT_FOLDS
        rank[c] = rank.get(c, 0) + 1
    return picked, cv


def _read_metrics(paths: RunPaths) -> dict[str, Any]:
    import json

    try:
        return json.loads(paths.metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _name(k: int | str) -> str:
    return "full fit" if k == FULL else f"fold {k}"


def _seed_key(k: int | str) -> int:
    """The number a run's seeds derive from: its fold, or for the full fit one no fold uses."""
    return FULL_SEED if k == FULL else int(k)


FULL_SEED = 1000  # the full fit's seed key (folds are 0..K-1)
DECODE_S_PER_IMAGE = 0.005  # a re-decode's price per image when the cache existed (a 100-500 px photo, one core)
ESTIMATE_MIN_IMAGES = 20_000  # without --budget, a CPU run this large (training images x epochs) is timed first


class _Pacing:
    """A --budget plan held against the clock while the runs train: after the first run's early epochs the plan is
    chosen again from their measured time (budget.repace), and a later run the time left cannot hold is dropped
    (budget.run_fits). A change is recorded where a resumed command reads it: plan.json, the run's provenance (its
    epochs are part of the resolved recipe) and the trainer's schedule, before the epoch's resumable state is saved."""

    def __init__(self, plan: Plan, planned, started: float, asked: str, n_folds: int) -> None:
        self.plan, self.planned, self.started, self.asked, self.n_folds = plan, planned, started, asked, n_folds

    def after_epoch(self, job: _Job, k: int | str, trainer: Trainer, paths: RunPaths, progress: _Progress,
                    run_started: float) -> None:
        """After each early epoch of the first run: the mean epoch against the plan's."""
        if k != self.plan.runs[0] or not progress.history:
            return
        done = len(progress.history)
        took = sum(row["seconds"] for row in progress.history) / done
        planned = budgeting.epoch_seconds(self.plan, k)
        what = (f"epoch{'s' if done != 1 else ''} 1{f'-{done}' if done > 1 else ''} took {duration(took)}"
                f"{' each' if done > 1 else ''}, planned {duration(planned)}")
        self._repace(job, k, trainer, paths, done, took / max(planned, 1e-9), run_started, what)

    def watch(self, job: _Job, k: int | str, epoch: int, trainer: Trainer, paths: RunPaths, run_started: float,
              advance, total: int):
        """The `advance(n)` of the first run's first epoch, wrapped to re-pace once REPACE_AT of its training
        images are through (a one-epoch plan has no epoch boundary to do it at)."""
        if k != self.plan.runs[0] or epoch != 0 or self.plan.reused:
            return advance
        seen, steps, t0, fired = 0, 0, 0.0, False

        def watched(n: int) -> None:
            nonlocal seen, steps, t0, fired
            advance(n)
            steps += 1
            if steps == 1:  # timed from the end of the first step: its start-up (allocation, workers) is not steady
                t0 = time.time()
                return
            seen += n
            if not fired and seen >= budgeting.REPACE_AT * total and steps >= 3:
                fired = True
                took = time.time() - t0
                planned = budgeting.epoch_seconds(self.plan, k, seen)
                what = (f"{seen} training images after the first step took {duration(took)}, planned "
                        f"{duration(planned)}")
                self._repace(job, k, trainer, paths, 0, took / max(planned, 1e-9), run_started, what)

        return watched

    def _repace(self, job: _Job, k: int | str, trainer: Trainer, paths: RunPaths, done: int, scale: float,
                run_started: float, what: str) -> None:
        now = time.time()
        new = budgeting.repace(self.plan, job.recipe, done, scale, now - run_started, now - self.started, what)
        if new is None:
            return
        old, self.plan = self.plan, new
        if not new.repaced:
            return
        recipe, current = self.planned(new)
        job.recipe, job.current = recipe, current
        trainer.set_epochs(recipe)
        write_run(paths, dataclasses.replace(current, fold=k))
        atomic.write_json(job.ws.plan(job.alias), new.to_json(recipe.budget, self.asked))
        seconds = list(job.pace.seconds)
        job.pace = Pace(list(new.runs), new.epochs)
        job.pace.seconds = seconds
        job.pace.start(k, done)
        job.say(budgeting.repaced_line(old, new, self.n_folds))

    def keeps(self, job: _Job, k: int | str) -> bool:
        """Whether run `k` still trains: the first always; a later one when it fits what is left of the budget."""
        if k == self.plan.runs[0] or job.ws.run(job.alias, k).output.exists():
            return True
        fits, need, left = budgeting.run_fits(self.plan, k, time.time() - self.started)
        if fits:
            return True
        self.plan = dataclasses.replace(self.plan, runs=tuple(r for r in self.plan.runs if r != k))
        atomic.write_json(job.ws.plan(job.alias), self.plan.to_json(job.recipe.budget, self.asked))
        job.pace.finish(k)
        job.say(f"budget {duration(self.plan.budget_s)}: {_name(k)} left out: it needs about {duration(need)} and "
                f"{duration(max(0.0, left))} of the budget is left")
        return False


def plan_budget(job: _Job, runs: list[int | str], asked: str, force: bool, started: float, native: int | None,
                fixed: bool, choose_runs: bool = True) -> Plan:
    """The budget's plan: read back from plan.json when the same command (same budget and --fold) made it, else
    measured now and written there. Under torchrun rank 0's plan is the one all follow: with DDP every rank measures
    (the probe's steps are collective); with --fold-parallel (`choose_runs` False: each process has its own runs)
    rank 0 plans epochs and side for its share of the folds (the largest) while the others wait, so every fold
    trains with the same settings."""
    group = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    plan: Plan | CompError | None = None
    if not (group and job.ddp.world == 1 and dist.get_rank() != 0):
        try:
            plan = _local_plan(job, runs, asked, force, started, native, fixed, choose_runs)
        except CompError as err:
            if not group:
                raise
            plan = err  # sent to the other processes too, which would otherwise wait for a plan forever
    if group:
        shared = [plan]
        dist.broadcast_object_list(shared, src=0)
        plan = shared[0]
    if isinstance(plan, CompError):
        raise plan
    if not choose_runs:  # --fold-parallel: the plan's settings, this process's own runs
        plan = dataclasses.replace(plan, runs=tuple(runs))
    return plan


def _local_plan(job: _Job, runs: list[int | str], asked: str, force: bool, started: float, native: int | None,
                fixed: bool, choose_runs: bool) -> Plan:
    recipe = job.recipe
    budget_s = parse_duration(recipe.budget, "budget")
    where = job.ws.plan(job.alias)
    if not force and where.exists():
        import json

        try:
            saved = json.loads(where.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        if saved.get("budget") == recipe.budget and saved.get("fold") == asked:
            return Plan.from_json(saved, budget_s, time.time() - started)
    world = job.ddp.world
    folds = job.items["fold"].to_numpy()
    n_folds = int(job.comp.n_folds)
    # With --fold all the planner may also add a full fit; --fold K or --fold full is trained as asked.
    choices = [*runs, FULL] if choose_runs and asked == "all" and len(job.test) else list(runs)
    work = budgeting.Workload(
        fold_rows=tuple(-(-int((folds == k).sum()) // world) for k in range(n_folds)),
        n_extra=-(-int((folds < 0).sum()) // world), n_test=-(-len(job.test) // world),
        views=budgeting.tta_views(recipe.tta, job.data_config), native_side=native, runs=tuple(choices),
        choose_runs=choose_runs, head_probe=recipe.head_init == "probe",
    )
    t0 = time.time()
    first = next((k for k in runs if k != FULL), FULL)
    rates = job.measure(budgeting.probe_seconds(budget_s), first)
    timing_s = time.time() - t0
    # What smaller sides cost this set, measured (budget.SideErrors), when there is a choice of side to make.
    sides = budgeting.pilot_sides(budgeting.candidate_sides(rates.img_size, native, recipe, fixed))
    rows = budgeting.pilot_rows(budget_s, rates, sides, len(job._split(first)[1]), job.comp.num_classes)
    measured = job.side_errors(sides, first, rows) if sides and rows else None
    if measured is not None:
        work = dataclasses.replace(work, side_errors=measured)
        job.say(f"budget: {measured.describe()}")
    elapsed = time.time() - started
    pilot = f", side pilot {duration(measured.seconds)}" if measured is not None else ""
    setup = (f"start-up and checks {duration(elapsed - job.decode_s - (time.time() - t0))}, decoding images "
             f"{duration(job.decode_s)}, timing steps {duration(timing_s)}{pilot}")
    plan = budgeting.choose(budget_s, elapsed, recipe, rates, work, job.redecode_seconds(), fixed_side=fixed,
                            setup=setup)
    if job.ddp.main:
        atomic.write_json(where, plan.to_json(recipe.budget, asked))
    return plan
