"""Pixels to tensors: decoding any image mode to RGB, the uint8 cache, datasets and loaders (augmentation and
normalisation are in augment.py).

Labels and folds live elsewhere (layouts.py, folds.py); this module only turns files into arrays.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import random
import shutil
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from comp.core import atomic
from comp.core.errors import CompError
from comp.core.progress import progress_bar
from comp.core.workspace import Workspace

if TYPE_CHECKING:
    import torch
    import torch.utils.data

# torch and torchvision are imported inside the functions that use them: `comp init` and `comp verify` import this
# module for `open_rgb` and IMAGE_EXTENSIONS and should not wait seconds for torch to load.

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Truncated files must fail loudly in verify, not be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def open_rgb(path: str | os.PathLike, truncated_ok: bool = False) -> Image.Image:
    """Decode an image fully and return it as 8-bit RGB, whatever its mode.

    Grayscale, palette (with or without transparency), RGBA/LA (composited on white, as a viewer shows them), CMYK
    and 16/32-bit integer or float images all come back as RGB. Raises OSError/ValueError on unreadable files.
    `truncated_ok`: a file that ends early decodes as far as it goes (the rest grey), for test images the user let
    through with `comp verify --allow-broken-test`.
    """
    with warnings.catch_warnings(), _truncated(truncated_ok):
        warnings.simplefilter("ignore")  # PIL warns on palette+transparency; we handle it below
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)


@contextlib.contextmanager
def _truncated(allowed: bool) -> Iterator[None]:
    """PIL's switch for decoding truncated files, on only inside the block (it is process-wide)."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allowed
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's convert("RGB") clips high-bit-depth values at 255; rescale to the real range instead.
        arr = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        else:
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


# ---------------------------------------------------------------------------------------------------------------
# The uint8 image cache
#
# Decoding a JPEG costs ~100x more than cropping an array, and a training run decodes every image every epoch. So each
# image set is decoded once into one (N, S, S, 3) uint8 .npy under .comp/cache/images/ and memory-mapped afterwards.
#
# Resize policy: the shorter side goes to S = cache_size(img_size, crop_pct) = round(img_size / crop_pct) and the
# centre square is kept. Evaluation is then exactly timm's policy (resize shorter side to img_size / crop_pct, centre
# crop img_size) with the resize already done, and training's random-resized-crop still has the whole central square
# plus the crop_pct margin to sample from. What is lost: the ends of the longer side of non-square images (the same
# pixels timm's eval transform drops) and detail finer than S (training crops at most img_size of it anyway).

CACHE_VERSION = 1  # bump when the decode/resize policy changes: old caches then miss instead of being reused
_SMALL_SET = 64  # below this many images a process pool costs more than it saves


def cache_size(img_size: int, crop_pct: float) -> int:
    """Side of the cached square for a model that evaluates at `img_size` with timm's `crop_pct` (e.g. 224, 0.875 ->
    256). Never below `img_size`."""
    if not 0 < crop_pct <= 1:
        raise CompError(f"crop_pct = {crop_pct} must be in (0, 1]; check the model's data config or the recipe")
    return max(int(img_size), int(round(img_size / crop_pct)))


def _decode(path: str | os.PathLike, size: int, truncated_ok: bool = False) -> tuple[np.ndarray, int]:
    """One image as the cache stores it, and its own shorter side: RGB, shorter side resized to `size` (bicubic,
    antialiased), centre square, as a (size, size, 3) uint8 array. Large JPEGs are decoded at a reduced DCT scale
    (PIL `draft`) that keeps at least twice the target resolution, which makes decoding photos several times faster
    at no visible cost."""
    with warnings.catch_warnings(), _truncated(truncated_ok):
        warnings.simplefilter("ignore")
        with Image.open(path) as im:
            native = min(im.size)
            if im.format == "JPEG":
                im.draft(im.mode, (2 * size, 2 * size))
            im.load()
            rgb = to_rgb(im)
    square = ImageOps.fit(rgb, (size, size), Image.Resampling.BICUBIC)
    return np.asarray(square, dtype=np.uint8), native


def _decode_or_error(args: tuple[str, int, bool]) -> tuple[np.ndarray, int] | str:
    # Runs in pool workers: return the error text instead of raising so the parent can name the file in a CompError.
    path, size, truncated_ok = args
    try:
        return _decode(path, size, truncated_ok)
    except Exception as err:  # any decoder failure is the file's fault, reported with its path
        return f"{type(err).__name__}: {err}"


def cache_key(paths: Sequence[str | os.PathLike], size: int) -> str:
    """`<set>-<content>`: a sha256 prefix of the ordered paths, the side and the cache policy version, then one of
    the files' sizes and mtimes. A changed file changes only the second part, so its set's old cache can be found
    and removed."""
    names = hashlib.sha256(f"comp-image-cache v{CACHE_VERSION} size={size}\n".encode())
    stats = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as err:
            raise CompError(
                f"image {p} cannot be read ({err.strerror}); run `comp verify` to list missing files"
            ) from err
        names.update(f"{os.fspath(p)}\n".encode())
        stats.update(f"{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return f"{names.hexdigest()[:24]}-{stats.hexdigest()[:24]}"


def cached_images(
    ws: Workspace, paths: Sequence[str | os.PathLike], size: int, *, workers: int | None = None,
    truncated_ok: Collection[str] = (),
) -> np.ndarray:
    """The images at `paths` as one read-only (N, size, size, 3) uint8 array, memory-mapped from the workspace cache.

    Built on first use (see `_decode` for the resize policy) with `workers` decoding processes (default: all
    cores; 0 decodes in this process), then reused until any file's size or mtime, the order of `paths` or `size`
    changes. The file is written atomically, so an interrupted build leaves no cache behind. Use
    `cache_size(img_size, crop_pct)` for `size`. Paths in `truncated_ok` (truncated test images the user let
    through) decode as far as they go.
    """
    if size < 1:
        raise CompError(f"image cache size {size} must be a positive number of pixels")
    if len(paths) == 0:
        return np.empty((0, size, size, 3), np.uint8)  # numpy cannot memory-map an empty array
    key = cache_key(paths, size)
    target = ws.image_cache(key)
    if target.exists():
        try:
            arr = np.load(target, mmap_mode="r")
            if arr.shape == (len(paths), size, size, 3) and arr.dtype == np.uint8:
                return arr
        except (OSError, ValueError):
            pass  # unreadable (e.g. a disk error mid-copy): rebuild it below
    _build_cache(target, [os.fspath(p) for p in paths], size, workers, {os.fspath(p) for p in truncated_ok})
    for stale in target.parent.glob(f"{key.split('-')[0]}-*.npy"):
        if stale != target:  # the same image set before a file changed: never read again
            stale.unlink(missing_ok=True)
    return np.load(target, mmap_mode="r")


def _build_cache(target: Path, paths: list[str], size: int, workers: int | None, truncated_ok: set[str]) -> None:
    n = len(paths)
    nbytes = n * size * size * 3
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if nbytes > free:
        raise CompError(
            f"the image cache needs {nbytes / 2**30:.1f} GiB but {target.parent} has {free / 2**30:.1f} GiB free; "
            "free space, or use a smaller img_size"
        )
    if workers is None:
        workers = available_cores()
    use_pool = workers > 1 and n >= _SMALL_SET
    with atomic.atomic_path(target) as tmp:
        # open_memmap writes straight to disk, so a set larger than RAM still builds.
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
        jobs = [(p, size, p in truncated_ok) for p in paths]
        if use_pool:
            # fork: workers inherit the imported modules instead of re-importing torch (seconds each). The pool
            # starts (map submits every job) before the progress bar's thread exists, so no lock is forked held.
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                natives = _fill(out, paths, pool.map(_decode_or_error, jobs, chunksize=8), size)
        else:
            natives = _fill(out, paths, map(_decode_or_error, jobs), size)
        out.flush()
        del out
    typical = int(np.median(natives))
    if 2 * typical <= size:
        warnings.warn(
            f"these {n} images are typically {typical} px on their shorter side; the cache stores them upsampled "
            f"{size / typical:.0f}x to {size} px ({nbytes / 2**30:.2f} GiB). A smaller img_size in the recipe (e.g. "
            f"`--set img_size={max(32, 2 * typical)}`) would train much faster on images this small.",
            stacklevel=3,
        )


def _fill(out: np.ndarray, paths: list[str], results: Iterable[tuple[np.ndarray, int] | str], size: int) -> list[int]:
    """Write decoded squares into `out` in order; returns each image's native shorter side."""
    natives = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with progress_bar(*columns) as progress:
        task = progress.add_task(f"caching {len(paths)} images at {size}px", total=len(paths))
        for i, result in enumerate(results):
            if isinstance(result, str):
                raise CompError(
                    f"cannot decode image {paths[i]}: {result}; run `comp verify` to find every unreadable file, "
                    "then fix or remove it"
                )
            out[i], native = result
            natives.append(native)
            progress.advance(task)
    return natives


def available_cores() -> int:
    """The CPU cores this process may really use: its affinity mask (taskset, Slurm, Docker --cpuset-cpus), capped by
    a cgroup CPU quota (Docker --cpus, Kubernetes limits), which `os.cpu_count()` and torch's default both ignore.
    Never below 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, int(quota)))  # a 1.5-core quota gives 1: a second busy thread would be throttled
    return max(1, cores)


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """Cores allowed by the cgroup CPU quota (v2 `cpu.max`, else v1 `cpu.cfs_quota_us / cpu.cfs_period_us`); None
    when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# Dataset and loader


class ArrayDataset:
    """A map-style torch dataset of images from an (N, H, W, 3) uint8 array (usually `cached_images`) with optional
    integer labels. (Not a `torch.utils.data.Dataset` subclass only so that importing this module stays torch-free;
    DataLoader, Subset and the samplers need nothing but `len` and indexing.)

    Item i is `(transform(CHW uint8 tensor), label)`, label -1 when `labels` is None. The tensor is a channels-last
    view of the HWC row, which torchvision's uint8 resize kernels read without a copy.
    """

    def __init__(self, images: np.ndarray, labels: Sequence[int] | np.ndarray | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise CompError(f"ArrayDataset wants (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
        if labels is not None and len(labels) != len(images):
            raise CompError(f"ArrayDataset: {len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import torch

        x = torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1)
        if self.transform is not None:
            x = self.transform(x)
        if self.labels is None:
            return x, -1
        return x, (int(self.labels[i]) if self.labels.ndim == 1 else self.labels[i])  # a multi-hot row as it is

    def __getstate__(self) -> dict:
        # A memmap pickles as its full contents; send spawned loader workers the file name to re-map instead.
        state = dict(self.__dict__)
        if isinstance(self.images, np.memmap) and self.images.filename:
            state["images"] = ("memmap", self.images.filename)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["images"], tuple):
            state["images"] = np.load(state["images"][1], mmap_mode="r")
        self.__dict__.update(state)


def default_workers(n_items: int, batch_size: int) -> int:
    """Loader processes: none for tiny sets (start-up would dominate), else one per core up to 8."""
    if n_items < 4 * batch_size or n_items < 256:
        return 0
    return min(8, available_cores())


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    sampler: torch.utils.data.Sampler | None = None,
    workers: int | None = None,
    device: torch.device | str = "cpu",
    drop_last: bool = False,
    seed: int | None = None,
    collate_fn: Callable | None = None,
) -> torch.utils.data.DataLoader:
    """A DataLoader with the settings that matter for speed: pinned memory on CUDA, persistent workers (one torch
    thread each), prefetch.

    `workers=None` picks `default_workers`. `seed` makes the shuffle order and each worker's augmentation RNG
    reproducible. Pass either `shuffle=True` or a `sampler`, not both. `collate_fn` defaults to
    `collate_channels_last` (uint8 batches). For training, `epoch_loader` adds per-item seeding on top.
    """
    import torch
    import torch.utils.data

    if sampler is not None and shuffle:
        raise ValueError("make_loader: pass shuffle=False with a sampler")
    if workers is None:
        workers = default_workers(len(dataset), batch_size)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    extra = {"persistent_workers": True, "prefetch_factor": 4, "worker_init_fn": _one_thread} if workers > 0 else {}
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=workers,
        collate_fn=collate_fn or collate_channels_last, pin_memory=torch.device(device).type == "cuda",
        drop_last=drop_last, generator=generator, **extra,
    )


def _one_thread(worker_id: int) -> None:
    # A loader worker is one of the processes the thread plan counts as one core; torch's own default would give
    # it as many intra-op threads as the machine has cores (DataLoader lowers it too; said here so it stays true).
    import torch

    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------------------
# One loader for all epochs, seeded per item
#
# A loader whose workers persist across epochs (no process start-up each epoch) cannot take its augmentation seeds
# from the worker: which worker makes which item, and how far each worker's RNG has run, depends on the epochs before
# and on the worker count. So every item carries its own seed, drawn from (seed, epoch, index): an epoch's batches
# are then the same from a new loader or a reused one, with 0, 1 or 8 workers. That is what lets a killed run resume
# from its last epoch and end equal to an uninterrupted one.


class SeededSampler:
    """Wraps a sampler over a dataset of `n` items (e.g. a DistributedSampler) so it yields `(index, item_seed)`;
    `set_epoch(e)` is passed on, and the item seeds are drawn from (seed, epoch) for every index at once."""

    def __init__(self, sampler: Iterable[int], n: int, seed: int) -> None:
        self.sampler, self.n, self.seed, self.epoch = sampler, int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        seeds = np.random.default_rng([self.seed, self.epoch]).integers(0, 2**62, size=self.n, dtype=np.int64)
        for i in self.sampler:
            yield int(i), int(seeds[i])


class SeededDataset:
    """Item `(i, item_seed)` is `dataset[i]` made with torch's CPU RNG, `random` and numpy seeded from `item_seed`
    (what train_transform draws from). In the main process (no workers) the RNG states are restored afterwards, so
    the training step's own draws (mixup, random erasing) do not depend on the loader."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        import torch.utils.data

        i, seed = key
        if torch.utils.data.get_worker_info() is not None:
            _seed_item(seed)
            return self.dataset[i]
        saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
        try:
            _seed_item(seed)
            return self.dataset[i]
        finally:
            torch.set_rng_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])


def _seed_item(seed: int) -> None:
    import torch

    torch.default_generator.manual_seed(seed)  # the CPU generator only: torch.manual_seed would also seed every GPU
    random.seed(seed)
    np.random.seed(seed % 2**32)


def epoch_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    *,
    sampler: torch.utils.data.Sampler,
    seed: int,
    workers: int,
    device: torch.device | str = "cpu",
    drop_last: bool = False,
    collate_fn: Callable | None = None,
) -> torch.utils.data.DataLoader:
    """The loader for every epoch of one training run: call `loader.sampler.set_epoch(epoch)` before each epoch.

    Its workers start once and persist; `sampler` (a DistributedSampler, also with one process) gives the order, and
    each item's augmentation is seeded from (seed, epoch, index) (see `SeededSampler`), so an epoch's batches do not
    depend on the epochs before it, the worker count, or whether the loader is new.
    """
    return make_loader(
        SeededDataset(dataset), batch_size, shuffle=False, sampler=SeededSampler(sampler, len(dataset), seed),
        workers=workers, device=device, drop_last=drop_last, seed=seed, collate_fn=collate_fn,
    )


def collate_channels_last(
    batch: list[tuple[torch.Tensor, int]], scale: torch.Tensor | None = None, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (CHW uint8, label) items into a channels-last uint8 batch and an int64 label tensor.

    The re-layout models want on the device costs least here: in the loader worker, on uint8, in one copy. With
    `scale` and `bias` (each (3,), broadcast over the channels-last rows) the batch comes out float32 as
    `x * scale + bias`, normalised image by image while it is still in cache (see augment.NormalizingCollate).
    """
    import torch
    import torch.utils.data

    first = batch[0][0]
    if first.dim() != 3:  # not an image item: leave it to torch's own rules
        return torch.utils.data.default_collate(batch)
    c, h, w = first.shape
    dtype = first.dtype if scale is None else torch.float32
    if torch.utils.data.get_worker_info() is not None:
        # Allocated in shared memory, where the parent maps it, so the batch is not copied again on its way there
        # (what torch's default_collate does too).
        storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(len(batch) * h * w * c, device="cpu")
        out = torch.empty(0, dtype=dtype).new(storage).view(len(batch), h, w, c)
    else:
        out = torch.empty((len(batch), h, w, c), dtype=dtype)
    for i, (image, _) in enumerate(batch):
        row = out[i]
        row.copy_(image.permute(1, 2, 0))
        if scale is not None:
            torch.addcmul(bias, row, scale, out=row)  # one fused in-place pass while the row is in cache
    labels = torch.as_tensor(np.asarray([label for _, label in batch]), dtype=torch.int64)  # (B,), or (B, C) multi-hot
    return out.permute(0, 3, 1, 2), labels
