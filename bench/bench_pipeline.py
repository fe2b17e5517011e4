"""Training input pipeline, one epoch at 224 px from real JPEGs: comp's uint8 cache + batched augmentation against
torchvision's ImageFolder + PIL with the same augmentations (RandomResizedCrop 224, horizontal flip, float
conversion, normalisation), the same batch size and the same number of loader workers.

    python -m bench pipeline

The harness's cache is built once outside the timed epochs (its build time is reported beside the ratio). Each
pipeline has one loader, as its training loop would: the harness's `epoch_loader` (workers started once and kept
across epochs; on a CPU they also normalise, `NormalizingCollate`), the baseline's plain DataLoader (PyTorch's default
restarts its workers every epoch). After one untimed warm-up epoch each, `EPOCHS` epochs run alternating (the order
reversed every round) and the medians count. Besides wall-clock images/s, the CPU-seconds per image of the main
process plus its loader workers (live ones included) are reported: on a shared box that figure moves much less with
other people's load.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torchvision import datasets
from torchvision import transforms as tv_transforms

from bench.common import SHARED, Result, bench_device, one_thread, paired_rounds, sync, temp_workspace
from comp.core.workspace import Workspace
from comp.modeling.recipe import Recipe
from comp.vision import augment, images

TARGET_ITEMS = 2000  # hymenoptera's ~400 JPEGs repeated to about this many
BATCH = 64
WORKERS = 2
EPOCHS = 5
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
        baseline_loader = torch.utils.data.DataLoader(baseline_set, batch_size=BATCH, shuffle=True,
                                                      num_workers=WORKERS, pin_memory=device == "cuda")

        start = time.perf_counter()
        size = images.cache_size(224, DATA_CONFIG["crop_pct"])
        pixels = images.cached_images(ws, [str(p) for p in links], size, workers=WORKERS)
        build = time.perf_counter() - start
        labels = [baseline_set.class_to_idx[p.parent.name] for p in links]
        harness_set = images.ArrayDataset(pixels, labels, augment.train_transform(DATA_CONFIG, RECIPE))
        batch_augment = augment.GpuBatchAugment(DATA_CONFIG, RECIPE, device)
        sampler = torch.utils.data.RandomSampler(harness_set, generator=torch.Generator().manual_seed(0))
        loaders = {"harness": images.epoch_loader(
            harness_set, BATCH, sampler=sampler, seed=0, workers=WORKERS, device=device,
            collate_fn=augment.NormalizingCollate(DATA_CONFIG) if device == "cpu" else None,
        )}
        epochs = iter(range(1000))

        def harness() -> None:
            loader = loaders["harness"]
            loader.sampler.set_epoch(next(epochs))
            for batch, _ in loader:
                batch_augment(batch.to(device, non_blocking=True))  # CPU: already float, passed through
            sync(device)

        def baseline() -> None:
            for batch, _ in baseline_loader:
                batch.to(device, non_blocking=True)
            sync(device)

        harness(), baseline()  # warm-up: the harness's workers start here, once, as in a training run
        times = paired_rounds({"baseline": baseline, "harness": harness}, EPOCHS)
        loaders.clear()  # its workers exit
    n = len(links)
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    where = "in the workers" if device == "cpu" else f"on {device}"
    setting = (f"{n} JPEGs at 224 px, batch {BATCH}, {WORKERS} workers + 1 main thread, median of {EPOCHS} "
               f"alternating epochs, float batches on {device} (normalised {where})")
    return [
        Result.from_rates(
            "pipeline_epoch", n / wall["harness"], n / wall["baseline"], "harness vs ImageFolder+PIL", goal=3.0,
            detail=f"{setting}; cache built once in {build:.1f} s ({n / build:.0f} img/s, {size} px), not timed",
        ),
        Result.from_rates(
            "pipeline_cpu", n / cpu["harness"], n / cpu["baseline"],
            "harness vs ImageFolder+PIL, per CPU-second", unit="img/CPU-s",
            detail=f"{setting}; CPU time of the main process and its loader workers",
        ),
    ]
