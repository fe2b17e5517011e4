"""Recipe to `nn.Module`: timm, torchvision or a local weights file; the head; the model's data config; freezing.

Every model leaves here with a timm-style `pretrained_cfg` (mean, std, input size, interpolation, crop, classifier
name), and `data_config(model, recipe)` is the one decision of a model's input (timm's data config, the recipe's
img_size, the cache side), resolved from the recipe alone when no model is built yet: the input pipeline never
hard-codes normalisation and nothing else decides a size. Pretrained weights come through the libraries' own
loaders (timm's hub/file loader, torchvision's weights enums), so a cached or local file works offline exactly as a
download would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from comp.core import atomic
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.modeling.heads import attach_head, output_layers
from comp.modeling.recipe import Recipe, weights_path
from comp.vision.images import cache_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_model(
    recipe: Recipe, num_classes: int, pretrained: bool | None = None, ws: Workspace | None = None
) -> nn.Module:
    """The recipe's backbone with a fresh `num_classes` head; `pretrained=None` follows `recipe.pretrained`."""
    if num_classes < 1:
        raise CompError(f"cannot build a model for {num_classes} classes; check `classes` in comp.toml")
    pretrained = recipe.pretrained if pretrained is None else pretrained
    ws = ws or Workspace.here()
    if recipe.source == "torchvision":
        model = _torchvision(recipe, num_classes, pretrained)
    elif pretrained and recipe.weights and recipe.source in ("file", "timm"):  # timm + weights: that local file
        model = _from_file(recipe, num_classes, weights_path(ws, recipe.weights))
    else:
        model = _timm(recipe, num_classes, pretrained)
    attach_head(model, recipe.head, recipe.head_hidden, recipe.head_dropout)  # after any weights load: a new head
    if recipe.img_size:
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, recipe.img_size, recipe.img_size)}
    if pretrained and recipe.zero_head:
        # A randomly initialised head on pretrained features gives large logits (timm's EfficientNet init scales by
        # 1/sqrt(num_classes)) and early gradients that wreck the backbone; a zero head starts at uniform
        # predictions and learns from the features alone.
        # Only the layer that outputs the logits: a zeroed hidden layer of an MLP head would never learn.
        outputs = output_layers(model, _head_prefixes(model))
        names = head_parameter_names(model)
        with torch.no_grad():
            for param in [p for layer in outputs for p in layer.parameters()] or [
                    p for n, p in model.named_parameters() if n in names]:
                param.zero_()
    return model


def fixed_side(recipe: Recipe) -> bool:
    """Whether the model trains at one input side only (torchvision ViTs: their position embeddings are fixed), so
    neither the images' native side nor a --budget may change img_size."""
    return recipe.source == "torchvision" and recipe.name.startswith("vit_")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def data_config(model: nn.Module | None, recipe: Recipe | None = None) -> dict[str, Any]:
    """The one decision of a model's input: timm's data config (input_size, interpolation, mean, std, crop_pct,
    crop_mode) with the recipe's img_size overriding the model's size, plus `cache_size`, the side of the cached
    uint8 square (comp.vision.images.cache_size). Training, predict, TTA, eval_view and augmentation read it.

    Without a model it is resolved from the recipe alone (timm's registered pretrained_cfg, or the torchvision
    weights' transforms), so nobody builds a model just to learn its input size. An unregistered timm name (one
    timm has no pretrained_cfg for) is the exception: its config exists only on a built model, so one is built then.
    """
    if model is None and recipe is None:
        raise ValueError("data_config needs a model or a recipe")
    if model is not None:
        cfg = dict(timm.data.resolve_model_data_config(unwrap(model)))
    elif recipe.source == "torchvision":
        cfg = _torchvision_cfg(_torchvision_config_weights(recipe), "", recipe.img_size, 0)
    else:
        _check_timm_name(recipe.name)
        default = timm.models.get_pretrained_cfg(recipe.name)
        if default is None:  # no registered config: only the built model knows it
            return data_config(build_model(recipe, 1, pretrained=False), recipe)
        cfg = dict(timm.data.resolve_data_config(pretrained_cfg=default.to_dict()))
    cfg = {k: cfg[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode") if k in cfg}
    if recipe is not None and recipe.img_size:
        cfg["input_size"] = (3, recipe.img_size, recipe.img_size)
    cfg["cache_size"] = cache_size(int(cfg["input_size"][-1]), float(cfg.get("crop_pct") or 1.0))
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# sources


def _timm_kwargs(recipe: Recipe, arch: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"drop_rate": recipe.drop_rate}
    if recipe.drop_path:
        kwargs["drop_path_rate"] = recipe.drop_path
    default = timm.models.get_pretrained_cfg(arch)
    # Fixed-size models (ViTs) must be built at the recipe's size; timm resamples position embeddings on load.
    if recipe.img_size and default is not None and default.fixed_input_size:
        kwargs["img_size"] = recipe.img_size
    return kwargs


def _check_timm_name(name: str) -> None:
    arch = name.split(".")[0]
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch[:6]}*")[:8]
        raise CompError(
            f"recipe name {name!r} is not a timm model; close names: {', '.join(close) or 'none'} "
            "(timm.list_models() lists all; source = \"torchvision\" for torchvision builders)"
        )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connect within `timeout` s (assumed yes behind a proxy)."""
    import os
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _require_hub_weights(name: str) -> None:
    """Fail in seconds, naming the weights and how to supply them, when they are neither in the Hugging Face cache
    nor downloadable (offline); otherwise the hub client spends about a minute in retries first."""
    import os

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - an unknown tag: timm's own error follows
        return
    if cfg is None or not cfg.hf_hub_id:
        return  # loaded from a URL or a file: timm's own loader reports it
    from huggingface_hub import try_to_load_from_cache

    for file in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin"):
        if file and isinstance(try_to_load_from_cache(cfg.hf_hub_id, file), str):
            return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else "huggingface.co cannot be reached"
        raise CompError(
            f"the pretrained weights of {name!r} (Hugging Face {cfg.hf_hub_id}) are not in the local cache and "
            f"{why}. Download them where there is internet (python -c \"import timm; timm.create_model('{name}', "
            "pretrained=True)\") and copy ~/.cache/huggingface, or put the weights file in the workspace and set "
            "weights = \"path/to/model.safetensors\" in the recipe, or --set pretrained=false to train from scratch"
        )


def require_weights(recipe: Recipe, ws: Workspace) -> None:
    """Training calls this before decoding any image: the recipe's pretrained weights can be had (its local file
    exists, or the hub weights are cached or downloadable); otherwise a CompError names them and how to supply them."""
    if not recipe.pretrained:
        return
    if recipe.weights and recipe.source in ("file", "timm"):
        weights_path(ws, recipe.weights)
    elif recipe.source == "timm":
        _check_timm_name(recipe.name)
        _require_hub_weights(recipe.name)


def _timm(recipe: Recipe, num_classes: int, pretrained: bool, **extra: Any) -> nn.Module:
    _check_timm_name(recipe.name)
    kwargs = {**_timm_kwargs(recipe, recipe.name.split(".")[0]), **extra}
    if pretrained and "pretrained_cfg_overlay" not in extra:
        _require_hub_weights(recipe.name)
    try:
        return timm.create_model(recipe.name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except CompError:
        raise
    except Exception as err:  # hub downloads fail with many exception types (HTTP, offline, cache)
        if not pretrained:
            raise
        raise CompError(
            f"could not load pretrained weights for timm model {recipe.name!r}: {type(err).__name__}: {err}. "
            "Without internet, put the weights in the Hugging Face cache, or use source = \"file\" with "
            "weights = PATH, or --set pretrained=false to train from scratch"
        ) from err


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A weights file as a state dict: safetensors, or a torch file loaded with weights_only=True."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CompError(f"cannot read weights file {path}: {err}") from err
    for key in ("state_dict", "model", "model_state"):  # common training-checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CompError(f"weights file {path} does not hold a state dict of tensors")
    return state


def _from_file(recipe: Recipe, num_classes: int, path: Path) -> nn.Module:
    if not recipe.load_by_order:
        # timm's own loader with a file override: same code path as a hub download (head dropped when sizes differ).
        return _timm(recipe, num_classes, True, pretrained_cfg_overlay={"file": str(path)})
    model = _timm(recipe, num_classes, False)
    load_by_order(model, read_state_dict(path), source=str(path))
    return model


def load_by_order(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` onto `model` pairing tensors by position (for ports whose names differ but shapes match).

    The classifier's tensors are skipped when their shapes differ (a new head for this competition); any other
    mismatch is an error naming both keys, because a shifted pairing would silently load garbage.
    """
    target = model.state_dict()
    if len(target) != len(state):
        raise CompError(
            f"{source}: {len(state)} tensors but model {type(model).__name__} has {len(target)}; "
            "load_by_order needs the same architecture (check `name` in the recipe)"
        )
    head = _head_prefixes(model)
    mapped = {}
    for (key, want), (src_key, value) in zip(target.items(), state.items(), strict=True):
        if want.shape == value.shape:
            mapped[key] = value
        elif any(key.startswith(p) for p in head):
            mapped[key] = want  # fresh head for this competition's classes
        else:
            raise CompError(
                f"{source}: tensor {src_key} {tuple(value.shape)} does not match {key} {tuple(want.shape)}; "
                "load_by_order needs shapes to match one to one (check `name` in the recipe)"
            )
    model.load_state_dict(mapped, strict=True)


def _torchvision(recipe: Recipe, num_classes: int, pretrained: bool) -> nn.Module:
    from torchvision import models as tvm

    if recipe.name not in tvm.list_models():
        raise CompError(f"recipe name {recipe.name!r} is not a torchvision model; see torchvision.models.list_models()")
    weights = None
    kwargs: dict[str, Any] = {}
    if pretrained:
        try:
            weights = tvm.get_model_weights(recipe.name)[recipe.weights]
        except KeyError:
            names = [w.name for w in tvm.get_model_weights(recipe.name)]
            raise CompError(
                f"recipe weights {recipe.weights!r} is not one of {recipe.name}'s: {', '.join(names)}"
            ) from None
    elif recipe.img_size and recipe.name.startswith("vit_"):
        kwargs["image_size"] = recipe.img_size  # torchvision ViTs are built for one size
    try:
        model = tvm.get_model(recipe.name, weights=weights, **kwargs)
    except Exception as err:
        if weights is None:
            raise
        raise CompError(
            f"could not load torchvision weights {recipe.name}.{recipe.weights}: {type(err).__name__}: {err}. "
            "Without internet, put the file in torch.hub's checkpoints cache or --set pretrained=false"
        ) from err
    if weights is not None and recipe.img_size and recipe.name.startswith("vit_"):
        fixed = int(weights.transforms().crop_size[0])
        if recipe.img_size != fixed:
            raise CompError(
                f"torchvision {recipe.name} with {recipe.weights} only takes {fixed} px input (position embeddings "
                f"are fixed); set img_size = {fixed} (or 0) in the recipe, or use a timm ViT, which resamples them"
            )
    head_name = _replace_last_linear(model, num_classes)
    # The data config follows the recipe's weights even when built without them (weights loaded from a checkpoint
    # next), so every copy of a recipe's model normalises alike.
    config_weights = weights if weights is not None else _torchvision_config_weights(recipe)
    model.pretrained_cfg = _torchvision_cfg(config_weights, head_name, recipe.img_size, num_classes)
    return model


def _torchvision_config_weights(recipe: Recipe) -> Any:
    """The weights enum whose transforms set the data config (None: the recipe trains from scratch)."""
    from torchvision import models as tvm

    if not (recipe.pretrained and recipe.weights):
        return None
    return tvm.get_model_weights(recipe.name).__members__.get(recipe.weights)


def _replace_last_linear(model: nn.Module, num_classes: int) -> str:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise CompError(f"torchvision model {type(model).__name__} has no Linear head to replace")
    name, old = linears[-1]
    model.set_submodule(name, nn.Linear(old.in_features, num_classes))
    return name


def _torchvision_cfg(weights: Any, head_name: str, img_size: int, num_classes: int) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "input_size": (3, 224, 224), "interpolation": "bilinear", "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
        "crop_pct": 0.875, "crop_mode": "center", "classifier": head_name, "num_classes": num_classes,
    }
    if weights is not None:
        t = weights.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        cfg.update(input_size=(3, crop, crop), interpolation=t.interpolation.value, mean=tuple(t.mean),
                   std=tuple(t.std), crop_pct=crop / resize)
    elif img_size:
        cfg["input_size"] = (3, img_size, img_size)
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# freezing: head only, then gradual unfreezing by stage (top down)


def _head_prefixes(model: nn.Module) -> list[str]:
    model = unwrap(model)
    name = getattr(model, "pretrained_cfg", {}).get("classifier") or ""
    names = [name] if isinstance(name, str) else list(name)
    return [f"{n}." for n in names if n]


def head_parameter_names(model: nn.Module) -> set[str]:
    prefixes = _head_prefixes(model)
    names = {n for n, _ in unwrap(model).named_parameters() if any(n.startswith(p) for p in prefixes)}
    if not names:  # no classifier recorded: the last parameterised module is the head
        last = [n for n, _ in unwrap(model).named_parameters()][-2:]
        names = set(last)
    return names


def stages(model: nn.Module) -> list[list[str]]:
    """Parameter names grouped into stages from input to output, the head excluded (timm's coarse groups when the
    model has them, else the top-level children, descending into one that holds most of the weights)."""
    model = unwrap(model)
    head = head_parameter_names(model)
    if hasattr(model, "group_matcher"):
        from timm.models._manipulate import group_parameters

        groups = group_parameters(model, model.group_matcher(coarse=True))
        ordered = [groups[k] for k in sorted(groups)]
    else:
        ordered = _child_stages(model)
    out = [[n for n in g if n not in head] for g in ordered]
    return [g for g in out if g]


def _child_stages(model: nn.Module) -> list[list[str]]:
    total = sum(p.numel() for p in model.parameters()) or 1
    items: list[tuple[str, nn.Module]] = list(model.named_children())
    while True:
        big = [i for i, (_, m) in enumerate(items) if sum(p.numel() for p in m.parameters()) > total / 2]
        if not big or not list(items[big[0]][1].children()):
            break
        i = big[0]
        prefix, module = items[i]
        items[i : i + 1] = [(f"{prefix}.{n}", m) for n, m in module.named_children()]
    return [[f"{prefix}.{n}" for n, _ in m.named_parameters()] for prefix, m in items]


def trainable_stage_count(recipe: Recipe, epoch: int) -> int | None:
    """How many top stages train at `epoch` (0 = head only); None = the whole model."""
    if epoch < recipe.freeze_epochs:
        return 0
    if recipe.unfreeze_every <= 0:
        return None
    return 1 + (epoch - recipe.freeze_epochs) // recipe.unfreeze_every


def set_trainable(model: nn.Module, n_stages: int | None) -> int:
    """Train the head plus the top `n_stages` stages (None = all); returns the number of trainable tensors."""
    model = unwrap(model)
    if n_stages is None:
        for p in model.parameters():
            p.requires_grad_(True)
        return sum(1 for _ in model.parameters())
    groups = stages(model)
    keep = set(head_parameter_names(model))
    for g in groups[len(groups) - n_stages :] if n_stages else []:
        keep.update(g)
    count = 0
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
        count += name in keep
    return count


def save_weights(path, model: nn.Module, meta: dict[str, str] | None = None) -> None:
    """The model's state dict as safetensors (tensors made contiguous and unshared, as the format requires)."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic.atomic_path(path) as tmp:
        try:
            save_file(state, str(tmp), metadata=meta or {})
        except OSError:
            raise
        except Exception as err:  # SafetensorError wraps a full disk: worded as one, the temp file removed
            raise atomic.library_error(err) from err


def load_weights(path, model: nn.Module) -> None:
    try:
        state = load_file(str(path))
    except Exception as err:
        raise CompError(f"cannot read checkpoint {path} ({err}); re-run training with --force") from err
    model.load_state_dict(state)
