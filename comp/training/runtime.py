"""Where a training process runs: its device and place in a torchrun group (DDP), its RNG seeds, how it uses the
CPU's cores (thread plan) and, on a CPU, which memory format its model trains fastest in.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from comp.vision.images import available_cores


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return Dist(0, 1, device)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def seed_everything(*keys: int) -> None:
    """Seed python, numpy and torch from a tuple of integers (e.g. seed, fold, epoch, rank)."""
    seed = int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# CPU threads: never more busy threads than cores
#
# A training process on a CPU runs torch's intra-op threads plus its loader workers (one thread each). torch's default
# is one intra-op thread per core of the machine, whatever the affinity mask or cgroup quota, and spin-waiting
# OpenMP threads that share cores with busy workers slow everything down (measured: a 2-core box running an
# EfficientNet-Lite0 epoch fell from ~30 to 6-12 img/s once another process shared it). So the plan gives the loader
# workers their cores first and the training step the rest, and evaluation (when the workers sleep) all of them.


@dataclass(frozen=True)
class ThreadPlan:
    """How this process uses its cores while training; `train_threads + workers <= cores` always."""

    cores: int  # cores this process may use: affinity and cgroup quota, split among the ranks on this machine
    workers: int  # loader worker processes (one torch thread each), kept across epochs
    train_threads: int  # torch intra-op threads of the training step while the workers run
    eval_threads: int  # torch intra-op threads while evaluating and predicting (the workers sleep then)
    normalize_in_workers: bool  # CPU: workers convert and normalise the batches, not the training step

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def process_cores() -> int:
    """Cores for this process: the machine's usable cores (comp.vision.images.available_cores) split evenly among
    the torchrun ranks on this machine (LOCAL_WORLD_SIZE), and at most OMP_NUM_THREADS when the user set it (the
    usual way to tell a process how many threads it may run)."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    cores = max(1, available_cores() // local)
    try:
        cap = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:  # unset, or a list such as "4,2" (nested levels): no cap
        return cores
    return max(1, min(cores, cap))


def thread_plan(requested_workers: int, n_items: int, batch_size: int, device: torch.device) -> ThreadPlan:
    """The thread plan for training on `n_items` rows per process in batches of `batch_size`.

    `requested_workers` is the recipe's num_workers: -1 chooses. Workers get at most `cores - 1` (the step keeps a
    core). Chosen: none for small sets (worker start-up would dominate); on a GPU one per core up to 8, leaving one
    core to the process that drives the GPU; on a CPU one per 8 cores, none below 8. From the uint8 cache an item
    costs ~0.5 ms to crop, flip and normalise, a CPU training step ~15-30 ms per image, so a worker would be busy a few
    percent of the time while, with no oversubscription, it takes a whole core from the step: below 8 cores the step
    gains more from that core than the loading it would overlap (done inline, its normalisation then runs in the
    main process). From 8 cores up the step is fast enough for the inline loading to show, and a worker pays.
    """
    cores = process_cores()
    if requested_workers >= 0:
        workers = requested_workers
    elif n_items < 4 * batch_size or n_items < 256:
        workers = 0
    elif device.type == "cpu":
        workers = cores // 8
    else:
        workers = min(8, cores - 1)
    workers = max(0, min(workers, cores - 1))
    return ThreadPlan(cores=cores, workers=workers, train_threads=max(1, cores - workers), eval_threads=cores,
                      normalize_in_workers=device.type == "cpu" and workers > 0)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n` for the block (restored after: it is process-wide)."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------------------
# Memory format on CPU


def probe_channels_last(model: nn.Module, size: int, batch: int = 8, repeats: int = 1) -> tuple[bool, dict[str, Any]]:
    """Whether `model` trains faster in channels_last than in contiguous memory format on this CPU, measured.

    oneDNN's convolutions usually prefer channels_last (EfficientNet-Lite0 at 128 px: 1.8x per step on one core),
    but not for every architecture, size and CPU, so the choice is measured once per model and run: a few forward +
    backward passes of a copy of the model on a fixed random batch, the two formats alternating (one untimed warm-up
    pass each, then `repeats` timed ones; the fastest of each compared). The model, its gradients and every RNG are
    left as they were. Models without 2-D convolutions (ViTs) do not care and stay contiguous. Returns (choice, the
    timings behind it) for the run's record.
    """
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False, {"reason": "no 2-D convolutions"}
    probe = copy.deepcopy(model).cpu().train()
    for p in probe.parameters():
        p.requires_grad_(True)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    best = {"channels_last": math.inf, "contiguous": math.inf}
    formats = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
    with torch.random.fork_rng(devices=[]):  # dropout / drop-path draws must not move the training RNG
        for i in range(repeats + 1):
            for name in (("channels_last", "contiguous") if i % 2 == 0 else ("contiguous", "channels_last")):
                probe.to(memory_format=formats[name])
                xi = x.contiguous(memory_format=formats[name])
                start = time.perf_counter()
                out = probe(xi)
                (out.float().sum() if isinstance(out, torch.Tensor) else sum(o.float().sum() for o in out)).backward()
                seconds = time.perf_counter() - start
                probe.zero_grad(set_to_none=True)
                if i > 0:  # the first round warms up the allocator and oneDNN's kernel choice
                    best[name] = min(best[name], seconds)
    choice = best["channels_last"] < best["contiguous"]
    return choice, {"channels_last_s": round(best["channels_last"], 4), "contiguous_s": round(best["contiguous"], 4),
                    "probe_batch": batch, "probe_size": size, "threads": torch.get_num_threads()}
