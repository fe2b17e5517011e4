"""Training input pipeline, one epoch at 224 px from real JPEGs: comp's uint8 cache + batched augmentation against
torchvision's ImageFolder + PIL with the same augmentations (RandomResizedCrop 224, horizontal flip, float
conversion, normalisation), the same batch size and the same number of loader workers.

    python -m bench pipeline

The harness's cache is built once outside the timed epochs (its build time is reported beside the ratio); both
pipelines then run `EPOCHS` epochs, alternating, each through a fresh loader (as training makes one per epoch), and
the fastest epoch of each counts. Besides wall-clock images/s, the CPU-seconds per image of the main process plus
its loader workers are reported: on a shared box that figure moves much less with other people's load.
"""

from __future__ import annotations

import gc
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torchvision import datasets
from torchvision import transforms as tv_transforms

from bench.common import SHARED, Result, bench_device, one_thread, sync, temp_workspace
from comp.core.workspace import Workspace
from comp.modeling.recipe import Recipe
from comp.vision import augment, images

TARGET_ITEMS = 2000  # hymenoptera's ~400 JPEGs repeated to about this many
BATCH = 64
WORKERS = 2
EPOCHS = 3
DATA_CONFIG = {  # timm's data config of a typical ImageNet model (resnet50.a1_in1k)
    "input_size": (3, 224, 224), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
    "interpolation": "bicubic", "crop_pct": 0.875,
}
RECIPE = Recipe(scale_min=0.08, hflip=0.5)  # the baseline's augmentations, nothing more (224 px: DATA_CONFIG)


def _image_folder(root: Path) -> list[Path]:
    """Symlink every hymenoptera JPEG into root/<class>/ often enough to reach TARGET_ITEMS; returns the links."""
    source = SHARED / "data" / "hymenoptera"
    jpegs = sorted(p for p in source.glob("*/*/*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not jpegs:
        raise FileNotFoundError(f"no JPEGs under {source}; set $COMP_SHARED to the shared folder")
    links = []
    for copy in range(max(1, round(TARGET_ITEMS / len(jpegs)))):
        for p in jpegs:
            link = root / p.parent.name / f"{copy}_{p.parent.parent.name}_{p.name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(p)
            links.append(link)
    return sorted(links)


def _cpu_seconds() -> float:
    # This process plus its finished children (loader workers count once joined), so the figure is the CPU work an
    # epoch costs, which other jobs on a shared box disturb far less than the wall clock.
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _epoch(make_loader: Callable[[], torch.utils.data.DataLoader], on_batch: Callable[[torch.Tensor], object],
           device: str) -> tuple[float, float]:
    """Wall and CPU seconds of one epoch through a fresh loader (as training makes one per epoch), workers included,
    up to normalised float batches on `device`."""
    cpu, wall = _cpu_seconds(), time.perf_counter()
    loader = make_loader()
    for batch, _ in loader:
        on_batch(batch)
    sync(device)
    del loader  # shuts the workers down and joins them, so their CPU time is counted
    gc.collect()
    return time.perf_counter() - wall, _cpu_seconds() - cpu


def run() -> list[Result]:
    torch.manual_seed(0)
    # The loader workers own the cores; the main process only hands batches on (and, on a CPU-only box, normalises
    # the harness's). More intra-op threads there would spin-wait against the workers for the same two cores.
    with one_thread():
        return _run()


def _run() -> list[Result]:
    device = bench_device()
    with temp_workspace() as root:
        links = _image_folder(root / "images")
        ws = Workspace(root)
        baseline_set = datasets.ImageFolder(str(root / "images"), transform=tv_transforms.Compose([
            tv_transforms.RandomResizedCrop(224), tv_transforms.RandomHorizontalFlip(), tv_transforms.ToTensor(),
            tv_transforms.Normalize(DATA_CONFIG["mean"], DATA_CONFIG["std"]),
        ]))

        def baseline() -> torch.utils.data.DataLoader:
            return torch.utils.data.DataLoader(baseline_set, batch_size=BATCH, shuffle=True, num_workers=WORKERS,
                                               pin_memory=device == "cuda")

        start = time.perf_counter()
        size = images.cache_size(224, DATA_CONFIG["crop_pct"])
        pixels = images.cached_images(ws, [str(p) for p in links], size, workers=WORKERS)
        build = time.perf_counter() - start
        labels = [baseline_set.class_to_idx[p.parent.name] for p in links]
        harness_set = images.ArrayDataset(pixels, labels, augment.train_transform(DATA_CONFIG, RECIPE))
        batch_augment = augment.GpuBatchAugment(DATA_CONFIG, RECIPE, device)

        def harness() -> torch.utils.data.DataLoader:
            return images.make_loader(harness_set, BATCH, shuffle=True, workers=WORKERS, device=device)

        def to_device(images: torch.Tensor) -> torch.Tensor:
            return images.to(device, non_blocking=True)

        harness_runs, baseline_runs = [], []
        for _ in range(EPOCHS):  # alternate so load from other processes on the box hits both alike
            baseline_runs.append(_epoch(baseline, to_device, device))
            harness_runs.append(_epoch(harness, lambda batch: batch_augment(to_device(batch)), device))
        n = len(links)
        setting = (f"{n} JPEGs at 224 px, batch {BATCH}, {WORKERS} workers + 1 main thread, best of {EPOCHS} epochs, "
                   f"float batches on {device}")
        return [
            Result.from_rates(
                "pipeline_epoch", n / min(w for w, _ in harness_runs), n / min(w for w, _ in baseline_runs),
                "harness vs ImageFolder+PIL",
                detail=f"{setting}; cache built once in {build:.1f} s ({n / build:.0f} img/s, {size} px), not timed",
            ),
            Result.from_rates(
                "pipeline_cpu", n / min(c for _, c in harness_runs), n / min(c for _, c in baseline_runs),
                "harness vs ImageFolder+PIL, per CPU-second", unit="img/CPU-s",
                detail=f"{setting}; CPU time of the main process and its loader workers",
            ),
        ]
