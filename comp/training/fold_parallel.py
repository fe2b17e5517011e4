"""`--fold-parallel`: under torchrun, each process trains its own share of the folds, alone, on its own device.

Folds are independent work, so unlike DDP no gradients are exchanged and no process group is needed: process r of
N takes every N-th requested fold starting at the r-th, on GPU LOCAL_RANK (or the CPU), and runs exactly what a
single process would for those folds. Seeds come from (seed, fold, epoch) with rank 0, as in a one-process run, so
the artifacts equal a sequential `--fold all` run's. Several machines join the same way as DDP does (torchrun's
rendezvous flags and a workspace every node sees at the same path): the global RANK and WORLD_SIZE split the folds.
With `--budget` the processes join a gloo group once, only so rank 0's plan reaches them all.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from comp.training.runtime import Dist


def fold_share(device: torch.device, folds: list[int]) -> tuple[Dist, list[int]]:
    """This process's Dist (a one-process run) and its folds: every WORLD_SIZE-th of `folds` from RANK."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    return Dist(0, 1, device), folds[rank::world]


def join_plan_group() -> None:
    """A CPU (gloo) process group over the torchrun processes, for sharing a --budget plan; no-op alone."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
