"""Training input pipeline, one epoch at 224 px from real JPEGs: comp's uint8 cache + batched augmentation against
torchvision's ImageFolder + PIL with the same augmentations (RandomResizedCrop 224, horizontal flip, float
conversion, normalisation), the same batch size and the same number of loader workers.

    python -m bench pipeline

The harness's cache is built once outside the timed epochs (its build time is reported beside the ratio); both
pipelines then run `EPOCHS` epochs with persistent workers, alternating, and the fastest epoch of each counts.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torchvision import datasets, transforms

from bench.common import SHARED, Result, temp_workspace, timed
from comp import data
from comp.config import Workspace

TARGET_ITEMS = 2000  # hymenoptera's ~400 JPEGs repeated to about this many
BATCH = 64
WORKERS = 2
EPOCHS = 2
DATA_CONFIG = {  # timm's data config of a typical ImageNet model (resnet50.a1_in1k)
    "input_size": (3, 224, 224), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
    "interpolation": "bicubic", "crop_pct": 0.875,
}
RECIPE = SimpleNamespace(img_size=224, scale_min=0.08, hflip=0.5)  # the baseline's augmentations, nothing more


def _image_folder(root: Path) -> list[Path]:
    """Symlink every hymenoptera JPEG into root/<class>/ often enough to reach TARGET_ITEMS; returns the links."""
    source = SHARED / "data" / "hymenoptera"
    jpegs = sorted(p for p in source.glob("*/*/*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not jpegs:
        raise FileNotFoundError(f"no JPEGs under {source}; set $COMP_SHARED to the shared folder")
    links = []
    for copy in range(-(-TARGET_ITEMS // len(jpegs))):
        for p in jpegs:
            link = root / p.parent.name / f"{copy}_{p.parent.parent.name}_{p.name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(p)
            links.append(link)
    return sorted(links)


def _epoch(loader, on_batch=None) -> float:
    def go():
        for images, _ in loader:
            if on_batch is not None:
                on_batch(images)

    return timed(go)


def run() -> list[Result]:
    torch.manual_seed(0)
    with temp_workspace() as root:
        links = _image_folder(root / "images")
        ws = Workspace(root)
        baseline_set = datasets.ImageFolder(str(root / "images"), transform=transforms.Compose([
            transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize(DATA_CONFIG["mean"], DATA_CONFIG["std"]),
        ]))
        baseline = torch.utils.data.DataLoader(
            baseline_set, batch_size=BATCH, shuffle=True, num_workers=WORKERS, persistent_workers=True
        )

        start = time.perf_counter()
        size = data.cache_size(224, DATA_CONFIG["crop_pct"])
        images = data.cached_images(ws, [str(p) for p in links], size, workers=WORKERS)
        build = time.perf_counter() - start
        labels = [baseline_set.class_to_idx[p.parent.name] for p in links]
        harness_set = data.ArrayDataset(images, labels, data.train_transform(DATA_CONFIG, RECIPE))
        harness = data.make_loader(harness_set, BATCH, shuffle=True, workers=WORKERS, device="cpu")
        augment = data.GpuBatchAugment(DATA_CONFIG, RECIPE, "cpu")

        harness_times, baseline_times = [], []
        for _ in range(EPOCHS):  # alternate so load from other processes on the box hits both alike
            baseline_times.append(_epoch(baseline))
            harness_times.append(_epoch(harness, augment))
        n = len(links)
        return [Result.from_rates(
            "pipeline_epoch", n / min(harness_times), n / min(baseline_times), "harness vs ImageFolder+PIL",
            detail=f"{n} JPEGs, batch {BATCH}, {WORKERS} workers, best of {EPOCHS} epochs; "
                   f"cache build {build:.1f} s once ({n / build:.0f} img/s, {size}px)",
        )]
