"""The training step: optimizer, schedule, AMP, EMA, mixup, freezing and DDP, each switched once at setup (timm style).

`Trainer` holds the state that resume must restore (model, optimizer, scheduler, scaler, EMA, update count) and
runs one epoch over any iterable of uint8 batches; the fold logic around it lives in comp.train. Optional features
become an object or a no-op here (`autocast = nullcontext`, `mixup = None`), so the step itself has no branches on
recipe flags beyond "is it there".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler, StepLRScheduler
from timm.utils import ModelEmaV3
from torch import nn

from comp.core.errors import CompError
from comp.core.progress import progress_bar
from comp.modeling.models import set_trainable, trainable_stage_count
from comp.modeling.recipe import Recipe
from comp.training.objective import make_objective
from comp.training.runtime import ThreadPlan, probe_channels_last, thread_plan, torch_threads
from comp.vision.augment import GpuBatchAugment, NormalizingCollate
from comp.vision.images import epoch_loader


def amp_dtype(recipe: Recipe, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: auto = bf16 on a CUDA GPU that supports it, otherwise full precision."""
    kind = recipe.amp
    if kind == "auto":
        kind = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[kind]


class Trainer:
    """One model's optimisation state and its training epoch.

    Speed decisions are made once here and kept in `speed` (the run records them): the thread plan (loader workers
    and step threads that never oversubscribe the cores, comp.training.runtime.thread_plan) and the memory format.
    channels_last follows the recipe on accelerators; on a CPU it is used only where `probe_channels_last` measures
    it faster for this model (recipe channels_last = false turns it off everywhere). `channels_last` given
    explicitly skips the probe; a resumed run takes the format of the run it resumes (see `load_state_dict`).
    """

    def __init__(self, recipe: Recipe, model: nn.Module, data_config: dict, device: torch.device,
                 n_train: int, world: int = 1, channels_last: bool | None = None, multilabel: bool = False) -> None:
        self.recipe, self.device, self.world, self.data_config = recipe, device, world, data_config
        per_rank = math.ceil(n_train / world)
        self.plan: ThreadPlan = thread_plan(recipe.num_workers, per_rank, recipe.batch_size, device)
        self.speed: dict[str, Any] = {**self.plan.as_dict()}
        if channels_last is None:
            channels_last = recipe.channels_last
            if channels_last and device.type == "cpu":
                with torch_threads(self.plan.train_threads):
                    channels_last, self.speed["channels_last_probe"] = probe_channels_last(
                        model, int(data_config["input_size"][-1]), min(8, recipe.batch_size))
        self.channels_last = bool(channels_last)
        self.speed["channels_last"] = self.channels_last
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=memory_format)
        if recipe.uses_mix and per_rank < recipe.batch_size:
            raise CompError(
                f"mixup/cutmix needs full batches but a fold trains on {per_rank} rows per process with batch_size "
                f"{recipe.batch_size}; lower batch_size (--set batch_size=N)"
            )
        self.steps_per_epoch = (per_rank // recipe.batch_size if self.drop_last(per_rank)
                                else math.ceil(per_rank / recipe.batch_size))
        self._size_epochs(recipe)
        self.optimizer = create_optimizer_v2(
            self.model, opt=recipe.optimizer, lr=recipe.lr, weight_decay=recipe.weight_decay,
            layer_decay=recipe.layer_decay or None,
        )
        self.scheduler = self._scheduler()
        dtype = amp_dtype(recipe, device)
        self.autocast = partial(torch.autocast, device.type, dtype=dtype) if dtype is not None else nullcontext
        self.scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        # Warmup: the decay grows with the update count (1 - (1 + n)^-2/3, capped at ema_decay), so the average
        # follows the weights on a small set's few hundred updates instead of staying at the pretrained ones.
        self.ema = ModelEmaV3(self.model, decay=recipe.ema_decay, use_warmup=True) if recipe.ema else None
        # The objective follows the kind (softmax CE, or per-class sigmoid BCE for multi-label), chosen once here.
        self.mixup, self.criterion = make_objective(recipe, _num_classes(self.model), multilabel)
        self.augment = GpuBatchAugment(data_config, recipe, device)
        self._loader: torch.utils.data.DataLoader | None = None
        self.num_updates = 0
        self.net: nn.Module | None = None  # what the step calls: the model, maybe wrapped in DDP and compiled
        self._trainable: Any = "unset"
        self.trainable_label = "all"

    def loader(self, dataset, sampler: torch.utils.data.Sampler, seed: int) -> torch.utils.data.DataLoader:
        """The one training loader of this model (built on the first call; later calls return it and ignore their
        arguments): its workers persist across epochs, the plan's number of them, normalising on a CPU, and each
        item's augmentation is seeded from (seed, epoch, index) (comp.vision.images.epoch_loader), so call
        `loader.sampler.set_epoch(epoch)` before each epoch and an epoch's batches follow from those alone."""
        if self._loader is None:
            collate = NormalizingCollate(self.data_config) if self.plan.normalize_in_workers else None
            self._loader = epoch_loader(
                dataset, self.recipe.batch_size, sampler=sampler, seed=seed, workers=self.plan.workers,
                device=self.device, drop_last=self.drop_last(len(sampler)), collate_fn=collate,
            )
        return self._loader

    def close(self) -> None:
        """Let the loader's workers go (they also exit when the Trainer is garbage-collected)."""
        self._loader = None

    def drop_last(self, n_samples: int) -> bool:
        # Mixup pairs samples within a batch (needs full ones); a lone last sample would break BatchNorm.
        return self.recipe.uses_mix or n_samples % self.recipe.batch_size == 1

    def _scheduler(self):
        r, total = self.recipe, self.recipe.epochs * self.updates_per_epoch
        warmup = int(r.warmup_epochs * self.updates_per_epoch)
        if r.schedule == "cosine":
            return CosineLRScheduler(self.optimizer, t_initial=max(1, total - warmup), lr_min=r.min_lr,
                                     warmup_t=warmup, warmup_lr_init=r.warmup_lr, warmup_prefix=True, t_in_epochs=False)
        if r.schedule == "step":  # decay by 10x at 1/3 and 2/3 of training
            return StepLRScheduler(self.optimizer, decay_t=max(1, total // 3), decay_rate=0.1, warmup_t=warmup,
                                   warmup_lr_init=r.warmup_lr, t_in_epochs=False)
        return None

    def _size_epochs(self, recipe: Recipe) -> None:
        # epoch_fraction < 1 (a --budget plan): each epoch ends after this many batches, and the schedule counts only
        # the updates they make, so warmup and cosine still run their full course.
        self.batches_per_epoch = max(1, math.ceil(recipe.epoch_fraction * self.steps_per_epoch - 1e-9))
        self.updates_per_epoch = max(1, math.ceil(self.batches_per_epoch / recipe.grad_accum))

    def set_epochs(self, recipe: Recipe) -> None:
        """Train `recipe.epochs` of `recipe.epoch_fraction` from now on, the epoch under way included (a --budget plan
        re-paced against the clock): the schedule is rebuilt for the new count and set to where the updates so far
        leave it (early on, the cosine moves the rate little)."""
        self.recipe = recipe
        self._size_epochs(recipe)
        self.scheduler = self._scheduler()
        if self.scheduler is not None:
            self.scheduler.step_update(self.num_updates)

    def prepare_epoch(self, epoch: int) -> None:
        """Apply the freeze schedule for `epoch`; (re)wrap for DDP and compile when the trainable set changes."""
        n = trainable_stage_count(self.recipe, epoch)
        if n == self._trainable and self.net is not None:
            return
        self._trainable = n
        set_trainable(self.model, n)
        self.trainable_label = "all" if n is None else f"head+{n}"
        net: nn.Module = self.model
        if self.world > 1:
            # DDP registers hooks for the parameters that train at construction, so a new trainable set needs a
            # new wrapper (cheap: it broadcasts the already-equal weights once).
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if self.recipe.compile:
            net = torch.compile(net)
        self.net = net

    def train_epoch(self, batches: Iterable, epoch: int, advance: Callable[[int], None] = lambda n: None
                    ) -> tuple[float, int]:
        """One pass over `(images (B,3,H,W), int labels)` batches (uint8, or float already normalised by the loader);
        returns (mean loss, images seen). Runs with the plan's step threads."""
        with torch_threads(self.plan.train_threads):
            return self._train_epoch(batches, epoch, advance)

    def _train_epoch(self, batches: Iterable, epoch: int, advance: Callable[[int], None]) -> tuple[float, int]:
        self.prepare_epoch(epoch)
        self.net.train()
        accum, total, seen = self.recipe.grad_accum, torch.zeros((), device=self.device), 0
        available = len(batches) if hasattr(batches, "__len__") else None
        for i, (images, labels) in enumerate(batches):
            n_batches = available
            if self.recipe.epoch_fraction < 1:  # read per batch: a re-paced plan may change it mid-epoch
                n_batches = min(available or self.batches_per_epoch, self.batches_per_epoch)
            if n_batches is not None and i >= n_batches:
                break  # a partial epoch (epoch_fraction): its last update was the schedule's last
            x = self.augment(images.to(self.device, non_blocking=True))
            if not self.channels_last:
                x = x.contiguous()
            y = labels.to(self.device, non_blocking=True)
            if self.mixup is not None:
                x, y = self.mixup(x, y)
            boundary = (i + 1) % accum == 0 or (n_batches is not None and i + 1 == n_batches)
            sync = self.net.no_sync() if self.world > 1 and not boundary else nullcontext()
            with sync:
                with self.autocast():
                    loss = self.criterion(self.net(x), y)
                if i % accum == 0:
                    # Dropping the old gradients after the forward pass (not right after the step) lets the allocator
                    # reuse their memory for the new ones: measured ~4% faster per step on CPU (bench/bench_step.py).
                    self.optimizer.zero_grad(set_to_none=True)
                self._backward(loss / accum)
            if boundary:
                self._step()
            total += loss.detach() * len(x)
            seen += len(x)
            advance(len(x))
        if self.world > 1:
            stats = torch.tensor([total.item(), float(seen)], device=self.device)
            torch.distributed.all_reduce(stats)
            return float(stats[0] / max(stats[1], 1)), seen
        return float(total.item() / max(seen, 1)), seen

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def _step(self) -> None:
        if self.scaler is not None:
            if self.recipe.clip_grad:
                self.scaler.unscale_(self.optimizer)
                self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.recipe.clip_grad:
                self._clip()
            self.optimizer.step()
        self.num_updates += 1
        if self.scheduler is not None:
            self.scheduler.step_update(self.num_updates)
        if self.ema is not None:
            self.ema.update(self.model, step=self.num_updates)

    def _clip(self) -> None:
        params = [p for p in self.model.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.recipe.clip_grad)

    def eval_model(self) -> nn.Module:
        """The weights to evaluate and keep: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def lr(self) -> float:
        return max(g["lr"] for g in self.optimizer.param_groups)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "num_updates": self.num_updates,
            "channels_last": self.channels_last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("channels_last")
        if saved is not None and bool(saved) != self.channels_last:
            # Resume in the memory format the run started in: the other one computes in another order, and a resumed
            # run must end equal to an uninterrupted one. Parameters keep their identity, so the optimizer still
            # holds them.
            self.channels_last = bool(saved)
            self.speed["channels_last"] = self.channels_last
            self.speed["channels_last_from"] = "resumed run"
            memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
            self.model.to(memory_format=memory_format)
            if self.ema is not None:
                self.ema.module.to(memory_format=memory_format)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.num_updates = int(state["num_updates"])


def _num_classes(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", 0) or model.pretrained_cfg.get("num_classes"))


@contextmanager
def epoch_progress(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich bar over an epoch's batches with images/s and ETA; yields `advance(n_images)`."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:  # logs and pipes get the per-epoch summary line only
        yield lambda n: None
        return
    bar = progress_bar(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(), console=console,
    )
    task = bar.add_task(description, total=total, rate="")
    images = 0

    def advance(n: int) -> None:
        nonlocal images
        images += n
        elapsed = bar.tasks[0].elapsed or 1e-9
        bar.update(task, advance=1, rate=f"{images / elapsed:.0f} img/s")

    with bar:
        yield advance
