"""One (model, fold): the training loop, optional features switched once at setup, resume, OOF and test logits.

`train(ws, alias, fold, ...)` is what `comp train` calls. Each fold trains on the other folds, is evaluated on its
own rows every epoch with the competition's metric, keeps its best weights, and writes its logits (see
comp.logits) plus metrics, history, curves, the resolved recipe and provenance under `ws.run(alias, k)`.

Reproducibility: every epoch starts from RNG seeds derived from (recipe seed, fold, epoch, rank) and builds its own
loader, so an epoch's shuffle, augmentation and mixup draws do not depend on what ran before it. That is what lets a
run killed mid-epoch resume from the last saved epoch and end with the same logits as an uninterrupted run.
Under `torchrun` the same code runs with DDP: a DistributedSampler splits training, evaluation is split into
disjoint shards (no padding duplicates) and gathered, and only rank 0 writes. Several machines work the same way,
with torchrun's rendezvous flags and a workspace every node sees at the same path (shared filesystem):

    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        -m comp train --model swag --fold 0
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from rich.console import Console

from comp import logits as logits_io
from comp.core import atomic, metrics
from comp.core.config import save_toml
from comp.core.device import resolve_device
from comp.core.errors import CompError
from comp.core.provenance import code_version, competition_hash
from comp.core.workspace import Workspace
from comp.modeling.models import build_model, data_config, load_weights, save_weights, unwrap
from comp.modeling.recipe import load_recipe, recipe_dict, recipe_file_hash, recipe_hash
from comp.runs import write_provenance
from comp.training import checkpoint
from comp.training.lock import run_lock
from comp.training.loop import Trainer, epoch_progress
from comp.training.pace import Pace
from comp.training.runtime import Dist, seed_everything, setup_distributed
from comp.vision import augment, images
from comp.vision.tta import eval_view, predict_logits

# ---------------------------------------------------------------------------------------------------------------
# the command's library function


def train(
    ws: Workspace,
    alias: str,
    fold: int | str,
    device: str = "auto",
    overrides: list[str] | None = None,
    force: bool = False,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Train `alias` on fold `fold` (an int, or "all") of the workspace; returns one summary dict per fold."""
    from comp.folds import load_folds, parse_fold
    from comp.items import test_items, train_items
    from comp.setup.verify import ensure_verified, require_verified

    console = console or Console(stderr=True)
    comp = ws.load()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        require_verified(comp, ws)  # under torchrun every rank checks; verifying is left to `comp verify` first
    else:
        ensure_verified(comp, ws, console)  # cached: milliseconds when the data is unchanged
    recipe = load_recipe(ws, alias, overrides)
    folds = load_folds(ws, comp)
    fold_list = parse_fold(fold, folds.n_folds)
    items = train_items(comp, ws)
    try:
        merged = items.merge(folds.frame[["id", "fold"]], on="id", how="left", validate="one_to_one")
    except pd.errors.MergeError:
        raise CompError("training ids repeat in the labels or in folds.csv; run `comp verify` to find them") from None
    if merged["fold"].isna().any():
        missing = merged.loc[merged["fold"].isna(), "id"].tolist()
        raise CompError(
            f"{len(missing)} training id(s) are not in folds.csv (e.g. {missing[:3]}); run `comp folds --force`"
        )
    run = setup_distributed(resolve_device(device))
    if run.device.type == "cuda":
        # Fixed input sizes: let cuDNN pick the fastest kernels; TF32 matmuls on Ampere+ (fp32 runs, bf16 unaffected).
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    inputs = {
        "recipe_hash": recipe_hash(recipe),
        "folds_hash": folds.hash,
        "competition_hash": competition_hash(comp),
        # Not compared by training (the resolved recipe is); lets later stages see the recipe file edited since.
        "recipe_file_hash": recipe_file_hash(ws, alias),
    }
    # Deterministic CPU kernels make a resumed run repeat the interrupted one exactly; restored afterwards because
    # the switch is process-wide (a library caller may not want it).
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(run.device.type == "cpu" or was_deterministic, warn_only=True)
    try:
        job = _Job(ws, comp, alias, recipe, merged, test_items(comp, ws), inputs, run, console)
        job.pace = Pace(fold_list, recipe.epochs)
        summaries = []
        for k in fold_list:
            # The lock tells `comp status` this fold is training now; one left behind marks a dead run.
            with run_lock(ws.run(alias, k), alias, k, enabled=run.main):
                summaries.append(job.fold(k, force))
        return summaries
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


class _Job:
    """Everything the folds of one `comp train` share: images (decoded once), labels, hashes, the process group."""

    def __init__(self, ws, comp, alias, recipe, items, test, inputs, run: Dist, console: Console) -> None:
        self.ws, self.comp, self.alias, self.recipe, self.items, self.test = ws, comp, alias, recipe, items, test
        self.inputs, self.run, self.console = inputs, run, console
        self.pace = Pace()
        self.class_index = {c: i for i, c in enumerate(comp.classes)}
        self.y = items["label"].astype(str).map(self.class_index).to_numpy()
        if np.isnan(self.y.astype(float)).any():
            raise CompError("training labels outside `classes` in comp.toml; run `comp verify`")
        self.y = self.y.astype(np.int64)
        seed_everything(recipe.seed)
        probe = build_model(recipe, comp.num_classes, pretrained=False, ws=ws)
        self.data_config = data_config(probe)
        del probe
        size = int(self.data_config["input_size"][-1])
        self.cache_side = images.cache_size(size, float(self.data_config.get("crop_pct") or 1.0))
        self.train_images = self._images(items["path"].tolist())
        self.test_images = self._images(test["path"].tolist()) if len(test) else None

    def _images(self, paths: list[str]) -> np.ndarray:
        # Rank 0 builds the cache; the others wait and memory-map the finished file.
        if self.run.main:
            pixels = images.cached_images(self.ws, paths, self.cache_side)
        self.run.barrier()
        return pixels if self.run.main else images.cached_images(self.ws, paths, self.cache_side)

    # -- one fold
    def fold(self, k: int, force: bool) -> dict[str, Any]:
        paths = self.ws.run(self.alias, k)
        state = checkpoint.check_run(paths, self.inputs, self.alias, k, force, wipe=self.run.main)
        self.run.barrier()
        if state.finished:
            self.pace.finish(k)
            self.say(f"{self.alias} fold {k}: already trained (use --force to retrain)")
            return {**_read_metrics(paths), "fold": k, "status": "skipped"}
        started = time.time()
        if self.run.main:
            write_provenance(paths, self._provenance(k, finished=False))
        val_idx = np.flatnonzero(self.items["fold"].to_numpy() == k)
        train_idx = np.flatnonzero(self.items["fold"].to_numpy() != k)
        if len(val_idx) == 0 or len(train_idx) == 0:
            raise CompError(f"fold {k} has {len(val_idx)} held-out and {len(train_idx)} training rows; remake folds")
        seed_everything(self.recipe.seed, k)
        model = build_model(self.recipe, self.comp.num_classes, ws=self.ws)
        transform = augment.train_transform(self.data_config, self.recipe)
        dataset = images.ArrayDataset(self.train_images, self.y, transform)
        trainer = Trainer(self.recipe, model, self.data_config, self.run.device, len(train_idx), self.run.world)
        history, best, best_epoch, start_epoch = [], None, None, 0
        last = checkpoint.load_last(paths)
        if last is not None:
            trainer.load_state_dict(last)
            history, best, best_epoch = last["history"], last["best"], last["best_epoch"]
            start_epoch = int(last["epoch"]) + (self.recipe.epochs if last.get("stopped") else 1)
            checkpoint.set_rng_state(last["rng"])
            self.say(f"{self.alias} fold {k}: resuming after epoch {int(last['epoch']) + 1}")
        self.pace.start(k, start_epoch)
        metric = self.comp.metric
        for epoch in range(start_epoch, self.recipe.epochs):
            seed_everything(self.recipe.seed, k, epoch, self.run.rank)
            t0 = time.time()
            loader = self._loader(dataset, train_idx, trainer, k, epoch)
            with epoch_progress(f"{self.alias} f{k} e{epoch + 1}/{self.recipe.epochs}", len(loader),
                                enabled=self.run.main) as advance:
                loss, n_seen = trainer.train_epoch(loader, epoch, advance)
            train_s = time.time() - t0
            logits = self.predict(trainer.eval_model(), self.train_images, val_idx, "none")
            score = metrics.score(metric, self.y[val_idx], logits, self.comp.top_k)
            val_loss = _cross_entropy(logits, self.y[val_idx])
            improved = metrics.is_better(metric, score, best)
            if improved:
                best, best_epoch = score, epoch
                if self.run.main:
                    save_weights(paths.best, unwrap(trainer.eval_model()), {"epoch": str(epoch)})
            row = {"epoch": epoch + 1, "train_loss": loss, "val_loss": val_loss, f"val_{metric}": score,
                   "lr": trainer.lr(), "images_per_s": n_seen * self.run.world / max(train_s, 1e-9),
                   "seconds": time.time() - t0, "trainable": trainer.trainable_label}
            history.append(row)
            self.pace.epoch_done(k, row["seconds"])
            stop = bool(self.recipe.patience) and best_epoch is not None and epoch - best_epoch >= self.recipe.patience
            if self.run.main:
                checkpoint.save_last(paths, {**trainer.state_dict(), "epoch": epoch, "history": history, "best": best,
                                             "best_epoch": best_epoch, "stopped": stop, **self.inputs})
                self.console.print(
                    f"{self.alias} {self.pace.label(k)} epoch {epoch + 1}/{self.recipe.epochs}: loss {loss:.4f}  "
                    f"val_loss {val_loss:.4f}  {metric} {score:.4f}{' *' if improved else ''}  "
                    f"{row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s  {self.pace.eta()}".rstrip(),
                    highlight=False, soft_wrap=True,
                )
            if stop:
                self.say(f"{self.alias} fold {k}: early stop, {metric} flat for {self.recipe.patience} epochs")
                break
        self.run.barrier()
        self.pace.finish(k)
        return self._finish(k, paths, trainer, val_idx, history, best, best_epoch, started)

    def _loader(self, dataset, train_idx: np.ndarray, trainer: Trainer, k: int, epoch: int):
        """This epoch's loader: a fresh one each epoch, so its shuffle (DistributedSampler, also with one process) and
        its workers' augmentation seeds follow from (seed, fold, epoch) alone, whatever ran before."""
        subset = torch.utils.data.Subset(dataset, train_idx)
        sampler = torch.utils.data.DistributedSampler(
            subset, num_replicas=self.run.world, rank=self.run.rank, shuffle=True, seed=self.recipe.seed + k
        )
        sampler.set_epoch(epoch)
        return images.make_loader(
            subset, self.recipe.batch_size, shuffle=False, sampler=sampler,
            workers=None if self.recipe.num_workers < 0 else self.recipe.num_workers, device=self.run.device,
            drop_last=trainer.drop_last(len(sampler)), seed=int(torch.randint(0, 2**31 - 1, ()).item()),
        )

    def _finish(self, k, paths, trainer, val_idx, history, best, best_epoch, started) -> dict[str, Any]:
        model = unwrap(trainer.eval_model())
        if paths.best.exists():
            load_weights(paths.best, model)
        elif self.run.main:  # every epoch scored NaN: keep the last weights so the run still has predictions
            save_weights(paths.best, model)
        t0 = time.time()
        tta = self.recipe.tta
        oof = self.predict(model, self.train_images, val_idx, tta)
        test = self.predict(model, self.test_images, np.arange(len(self.test)), tta) if len(self.test) else None
        predict_s = time.time() - t0
        oof_score = metrics.score(self.comp.metric, self.y[val_idx], oof, self.comp.top_k)
        summary = {"fold": k, "status": "trained", "metric": self.comp.metric, "best_score": best,
                   "best_epoch": None if best_epoch is None else best_epoch + 1, "oof_score": oof_score, "tta": tta,
                   "epochs_done": len(history), "n_oof": len(val_idx), "n_test": len(self.test)}
        if self.run.main:
            meta = {**self.inputs, "code_version": code_version(), "model": self.alias, "fold": k, "tta": tta}
            logits_io.save(paths.oof, logits_io.Logits(self.items["id"].to_numpy()[val_idx], oof,
                                                       self.comp.classes, meta))
            if test is not None:
                logits_io.save(paths.test, logits_io.Logits(self.test["id"].to_numpy(), test, self.comp.classes, meta))
            checkpoint.write_history(paths, history, self.comp.metric)
            atomic.write_json(paths.metrics, summary)
            save_toml(paths.recipe, recipe_dict(self.recipe), f"# resolved recipe of {self.alias} fold {k}")
            record = self._provenance(k, finished=True)
            record.update(epochs_done=len(history), train_s=round(t0 - started, 2),
                          predict_s=round(predict_s, 2), world_size=self.run.world, device=str(self.run.device))
            write_provenance(paths, record)
            self.console.print(
                f"{self.alias} fold {k}: OOF {self.comp.metric} {oof_score:.4f} (tta {tta}) -> {paths.dir}",
                highlight=False, soft_wrap=True,
            )
        self.run.barrier()
        return summary

    def say(self, text: str) -> None:
        if self.run.main:
            self.console.print(text, highlight=False, soft_wrap=True)

    def _provenance(self, k: int, finished: bool) -> dict[str, Any]:
        return {**self.inputs, "code_version": code_version(), "model": self.alias, "fold": k,
                "name": self.recipe.name, "finished": finished, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def predict(self, model, images: np.ndarray, idx: np.ndarray, tta: str) -> np.ndarray:
        """Logits for `images[idx]`: each rank takes a disjoint shard, rank 0 gathers them in order."""
        shard = idx[self.run.rank :: self.run.world]
        batch = self.recipe.eval_batch_size or 2 * self.recipe.batch_size
        out = predict_logits(model, eval_view(images, self.data_config, tta), self.data_config, tta, batch,
                             self.run.device, progress=self.run.main and len(shard) > 4 * batch, indices=shard)
        if self.run.world == 1:
            return out
        gathered: list[Any] = [None] * self.run.world
        dist.all_gather_object(gathered, out)
        full = np.zeros((len(idx), self.comp.num_classes), np.float32)
        for r, part in enumerate(gathered):
            full[r :: self.run.world] = part
        return full


def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()) if len(y) else math.nan


def _read_metrics(paths) -> dict[str, Any]:
    import json

    try:
        return json.loads(paths.metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
