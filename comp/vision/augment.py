"""Augmentation and normalisation from the model's data config: per-sample uint8 ops for loader workers, batched
float ops for the training device.

The work is split where it is cheapest: per-sample geometry, flips and colour run in loader workers on uint8
tensors (torchvision.transforms.v2; a flip of a 224 px uint8 crop costs microseconds there, and workers run in
parallel even on a CPU-only box); float conversion, normalisation and random erasing run batched on the training
device (`GpuBatchAugment`), so workers ship 4x smaller uint8 batches. On a CPU the training step owns the main
process's cores, so there the workers normalise too (`NormalizingCollate`). Mixup/CutMix belong to the training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from comp.core.errors import CompError
from comp.vision.images import collate_channels_last

if TYPE_CHECKING:
    import torch


class AugmentSettings(Protocol):
    """The recipe fields augmentation reads (comp.modeling.recipe.Recipe has them all; vision sits below modeling,
    so it names the fields instead of importing the class). The output size is not among them: it is the data
    config's input_size, decided once by comp.modeling.models.data_config (recipe img_size included)."""

    scale_min: float  # RandomResizedCrop lower area bound
    hflip: float  # probabilities
    vflip: float
    affine_degrees: float
    affine_translate: float
    color_jitter: float
    rand_augment: str  # timm RandAugment spec; "" = off
    random_erasing: float  # probability (GpuBatchAugment)


def train_transform(data_config: dict, recipe: AugmentSettings) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-sample training augmentation: (3, H, W) uint8 tensor -> (3, S, S) uint8 tensor, S the data config's size.

    Reads the recipe fields scale_min, hflip and vflip (probabilities), rand_augment (timm config string such as
    "rand-m9-mstd0.5", "" for none), color_jitter, affine_degrees, affine_translate. The crop uses bilinear
    interpolation whatever the model's setting: it is the fast uint8 kernel,
    and timm's own training mixes interpolations anyway. Random draws come from torch, `random` (RandAugment) and
    numpy (RandAugment's op choice), all three of which DataLoader seeds per worker. Normalisation and random
    erasing follow per batch on the device in `GpuBatchAugment`.
    """
    from torchvision.transforms import v2

    size = int(data_config["input_size"][-1])
    ops: list[Callable] = [
        v2.RandomResizedCrop(size, scale=(float(recipe.scale_min), 1.0), interpolation=v2.InterpolationMode.BILINEAR,
                             antialias=True)
    ]
    if recipe.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(float(recipe.hflip)))
    if recipe.vflip > 0:
        ops.append(v2.RandomVerticalFlip(float(recipe.vflip)))
    degrees, translate = float(recipe.affine_degrees), float(recipe.affine_translate)
    if degrees or translate:
        ops.append(v2.RandomAffine(degrees=degrees, translate=(translate, translate) if translate else None))
    jitter = float(recipe.color_jitter)
    if jitter:
        ops.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    rand_augment = recipe.rand_augment
    if rand_augment:
        from timm.data.auto_augment import rand_augment_transform  # timm imports slowly; only pay when used

        # timm's RandAugment works on PIL images; its fill colour is the model's mean, as in timm's own pipeline.
        mean = tuple(round(255 * m) for m in data_config["mean"])
        try:
            augment = rand_augment_transform(rand_augment, {"translate_const": int(size * 0.45), "img_mean": mean})
        except Exception as err:
            raise CompError(
                f"recipe rand_augment = {rand_augment!r} is not a timm RandAugment string ({err}); "
                'use e.g. "rand-m9-mstd0.5" or "" for none'
            ) from err
        ops += [v2.ToPILImage(), augment, v2.PILToTensor()]
    return v2.Compose(ops)


def batch_normalize(images: torch.Tensor, data_config: dict, *, channels_last: bool = True) -> torch.Tensor:
    """A (B, 3, H, W) uint8 batch (any device) -> float32, normalised with the model's mean/std, channels-last: the
    one normalisation (training batches through GpuBatchAugment/NormalizingCollate's scale and bias, evaluation and
    TTA batches through comp.vision.tta.prepare_batch)."""
    return _normalize(images, *_scale_bias(data_config, images.device), channels_last)


def _scale_bias(data_config: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # (x / 255 - mean) / std as x * scale + bias: one fused in-place pass over the batch instead of three new tensors.
    import torch

    mean = torch.tensor(data_config["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data_config["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return 1 / (255 * std), -mean / std


def _normalize(images: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, channels_last: bool) -> torch.Tensor:
    import torch

    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)  # re-layout the uint8, 4x less to move
    out = images.float()
    return torch.addcmul(bias, out, scale, out=out)  # one fused in-place pass


class NormalizingCollate:
    """A loader collate that also does the float conversion and normalisation, in the loader worker.

    For training on a CPU: there the "device" is the main process, whose cores run the training step, so the
    per-pixel pass is better done by the workers alongside it. (On a GPU the uint8 batch travels 4x smaller and the
    GPU normalises it for free, so `GpuBatchAugment` does it there.) Yields (B, 3, H, W) float32 channels-last
    batches, equal to `batch_normalize` of the uint8 batch; `GpuBatchAugment` passes float batches through.
    """

    def __init__(self, data_config: dict) -> None:
        self.mean, self.std = tuple(data_config["mean"]), tuple(data_config["std"])
        self._tensors: tuple | None = None  # built in each process on first use (shared by fork, or pickled)

    def __getstate__(self) -> dict:
        return {"mean": self.mean, "std": self.std, "_tensors": None}

    def __call__(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        if self._tensors is None:
            # The same float32 scale and bias as batch_normalize, laid out for channels-last rows (H, W, 3).
            scale, bias = _scale_bias({"mean": self.mean, "std": self.std}, torch.device("cpu"))
            self._tensors = (scale.view(1, 1, 3), bias.view(1, 1, 3))
        return collate_channels_last(batch, *self._tensors)


class GpuBatchAugment:
    """The batched half of training augmentation, on the device: float conversion, normalisation, random erasing.

    Call it on a (B, 3, H, W) uint8 batch already on `device` (from a loader over `train_transform` samples, which
    did the crops and flips); returns a normalised float32 channels-last batch. A float batch is taken as already
    normalised (by `NormalizingCollate` in the loader workers) and only erased. Reads the recipe field
    random_erasing (probability; timm's per-pixel noise mode). Uses the global torch RNG, so `torch.manual_seed`
    makes it reproducible.
    """

    def __init__(self, data_config: dict, recipe: AugmentSettings, device: torch.device | str = "cpu") -> None:
        import torch

        self.device = torch.device(device)
        self.scale, self.bias = _scale_bias(data_config, self.device)
        self.erase = None
        erasing = float(recipe.random_erasing)
        if erasing > 0:
            from timm.data.random_erasing import RandomErasing

            self.erase = RandomErasing(erasing, mode="pixel", device=str(self.device))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        import torch

        if images.is_floating_point():
            out = images.contiguous(memory_format=torch.channels_last)  # a no-op for NormalizingCollate's batches
        else:
            out = _normalize(images, self.scale, self.bias, channels_last=True)
        return self.erase(out) if self.erase is not None else out

