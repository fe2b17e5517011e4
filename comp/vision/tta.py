"""Test-time augmentation (TTA): ttach's transforms, run batched; images to logits for any model.

`ttach.ClassificationTTAWrapper` runs one full forward pass per view in a Python loop. Here every view of a batch
is stacked along the batch dimension and sent through the model in one pass (one pass per distinct view shape),
then de-augmented and merged; the merged logits equal ttach's `merge_mode="mean"` within float tolerance.
Batching the views is what pays on a GPU (fewer, fuller kernel launches); on a CPU a bigger batch is not cheaper
per image, and the speed-up there comes from the prepared model copy (`inference_model`: BN folded into the
convolutions, channels_last). `bench/bench_tta.py` measures both parts against ttach.

Merges: `mean` (mean of logits, ttach's default) or `prob` (mean of softmax probabilities, returned as log-probs so
the result is still a logits-like array). ttach's `gmean`/`tsharpen` are not offered: they merge raw logits and give
NaN for negative values.

`predict_logits` is the one entry point that training and `comp predict` share (also exported as
`comp.predict.predict_logits`), so OOF/test logits are computed the same way everywhere.
"""

from __future__ import annotations

import copy
import math
import warnings
import weakref
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import ttach
from rich.progress import Progress
from torch import nn

from comp.core.errors import CompError
from comp.core.progress import progress_bar
from comp.vision.augment import batch_normalize
from comp.vision.images import cache_size
from comp.vision.presets import MERGES, PRESETS, VIEWS  # noqa: F401 (the names callers know as comp.vision.tta's)

# multiscale: the model size times these factors (rounded to the model's stride/patch multiple), bilinear.
MULTISCALE_FACTORS = (0.875, 1.125)
# five_crop when the data config leaves no margin (crop_pct 1.0): crops cover 87.5% of each side (timm's classic).
FIVE_CROP_PCT = 0.875
# predict_logits prepares a faster model copy only from this many batches on: below, the copy costs more than it saves.
OPTIMIZE_MIN_STEPS = 4
# ... and traces it (step 2 of inference_model) from this many: a trace costs about a second for an EfficientNet
# (Python per op, at batch 1) and saves ~12% of each pass over the step-1 copy, so it pays from ~8 passes of 64.
TRACE_MIN_STEPS = 8


def model_size(data_config: dict) -> tuple[int, int]:
    """(height, width) the model expects, from timm's data config `input_size` (C, H, W)."""
    try:
        _, h, w = data_config["input_size"]
        return int(h), int(w)
    except (KeyError, TypeError, ValueError) as err:
        raise CompError(
            f"data config {data_config!r} has no input_size (C, H, W); build it with "
            "comp.modeling.models.data_config(model, recipe)"
        ) from err


def source_size(preset: str, data_config: dict, image_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """The size images are resized to before the TTA views are made.

    The model size for every preset except `five_crop`, which crops model-size views out of a larger image: the
    image as given when it is larger than the model size (the cached square), else the data config's `cache_size`
    (model size / crop_pct: what timm's eval transform resizes to before its centre crop, decided by
    comp.modeling.models.data_config), so the five crops see about the scale a normal evaluation sees.
    """
    h, w = model_size(data_config)
    if preset != "five_crop":
        return h, w
    if image_size is not None and image_size[0] > h and image_size[1] > w:
        return int(image_size[0]), int(image_size[1])
    side = int(data_config.get("cache_size") or cache_size(h, float(data_config.get("crop_pct") or 1.0)))
    if side > h:
        return side, round(side * w / h)
    # crop_pct 1.0 (no margin) would make the five crops identical; take timm's classic 87.5% crop then.
    return max(h + 1, round(h / FIVE_CROP_PCT)), max(w + 1, round(w / FIVE_CROP_PCT))


def _size_multiple(model: nn.Module | None) -> int:
    """Sizes a model handles cleanly: a ViT's patch size, else 8 (CNN feature maps stay aligned)."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if isinstance(patch, int):
        return patch
    if isinstance(patch, Sequence) and patch:
        return int(max(patch))
    return 8


def _multiscale_sizes(h: int, w: int, multiple: int) -> list[tuple[int, int]]:
    def snap(x: float) -> int:
        return max(multiple, int(math.floor(x / multiple + 0.5)) * multiple)

    lo_f, hi_f = MULTISCALE_FACTORS
    # At tiny sizes rounding can land back on the model size; step one multiple away so there are three scales.
    lo = (min(snap(h * lo_f), h - multiple), min(snap(w * lo_f), w - multiple))
    hi = (max(snap(h * hi_f), h + multiple), max(snap(w * hi_f), w + multiple))
    return [(h, w), (max(lo[0], multiple), max(lo[1], multiple)), hi]


def tta_transforms(preset: str, data_config: dict, model: nn.Module | None = None) -> ttach.Compose:
    """The ttach transforms of a preset, for images already at `source_size(preset, data_config)`."""
    h, w = model_size(data_config)
    if preset == "none":
        return _identity()
    if preset == "hflip":
        return ttach.aliases.hflip_transform()
    if preset == "vflip":
        return ttach.aliases.vlip_transform()  # sic: ttach 0.0.3 spells it this way
    if preset == "d4":
        return ttach.aliases.d4_transform()
    if preset == "five_crop":
        return ttach.aliases.five_crop_transform(h, w)
    if preset == "multiscale":
        # ttach's Scale defaults to nearest-neighbour and int() truncation; explicit sizes + bilinear instead.
        sizes = _multiscale_sizes(h, w, _size_multiple(model))
        return ttach.Compose([ttach.Resize(sizes, original_size=(h, w), interpolation="bilinear", align_corners=False)])
    raise CompError(f"unknown TTA preset {preset!r}; choose one of {', '.join(PRESETS)} (or auto in `comp predict`)")


def _identity() -> ttach.Compose:
    # A Compose with one parameter-free view: Multiply by 1 is skipped by ttach, so it is the plain forward pass.
    return ttach.Compose([ttach.Multiply([1])])


def _check_merge(merge: str) -> None:
    if merge not in MERGES:
        raise CompError(f"unknown TTA merge {merge!r}; choose mean (of logits) or prob (mean of probabilities), or "
                        "sigmoid (mean of per-class probabilities, multi-label)")


def _as_tensor(output, where: str) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    raise CompError(f"{where}: the model returned {type(output).__name__}, expected a (batch, classes) tensor")


def tta_forward(model: nn.Module, x: torch.Tensor, transforms: ttach.Compose, merge: str = "mean") -> torch.Tensor:
    """Merged logits (B, C) of `model` over all `transforms` views of `x` (B, 3, H, W), batched.

    Views of the same shape go through the model in one forward pass (d4 on a square input: all 8 at once);
    outputs are de-augmented with ttach's own label pipeline, then merged in float32.
    """
    _check_merge(merge)
    transformers = list(transforms)
    views = [t.augment_image(x) for t in transformers]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, v in enumerate(views):
        by_shape.setdefault(tuple(v.shape[1:]), []).append(i)
    outputs: list[torch.Tensor | None] = [None] * len(views)
    batch = x.shape[0]
    # rot90 views come out in another memory layout and torch.cat then falls back to NCHW; keep the input's
    # channels_last so a channels_last model does not convert every batch.
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    for idx in by_shape.values():
        stacked = torch.cat([views[i] for i in idx]) if len(idx) > 1 else views[idx[0]]
        stacked = stacked.contiguous(memory_format=layout)
        y = _as_tensor(model(stacked), "TTA forward").float()
        for j, i in enumerate(idx):
            outputs[i] = transformers[i].deaugment_label(y[j * batch : (j + 1) * batch])
    stacked_out = torch.stack(outputs)  # (V, B, C)
    if merge == "mean":
        return stacked_out.mean(0)
    if merge == "sigmoid":  # log-odds of the mean per-class probability: finite for any logits
        mean = torch.logsumexp(F.logsigmoid(stacked_out), dim=0) - math.log(len(views))
        return mean - torch.log(-torch.expm1(mean).clamp(max=-1e-7))
    # log(mean(softmax)) via logsumexp: finite for any logits, unlike ttach's gmean/tsharpen on raw outputs.
    return torch.logsumexp(torch.log_softmax(stacked_out, dim=-1), dim=0) - math.log(len(views))


def view_shapes(transforms: ttach.Compose, size: tuple[int, int]) -> list[tuple[int, int]]:
    """The distinct (h, w) of the views a preset makes from an input of `size`."""
    x = torch.zeros(1, 3, *size)
    return sorted({tuple(t.augment_image(x).shape[2:]) for t in transforms})


def check_view_shapes(model: nn.Module, shapes: Sequence[tuple[int, int]], preset: str) -> None:
    """Refuse clearly, before a long run, when the model cannot take some view's shape (fixed-size ViTs)."""
    device = next(model.parameters(), torch.zeros(0)).device
    for shape in shapes:
        try:
            with torch.inference_mode():
                model(torch.zeros(1, 3, *shape, device=device))
        except (RuntimeError, AssertionError, ValueError) as err:
            raise CompError(
                f"TTA preset {preset!r} needs the model to accept {shape[0]}x{shape[1]} input, but it refused "
                f"({str(err).splitlines()[0][:160]}). Fixed-size models (e.g. ViTs without dynamic_img_size) only "
                "take their own size: use --tta none, hflip, vflip or five_crop (or d4 on square input)"
            ) from err


def inference_model(model: nn.Module, shapes: Sequence[tuple[int, int]], device, trace: bool = True) -> nn.Module:
    """A faster copy of an eval-mode `model` for inference, or `model` itself when no rewrite is safe.

    On CPU most of the TTA speed-up comes from here, not from batching (a bigger batch is not cheaper per image on a
    CPU: its activations fall out of cache). Two steps, each kept only where it applies:
    1. BatchNorm folded into the preceding convolution (torch.fx `fuse`, for models that trace symbolically) and
       channels_last 4-D tensors, which oneDNN's convolutions prefer.
    2. On a CPU and with `trace`, per view shape, that copy traced (torch.jit.trace) and frozen (torch.jit.freeze):
       freezing inlines the weights and folds BatchNorm where fx could not (timm's TF-"same"-padded EfficientNets
       compute their padding in Python, which fx refuses but a trace at one input shape records as constants).
       Measured per forward pass on one CPU thread vs the eager model, on a busy box: resnet18 at 160 px 1.23x
       (step 1) -> 1.46x (traced), tf_efficientnet_lite0 at 128 px 1.57x -> 1.79x. The trace costs a second or so
       (Python per op, at batch 1), so predict_logits asks for it only from TRACE_MIN_STEPS passes on and keeps the
       copy while the weights stay the same (`prepared_model`).
    Every rewrite must match the original within 1e-4 (relative to the largest logit) on probe inputs of every view
    shape at two batch sizes (a trace that baked in its batch size fails there), else the previous step is used.
    """
    from torch.fx.experimental.optimization import fuse

    if hasattr(model, "_orig_mod"):  # already torch.compile'd: leave its graph alone
        return model
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fast = fuse(model)  # a traced, BN-folded deep copy
            except Exception:  # noqa: BLE001 - not symbolically traceable (data-dependent control flow, ...)
                fast = copy.deepcopy(model)
            fast = fast.eval().to(device, memory_format=torch.channels_last)
            probes = _probes(model, shapes, device)
            if not _matches(fast, probes):
                return model
            if trace and torch.device(device).type == "cpu":
                traced = _ShapeTraced(fast, shapes)
                if _matches(traced, probes):
                    return traced
    except Exception:  # noqa: BLE001 - any failure of the optional rewrite falls back to the model as given
        return model
    return fast


# The prepared copy of each model, reused while its weights stay the same: a fold's OOF and test logits, and
# `comp predict --tta auto`'s presets, run one model several times, and preparing costs up to a second or two
# (trace, probes) where a pass of 64 images costs about that. Weak keys: a model that goes away takes its copy.
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prepared_model(model: nn.Module, shapes: Sequence[tuple[int, int]], device, trace: bool = True) -> nn.Module:
    """`inference_model(model, shapes, device, trace)`, built once per model and state of its weights: any in-place
    change of a parameter or buffer (an optimizer step, load_state_dict, BN statistics) bumps the tensor's version
    counter and a new copy is built."""
    try:
        tensors = [*model.parameters(), *model.buffers()]
        key = (str(torch.device(device)), tuple(sorted({tuple(s) for s in shapes})), trace,
               tuple((t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for t in tensors))
    except RuntimeError:  # inference tensors keep no version counter: no way to tell a change, so no reuse
        return inference_model(model, shapes, device, trace)
    hit = _PREPARED.get(model)
    if hit is not None and hit[0] == key:
        return hit[1] if hit[1] is not None else model
    fast = inference_model(model, shapes, device, trace)
    # The cache must not hold the model itself (a weak key kept alive by its own value would never go away).
    _PREPARED[model] = (key, None if fast is model else fast)
    return fast


def _probes(model: nn.Module, shapes: Sequence[tuple[int, int]], device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, the original model's output) on random inputs of every shape, at batch sizes 3 and 1."""
    generator = torch.Generator().manual_seed(0)
    out = []
    with torch.inference_mode():
        for shape in shapes:
            for batch in (3, 1):
                probe = torch.randn(batch, 3, *shape, generator=generator).to(device)
                out.append((probe, _as_tensor(model(probe), "probe").float()))
    return out


def _matches(fast: nn.Module, probes: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    with torch.inference_mode():
        for probe, want in probes:
            got = _as_tensor(fast(probe.contiguous(memory_format=torch.channels_last)), "probe").float()
            tolerance = 1e-4 * max(1.0, want.abs().max().item())
            if got.shape != want.shape or (got - want).abs().max().item() > tolerance:
                return False
    return True


class _ShapeTraced(nn.Module):
    """One frozen TorchScript trace of `model` per input (h, w) in `shapes`; other shapes run `model` itself.

    A trace records Python-computed values (a TF-"same" padding, a reshape) as constants of its input's shape, so
    each view shape gets its own trace; the batch size stays free (traced at 1, checked at 3 by the caller).
    """

    def __init__(self, model: nn.Module, shapes: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        self.model = model
        self.traced: dict[tuple[int, int], torch.jit.ScriptModule] = {}
        device = next(model.parameters()).device
        with torch.no_grad():  # a trace under inference_mode would hold inference tensors that freeze cannot fold
            for shape in dict.fromkeys(tuple(s) for s in shapes):
                example = torch.zeros(1, 3, *shape, device=device).contiguous(memory_format=torch.channels_last)
                self.traced[shape] = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False).eval())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        traced = self.traced.get(tuple(x.shape[2:]))
        return traced(x) if traced is not None else self.model(x)


def prepare_batch(
    images_uint8: np.ndarray | torch.Tensor, data_config: dict, size: tuple[int, int], device
) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, h, w) on `device`, resized to `size` when it differs.

    Pixels travel as uint8 (4x less to copy) and become floats on the device, normalised with the model's mean and
    std by the one normalisation (`augment.batch_normalize`, as training's batches). Resizing uses the data config's
    interpolation (bilinear or bicubic) with antialiasing, as timm's eval transform does; it comes after the
    normalisation, which is the same since both are linear (interpolation weights sum to one).
    """
    x = torch.as_tensor(images_uint8).to(device, non_blocking=True)
    # (B, H, W, 3) permuted to (B, 3, H, W) is already channels_last in memory; the ops below keep that layout.
    x = batch_normalize(x.permute(0, 3, 1, 2), data_config)
    if tuple(x.shape[2:]) != tuple(size):
        mode = "bicubic" if data_config.get("interpolation") == "bicubic" else "bilinear"
        x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
    return x


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] != 3:
        shape = getattr(images, "shape", None)
        raise CompError(f"predict_logits expects uint8 images of shape (N, H, W, 3), got {shape}")
    if images.dtype != np.uint8:
        raise CompError(f"predict_logits expects uint8 images, got {images.dtype}; pass the cached uint8 array")


def predict_logits(
    model: nn.Module,
    images_uint8: np.ndarray,
    data_config: dict,
    tta: str = "none",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    merge: str = "mean",
    progress: bool = True,
    description: str = "predict",
    optimize: bool | None = None,
    indices: np.ndarray | None = None,
) -> np.ndarray:
    """Logits (N, C) float32 of `model` on uint8 images (N, H, W, 3), with TTA preset `tta` merged by `merge`.

    Images are resized to the model size (five_crop: to model size / crop_pct, then cropped) and normalised with
    `data_config` mean/std (timm's `resolve_model_data_config` dict). `batch_size` bounds the images per forward
    pass, views included, so memory does not grow with the preset: d4 at batch_size 64 runs 8 images x 8 views.
    The model is put in eval mode and moved to `device` (its training flag is restored afterwards); with
    `optimize` a BN-folded channels_last copy runs the passes (see `inference_model`); None (default) does so
    when there are enough batches to pay back its one-off cost (a copy, a trace and a few probe passes). A rich
    progress bar is shown when there is more than a handful of steps. With `indices`, only those rows of
    `images_uint8` are predicted, in that order, read one batch at a time (a memory-mapped cache is never copied
    whole).
    """
    if tta not in PRESETS:
        raise CompError(f"unknown TTA preset {tta!r}; choose one of {', '.join(PRESETS)}")
    _check_merge(merge)
    _check_images(images_uint8)
    if batch_size < 1:
        raise CompError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device)
    size = source_size(tta, data_config, images_uint8.shape[1:3])
    transforms = tta_transforms(tta, data_config, model)
    per_step = max(1, batch_size // len(transforms))
    rows = np.arange(len(images_uint8)) if indices is None else np.asarray(indices, dtype=np.int64)
    n = len(rows)
    was_training = model.training
    model.eval().to(device)
    try:
        shapes = view_shapes(transforms, size)
        # Only shapes other than the model's own can be refused (fixed-size ViTs); probe those before a long run.
        check_view_shapes(model, [s for s in shapes if s != model_size(data_config)], tta)
        steps = range(0, n, per_step)
        if optimize is None:
            optimize = len(steps) >= OPTIMIZE_MIN_STEPS
        fast = prepared_model(model, shapes, device, trace=len(steps) >= TRACE_MIN_STEPS) if optimize else model
        chunks: list[np.ndarray] = []
        with _progress(len(steps), description, enabled=progress and len(steps) > 4) as advance, torch.inference_mode():
            for start in steps:
                # Fancy indexing copies just this batch (writable, so torch need not warn about a read-only memmap).
                x = prepare_batch(images_uint8[rows[start : start + per_step]], data_config, size, device)
                chunks.append(tta_forward(fast, x, transforms, merge).cpu().numpy())
                advance()
    finally:
        model.train(was_training)
    if not chunks:  # no images: still return the right number of columns
        with torch.inference_mode():
            classes = _as_tensor(model.eval()(torch.zeros(1, 3, *model_size(data_config), device=device)), "predict")
        model.train(was_training)
        return np.zeros((0, classes.shape[-1]), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


class _progress:
    """A rich progress bar on stderr (or a no-op), used as `with _progress(total, text) as advance:`."""

    def __init__(self, total: int, description: str, enabled: bool) -> None:
        self.total, self.description, self.enabled = total, description, enabled
        self.bar: Progress | None = None

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        self.bar = progress_bar()
        self.bar.start()
        task = self.bar.add_task(self.description, total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def eval_view(images: np.ndarray, data_config: dict, tta: str) -> np.ndarray:
    """The cached squares as evaluation sees them: centre-cropped to the model size (timm's eval policy), except
    for five_crop, which crops its own views from the whole square."""
    side = int(data_config["input_size"][-1])
    if tta == "five_crop" or images.shape[1] <= side:
        return images
    off = int(round((images.shape[1] - side) / 2.0))
    return images[:, off : off + side, off : off + side]
