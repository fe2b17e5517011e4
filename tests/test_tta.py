"""TTA: the batched path equals ttach's wrapper for every preset, merges stay finite, bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import ttach

from comp.core.errors import CompError
from comp.vision import tta

SIZE = 32


def _model(name: str = "test_resnet", **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=4, **kwargs).eval()
    # Non-trivial BatchNorm statistics, so folding BN into the convolutions is really exercised.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _config(model: torch.nn.Module, size: int = SIZE) -> dict:
    config = dict(timm.data.resolve_model_data_config(model))
    config["input_size"] = (3, size, size)
    return config


def _images(n: int = 5, h: int = 40, w: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cnn() -> torch.nn.Module:
    return _model()


@pytest.mark.parametrize("preset", tta.PRESETS)
def test_batched_equals_ttach_for_every_preset(cnn, preset):
    config = _config(cnn)
    images = _images()
    x = tta.prepare_batch(images, config, tta.source_size(preset, config, images.shape[1:3]), "cpu")
    transforms = tta.tta_transforms(preset, config, cnn)
    assert len(transforms) == tta.VIEWS[preset]
    with torch.inference_mode():
        want = ttach.ClassificationTTAWrapper(cnn, transforms, merge_mode="mean")(x).numpy()
        batched = tta.tta_forward(cnn, x, transforms).numpy()
    # predict_logits end to end: chunked (batch_size 9 -> views split across steps), BN-folded channels_last copy.
    full = tta.predict_logits(cnn, images, config, tta=preset, batch_size=9, optimize=True)
    assert full.dtype == np.float32 and full.shape == (5, 4)
    assert np.abs(batched - want).max() <= 1e-4
    assert np.abs(full - want).max() <= 1e-4
    if preset != "none":  # the views really change the answer, so equality above is not trivially true
        plain = tta.predict_logits(cnn, images, config, tta="none")
        assert np.abs(plain - want).max() > 1e-4


def test_d4_on_non_square_input_groups_views_by_shape(cnn):
    config = dict(_config(cnn), input_size=(3, 32, 48))
    images = _images(3, 32, 48)
    x = tta.prepare_batch(images, config, (32, 48), "cpu")
    transforms = tta.tta_transforms("d4", config)
    with torch.inference_mode():
        want = ttach.ClassificationTTAWrapper(cnn, transforms)(x).numpy()
    got = tta.predict_logits(cnn, images, config, tta="d4", optimize=True)
    assert np.abs(got - want).max() <= 1e-4


def test_prob_merge_is_log_of_mean_probabilities_and_never_nan(cnn):
    config = _config(cnn)
    images = _images()
    got = tta.predict_logits(cnn, images, config, tta="d4", merge="prob")
    assert np.isfinite(got).all()
    assert np.allclose(np.exp(got).sum(axis=1), 1.0, atol=1e-5)  # log-probabilities
    x = tta.prepare_batch(images, config, (SIZE, SIZE), "cpu")
    softmax_model = torch.nn.Sequential(cnn, torch.nn.Softmax(dim=1))
    with torch.inference_mode():
        want = ttach.ClassificationTTAWrapper(softmax_model, ttach.aliases.d4_transform())(x).log().numpy()
        # ttach's geometric mean of raw logits: NaN as soon as a logit is negative (what we must not inherit).
        gmean = ttach.ClassificationTTAWrapper(cnn, ttach.aliases.d4_transform(), merge_mode="gmean")(x)
    assert np.abs(got - want).max() <= 1e-4
    assert torch.isnan(gmean).any()


def test_multiscale_is_bilinear_on_stride_multiples(cnn):
    transforms = tta.tta_transforms("multiscale", _config(cnn, 224), cnn)
    (resize,) = transforms.aug_transforms
    assert resize.interpolation == "bilinear"
    assert sorted(resize.params) == [(200, 200), (224, 224), (256, 256)]


def test_multiscale_refuses_a_fixed_size_vit_but_runs_a_dynamic_one():
    images = _images(2, 32, 32)
    fixed = _model("test_vit", img_size=SIZE, dynamic_img_size=False)  # test_vit is dynamic by default
    with pytest.raises(CompError, match="multiscale.*accept"):
        tta.predict_logits(fixed, images, _config(fixed), tta="multiscale")
    dynamic = _model("test_vit", img_size=SIZE, dynamic_img_size=True)
    transforms = tta.tta_transforms("multiscale", _config(dynamic), dynamic)
    assert all(h % 16 == 0 for h, _ in transforms.aug_transforms[0].params)  # the patch size
    assert tta.predict_logits(dynamic, images, _config(dynamic), tta="multiscale").shape == (2, 4)


def test_five_crop_feeds_a_larger_image_and_crops_model_size_views(cnn):
    config = dict(_config(cnn), crop_pct=0.8)
    assert tta.source_size("five_crop", config) == (40, 40)  # model size / crop_pct
    # comp's data config carries the cache side it decided (models.data_config): five_crop reads it, never recomputes
    assert tta.source_size("five_crop", dict(config, cache_size=44)) == (44, 44)
    assert tta.source_size("five_crop", config, (48, 48)) == (48, 48)  # a larger cached square as it is
    assert tta.source_size("five_crop", dict(config, crop_pct=1.0), (32, 32)) == (37, 37)  # never 5 equal crops
    assert tta.source_size("d4", config, (48, 48)) == (32, 32)
    x = torch.zeros(1, 3, 40, 40)
    assert {tuple(t.augment_image(x).shape[2:]) for t in tta.tta_transforms("five_crop", config)} == {(32, 32)}


def test_bad_input_is_refused_with_a_clear_message(cnn):
    config = _config(cnn)
    with pytest.raises(CompError, match="unknown TTA preset"):
        tta.predict_logits(cnn, _images(), config, tta="d8")
    with pytest.raises(CompError, match="merge"):
        tta.predict_logits(cnn, _images(), config, merge="gmean")
    with pytest.raises(CompError, match="uint8"):
        tta.predict_logits(cnn, _images().astype(np.float32), config)
    with pytest.raises(CompError, match=r"\(N, H, W, 3\)"):
        tta.predict_logits(cnn, _images()[..., 0], config)
    assert tta.predict_logits(cnn, _images(0), config).shape == (0, 4)


def test_model_training_flag_is_restored(cnn):
    cnn.train()
    try:
        tta.predict_logits(cnn, _images(2), _config(cnn))
        assert cnn.training
    finally:
        cnn.eval()


def test_indices_predict_only_those_rows_in_that_order(cnn):
    images, config = _images(6), _config(cnn)
    full = tta.predict_logits(cnn, images, config, tta="hflip")
    picked = tta.predict_logits(cnn, images, config, tta="hflip", indices=np.array([4, 1, 2]), batch_size=4)
    assert np.abs(picked - full[[4, 1, 2]]).max() <= 1e-5


def test_cpu_inference_copy_is_traced_per_shape_and_equals_the_model_for_tf_same_padding():
    # TF-"same" padding is computed in Python from the input size: fx cannot fold such a model, a trace per view
    # shape can, and it must still equal the eager model (ttach's wrapper) at every batch size.
    model = _model("tf_efficientnet_lite0")
    config = _config(model)
    fast = tta.inference_model(model, [(SIZE, SIZE)], "cpu")
    assert isinstance(fast, tta._ShapeTraced) and set(fast.traced) == {(SIZE, SIZE)}
    images = _images(tta.TRACE_MIN_STEPS + 1, SIZE, SIZE)
    x = tta.prepare_batch(images, config, (SIZE, SIZE), "cpu")
    with torch.inference_mode():
        want = ttach.ClassificationTTAWrapper(model, ttach.aliases.d4_transform())(x).numpy()
    # one image (8 views) per pass: enough passes for predict_logits to trace
    got = tta.predict_logits(model, images, config, tta="d4", batch_size=8, optimize=True)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    other = torch.randn(2, 3, 40, 40)  # a shape it was not traced for runs the eager copy
    with torch.inference_mode():
        assert torch.allclose(fast(other), model(other), atol=1e-4)


def test_the_prepared_copy_is_reused_until_the_weights_change(monkeypatch):
    model = _model()
    config, images = _config(model), _images()
    built = []
    real = tta.inference_model
    monkeypatch.setattr(tta, "inference_model", lambda *a, **k: built.append(1) or real(*a, **k))
    first = tta.predict_logits(model, images, config, tta="hflip", optimize=True)
    again = tta.predict_logits(model, images, config, tta="hflip", optimize=True)
    assert len(built) == 1 and np.array_equal(first, again)
    with torch.no_grad():
        model.get_classifier().bias.add_(1.0)  # an in-place change, as an optimizer step makes
    moved = tta.predict_logits(model, images, config, tta="hflip", optimize=True)
    assert len(built) == 2 and np.allclose(moved, first + 1.0, atol=1e-4)


def _ttach_d4(model: torch.nn.Module, images: np.ndarray, config: dict) -> np.ndarray:
    x = tta.prepare_batch(images, config, tta.model_size(config), "cpu").contiguous()  # ttach gets plain NCHW
    with torch.inference_mode():
        return ttach.ClassificationTTAWrapper(model, ttach.aliases.d4_transform(), merge_mode="mean")(x).numpy()


def test_traced_resnet_copy_gives_ttachs_d4_logits():
    # The path the resnet benchmark row times: BN folded by fx, channels_last, traced and frozen; it must give
    # ttach's logits to float rounding, not merely within the 1e-4 the probes allow.
    model = _model()
    config, images = _config(model), _images(tta.TRACE_MIN_STEPS + 1, SIZE, SIZE)
    fast = tta.inference_model(model, [(SIZE, SIZE)], "cpu")
    assert isinstance(fast, tta._ShapeTraced)
    want = _ttach_d4(model, images, config)
    got = tta.predict_logits(model, images, config, tta="d4", batch_size=8, optimize=True)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


class _BatchBaked(torch.nn.Module):
    """Its output depends on the batch size through a Python int: a trace records that int as a constant (and fx
    refuses the model), so a copy traced at batch 1 gives other answers at batch 3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).mean((2, 3)) + int(x.shape[0])


def test_a_trace_that_baked_in_its_batch_size_is_not_used():
    torch.manual_seed(0)
    model = _BatchBaked().eval()
    config = {"input_size": (3, SIZE, SIZE), "mean": (0.5,) * 3, "std": (0.25,) * 3, "interpolation": "bilinear"}
    fast = tta.inference_model(model, [(SIZE, SIZE)], "cpu")
    assert fast is not model and not isinstance(fast, tta._ShapeTraced)  # step 1 (a channels_last copy) kept
    images = _images(tta.TRACE_MIN_STEPS + 1, SIZE, SIZE)
    got = tta.predict_logits(model, images, config, tta="d4", batch_size=8, optimize=True)
    # ttach's forward passes hold other batch sizes, so compare with the model itself on the same passes.
    plain = tta.predict_logits(model, images, config, tta="d4", batch_size=8, optimize=False)
    assert np.abs(got - plain).max() <= 1e-5 * max(1.0, np.abs(plain).max())


def test_a_copy_that_loses_a_forward_hook_is_not_used():
    # Folding BN into the convolution drops the BN module and with it any hook on it (a user's feature tap, a
    # calibration shift): that copy differs from the model, so predict_logits must run the model itself.
    model = _model()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.register_forward_hook(lambda module, args, out: out + 0.5)
    assert tta.inference_model(model, [(SIZE, SIZE)], "cpu") is model
    config, images = _config(model), _images(tta.TRACE_MIN_STEPS + 1, SIZE, SIZE)
    got = tta.predict_logits(model, images, config, tta="d4", batch_size=8, optimize=True)
    want = _ttach_d4(model, images, config)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    bare = _model()  # the same weights without the hook: the hook really changes the logits
    assert np.abs(tta.predict_logits(bare, images, config, tta="d4", batch_size=8) - want).max() > 1e-3
