"""comp.vision.images and comp.vision.augment: the uint8 image cache, datasets, loaders and transforms."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.modeling.recipe import Recipe
from comp.vision import augment, images
from comp.vision.tta import eval_view

DATA_CONFIG = {
    "input_size": (3, 16, 16), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
    "interpolation": "bicubic", "crop_pct": 0.8,
}


def _save(path: Path, arr: np.ndarray, mode: str | None = None, **kw) -> str:
    im = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    im.save(path, **kw)
    return str(path)


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _cache_files(ws: Workspace) -> list[Path]:
    d = ws.cache_dir / "images"
    return sorted(d.iterdir()) if d.exists() else []


def test_cache_size_follows_crop_pct():
    assert images.cache_size(224, 0.875) == 256
    assert images.cache_size(224, 1.0) == 224
    with pytest.raises(CompError, match="crop_pct"):
        images.cache_size(224, 0)


def test_cache_round_trip_equals_direct_decode(workspace):
    rng = np.random.default_rng(0)
    square = _save(workspace / "sq.png", _noise(rng, 40, 40))
    yy, xx = np.mgrid[0:30, 0:50]  # smooth, so the two resamplers' sub-pixel differences stay small
    wide = _save(workspace / "wide.png", np.stack([xx * 5, yy * 8, (xx + yy) * 3], -1).astype(np.uint8))
    ws = Workspace(workspace)
    arr = images.cached_images(ws, [square, wide], 24, workers=0)
    assert isinstance(arr, np.memmap) and arr.shape == (2, 24, 24, 3) and arr.dtype == np.uint8
    assert not arr.flags.writeable
    # square source: exactly PIL's bicubic resize of the decoded image
    expected = images.open_rgb(square).resize((24, 24), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(arr[0], np.asarray(expected))
    # non-square: the centre square, as torchvision's Resize(shorter side) + CenterCrop computes it independently
    bicubic = v2.InterpolationMode.BICUBIC
    reference = np.asarray(v2.Compose([v2.Resize(24, bicubic), v2.CenterCrop(24)])(images.open_rgb(wide)))
    assert np.abs(arr[1].astype(int) - reference.astype(int)).mean() < 2
    assert np.abs(arr[1].astype(int) - np.asarray(images.open_rgb(wide).resize((24, 24))).astype(int)).mean() > 10


def test_large_jpeg_reduced_decode_stays_close_to_a_full_decode(workspace):
    yy, xx = np.mgrid[0:240, 0:320]
    path = _save(workspace / "big.jpg", np.stack([xx % 256, yy, (xx + yy) % 256], -1).astype(np.uint8), quality=95)
    # the cache's own decode: at 1/4 scale by the JPEG decoder, then resized
    fast = images.cached_images(Workspace(workspace), [path], 24, workers=0)[0]
    full = np.asarray(ImageOps.fit(images.open_rgb(path), (24, 24), Image.Resampling.BICUBIC))
    assert fast.shape == (24, 24, 3) and np.abs(fast.astype(int) - full.astype(int)).mean() < 3


def test_cache_reused_then_rebuilt_when_a_file_changes(workspace, monkeypatch):
    rng = np.random.default_rng(1)
    paths = [_save(workspace / f"{i}.png", _noise(rng, 20, 20)) for i in range(3)]
    ws = Workspace(workspace)
    first = np.array(images.cached_images(ws, paths, 16, workers=0))
    assert len(_cache_files(ws)) == 1

    def no_decode(*_args):
        raise AssertionError("the cache should have been reused")

    with monkeypatch.context() as m:
        m.setattr(images, "_decode", no_decode)  # the decoder cached_images calls
        np.testing.assert_array_equal(images.cached_images(ws, paths, 16, workers=0), first)

    _save(Path(paths[1]), np.zeros((20, 20, 3), np.uint8))  # same name, new content
    rebuilt = images.cached_images(ws, paths, 16, workers=0)
    assert len(_cache_files(ws)) == 1  # the outdated cache of this set was removed
    other_set = images.cached_images(ws, paths[:2], 16, workers=0)
    assert len(_cache_files(ws)) == 2 and len(other_set) == 2  # ...but not another set's
    np.testing.assert_array_equal(rebuilt[0], first[0])
    assert rebuilt[1].max() == 0 and first[1].max() > 0


def test_upsampling_small_images_warns(workspace):
    paths = [_save(workspace / f"{i}.png", np.zeros((8, 10, 3), np.uint8)) for i in range(2)]
    with pytest.warns(UserWarning, match="typically 8 px.*upsampled 4x.*img_size"):
        images.cached_images(Workspace(workspace), paths, 32, workers=0)


def test_odd_modes_decode_to_rgb(workspace):
    rng = np.random.default_rng(2)
    rgba = np.zeros((20, 20, 4), np.uint8)  # fully transparent: composited on white
    palette = Image.fromarray(_noise(rng, 20, 20)).convert("P")
    palette.info["transparency"] = 0
    palette.save(workspace / "p.gif")
    paths = [
        _save(workspace / "gray.png", _noise(rng, 20, 20), "L"),
        str(workspace / "rgba.png"),
        str(workspace / "p.gif"),
        _save(workspace / "cmyk.jpg", _noise(rng, 20, 20), "CMYK"),
        str(workspace / "i16.png"),
    ]
    Image.fromarray(rgba, "RGBA").save(paths[1])
    Image.fromarray(np.full((20, 20), 65535, np.uint16)).save(paths[4])
    arr = images.cached_images(Workspace(workspace), paths, 8, workers=0)
    assert arr.shape == (5, 8, 8, 3)
    assert (arr[0, ..., 0] == arr[0, ..., 1]).all()  # grey stays grey
    assert (arr[1] == 255).all() and (arr[4] == 255).all()


@pytest.mark.slow  # a decoding process pool
def test_parallel_build_equals_serial_build(workspace):
    rng = np.random.default_rng(3)
    paths = [_save(workspace / f"{i}.jpg", _noise(rng, 24, 18)) for i in range(images._SMALL_SET + 6)]
    serial = np.array(images.cached_images(Workspace(workspace / "a"), paths, 12, workers=0))
    parallel = images.cached_images(Workspace(workspace / "b"), paths, 12, workers=2)
    np.testing.assert_array_equal(parallel, serial)


def test_unreadable_image_is_a_comp_error_and_leaves_no_cache(workspace):
    good = _save(workspace / "good.png", np.zeros((8, 8, 3), np.uint8))
    bad = workspace / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ws = Workspace(workspace)
    with pytest.raises(CompError, match="bad.jpg.*comp verify"):
        images.cached_images(ws, [good, str(bad)], 8, workers=0)
    with pytest.raises(CompError, match="missing.png"):
        images.cached_images(ws, [str(workspace / "missing.png")], 8, workers=0)
    assert _cache_files(ws) == []
    assert images.cached_images(ws, [], 8).shape == (0, 8, 8, 3)


def test_dataset_loader_and_batch_ops_shapes(workspace):
    pixels = np.random.default_rng(4).integers(0, 256, size=(10, 20, 20, 3), dtype=np.uint8)
    recipe = Recipe(hflip=0.5, scale_min=0.5, random_erasing=0.5)
    train = images.ArrayDataset(pixels, list(range(10)), augment.train_transform(DATA_CONFIG, recipe))
    x, y = train[3]
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and y == 3
    loader = images.make_loader(train, 4, shuffle=True, device="cpu", drop_last=True)
    assert loader.num_workers == 0  # tiny set: no worker processes
    batches = list(loader)
    assert len(batches) == 2
    xb, yb = batches[0]
    assert xb.shape == (4, 3, 16, 16) and xb.dtype == torch.uint8 and yb.dtype == torch.int64
    out = augment.GpuBatchAugment(DATA_CONFIG, recipe)(xb)
    assert out.dtype == torch.float32 and out.shape == (4, 3, 16, 16)
    assert out.is_contiguous(memory_format=torch.channels_last) and torch.isfinite(out).all()

    test = images.ArrayDataset(eval_view(pixels, DATA_CONFIG, "none"), None, None)
    xt, yt = test[0]
    assert xt.shape == (3, 16, 16) and yt == -1
    # the 20 px cache is exactly cache_size(16, 0.8): eval is a pure centre crop of it
    assert torch.equal(xt, torch.from_numpy(pixels[0, 2:18, 2:18]).permute(2, 0, 1))


def test_batch_normalize_uses_the_models_mean_and_std():
    mean = torch.tensor(DATA_CONFIG["mean"]).view(1, 3, 1, 1)
    batch = torch.stack([torch.zeros(3, 4, 4, dtype=torch.uint8), torch.full((3, 4, 4), 255, dtype=torch.uint8)])
    out = augment.batch_normalize(batch, DATA_CONFIG)
    std = torch.tensor(DATA_CONFIG["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(out[0:1], (-mean / std).expand(1, 3, 4, 4))
    torch.testing.assert_close(out[1:2], ((1 - mean) / std).expand(1, 3, 4, 4))


def test_flips_follow_their_probabilities():
    # scale_min=1 on a square image: the crop is the whole image, so only the flips change it
    image = torch.arange(3 * 4 * 4, dtype=torch.uint8).view(3, 4, 4)
    config = dict(DATA_CONFIG, input_size=(3, 4, 4))  # the output size is the data config's
    keep = augment.train_transform(config, Recipe(scale_min=1.0, hflip=0.0))
    both = augment.train_transform(config, Recipe(scale_min=1.0, hflip=1.0, vflip=1.0))
    assert torch.equal(keep(image), image)
    assert torch.equal(both(image), image.flip(1, 2))
    torch.manual_seed(0)
    half = augment.train_transform(config, Recipe(scale_min=1.0, hflip=0.5))
    flipped = sum(torch.equal(half(image), image.flip(2)) for _ in range(200))
    assert 70 < flipped < 130


def test_batch_augment_erases_only_when_asked():
    batch = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    plain = augment.GpuBatchAugment(DATA_CONFIG, Recipe(random_erasing=0.0))
    torch.testing.assert_close(plain(batch), augment.batch_normalize(batch, DATA_CONFIG))
    erased = augment.GpuBatchAugment(DATA_CONFIG, Recipe(random_erasing=1.0))(batch)
    changed = (erased != augment.batch_normalize(batch, DATA_CONFIG)).flatten(1).any(1)
    assert changed.all()


def test_transforms_are_deterministic_under_a_seed():
    recipe = Recipe(
        scale_min=0.3, rand_augment="rand-m9-mstd0.5", color_jitter=0.4, affine_degrees=10.0,
        affine_translate=0.1, hflip=0.5, vflip=0.5, random_erasing=1.0,
    )
    transform = augment.train_transform(DATA_CONFIG, recipe)
    batch_augment = augment.GpuBatchAugment(DATA_CONFIG, recipe)
    image = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (24, 24, 3), dtype=np.uint8)).permute(2, 0, 1)

    def sample(seed: int) -> torch.Tensor:
        random.seed(seed)  # timm's RandAugment draws from `random` and numpy
        np.random.seed(seed)
        torch.manual_seed(seed)
        return batch_augment(torch.stack([transform(image) for _ in range(4)]))

    assert torch.equal(sample(0), sample(0))
    assert not torch.equal(sample(0), sample(1))


def test_bad_rand_augment_string_is_a_comp_error():
    with pytest.raises(CompError, match="rand_augment"):
        augment.train_transform(DATA_CONFIG, Recipe(rand_augment="randaug-strong"))


@pytest.mark.slow  # a DataLoader worker process
def test_loader_order_is_reproducible_and_memmap_pickles_by_name(workspace):
    paths = [_save(workspace / f"{i}.png", np.full((8, 8, 3), i, np.uint8)) for i in range(6)]
    pixels = images.cached_images(Workspace(workspace), paths, 8, workers=0)
    dataset = images.ArrayDataset(pixels, [0, 1, 0, 1, 0, 1])

    def order(seed: int, workers: int = 0) -> list[int]:
        loader = images.make_loader(dataset, 2, shuffle=True, workers=workers, seed=seed)
        batches = list(loader)
        assert all(xb.is_contiguous(memory_format=torch.channels_last) for xb, _ in batches)
        return [int(v) for xb, _ in batches for v in xb[:, 0, 0, 0]]

    assert order(7) == order(7) and sorted(order(7)) == list(range(6))
    assert order(7, workers=1) == order(7)  # a worker process reads the same memmap and keeps the order
    blob = pickle.dumps(dataset)
    assert len(blob) < pixels.nbytes  # sent as a file name, not the pixels
    assert torch.equal(pickle.loads(blob)[5][0], dataset[5][0])


def test_bench_results_are_oriented_and_rendered(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from bench.__main__ import _DATA, render
    from bench.common import Result

    faster = Result.from_seconds("step", 1.0, 4.0, "harness vs loop")  # times: lower is better
    assert faster.ratio == 4.0 and faster.line() == "step: 4.00x (harness vs loop)"
    assert Result.from_rates("epoch", 300.0, 100.0, "x").ratio == 3.0  # rates: higher is better
    machine = {k: "?" for k in ("date", "cpu", "cores", "gpu", "python", "torch", "torchvision")}
    entry = {"machine": machine, "seconds": 2.0, "error": "", "about": "", "results": [faster.__dict__]}
    text = render({"modules": {"step": entry}})
    assert "| step | 1 | 4 | s | **4.00x** | harness vs loop |" in text
    assert _DATA.search(text)  # the raw numbers ride along, so one module can be re-run alone
    short = Result.from_rates("tta", 1.4, 1.0, "vs ttach", goal=1.5)
    assert short.line() == "tta: 1.40x, goal >= 1.50x: NOT met (vs ttach)"
    met = Result.from_rates("pipe", 3.2, 1.0, "vs ImageFolder", goal=3.0)
    text = render({"modules": {"pipe": {**entry, "results": [met.__dict__]}}})
    assert "| **3.20x**, goal >= 3.00x: met | vs ImageFolder |" in text


def test_bench_quality_builds_disjoint_splits_and_reports_the_mean_difference(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from PIL import Image

    from bench.__main__ import render
    from bench.quality import Split, build, native_side

    rows = []
    for c in ("a", "b"):
        for i in range(3):
            p = tmp_path / "src" / c / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (100, 150)).save(p)
            rows.append((p, c))
    data, answers, plain_test = build(Split(rows[1:3] + rows[4:], [rows[0], rows[3]], "test"), tmp_path / "set")
    assert sorted(p.name for p in (data / "test").iterdir()) == ["t00000.png", "t00001.png"]
    assert answers.read_text().splitlines() == ["id,label", "t00000.png,a", "t00001.png,b"]
    assert sorted(str(p.relative_to(plain_test)) for p in plain_test.rglob("*.png")) == ["a/t00000.png", "b/t00001.png"]
    assert len(list((data / "train").rglob("*.png"))) == 4
    assert native_side([p for p, _ in rows]) == 96  # the short side, down to a multiple of 32
    row = {"set": "s", "minutes": 3.0, "n_train": 4, "n_test": 2, "classes": 2, "comp_accuracy": 0.9,
           "comp_seconds": 170.0, "comp_plan": "plan", "plain_accuracy": 0.85, "plain_seconds": 180.0,
           "plain_epochs": 4, "plain_size": 96, "load": "1.0", "note": "n", "extra": {}, "measured": "now"}
    text = render({"modules": {}, "quality": {"rows": [row, {**row, "set": "t", "comp_accuracy": 0.8}]}})
    assert "| s | 4 / 2, 2 (n) | 3 min | 0.900 in 2.8 min | 0.850 in 3.0 min (4 epochs at 96 px) | +5.0 pt |" in text
    assert "comp - plain **+0.00 points** over 2 set(s) where both scored; comp >= plain on 1 of 2." in text
    failed = {**row, "set": "u", "comp_accuracy": None, "comp_plan": "comp train failed: error: too short"}
    text = render({"modules": {}, "quality": {"rows": [row, failed]}})
    assert "| u | 4 / 2, 2 (n) | 3 min | no submission (see the plan column) |" in text
    assert "| comp train failed: error: too short |" in text
    assert "over 1 set(s) where both scored; comp >= plain on 1 of 1; comp made no submission on 1 of 2 (u)." in text
