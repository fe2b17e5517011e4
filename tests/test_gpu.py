"""The accelerator paths (CUDA, bf16/fp16 autocast, channels_last, pinned memory, batched TTA on the device).
Skipped without CUDA; run them on a GPU machine with `pytest -m gpu`."""

from __future__ import annotations

import numpy as np
import pytest

from comp import logits
from comp.training import train as train_mod

pytestmark = [pytest.mark.gpu, pytest.mark.slow]  # trains a model


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_training_with_amp_and_channels_last_writes_finite_logits(make_toy_workspace, workspace, amp):
    ws, comp = make_toy_workspace(workspace, n_per_class=8, n_folds=2, n_test=4)
    summary = train_mod.train(ws.load(), ws, "tiny", 0, device="cuda",
                              overrides=["epochs=2", f"amp={amp!r}", "channels_last=true", "tta='d4'"])[0]
    assert summary["status"] == "trained"
    oof, test = logits.load(ws.run("tiny", 0).oof), logits.load(ws.run("tiny", 0).test)
    assert np.isfinite(oof.values).all() and np.isfinite(test.values).all()
    assert len(test.ids) == 4 and oof.meta.tta == "d4"


def test_cuda_and_cpu_predictions_agree_for_the_same_weights(make_toy_workspace, workspace):
    import torch

    from comp.modeling.models import build_model, data_config
    from comp.modeling.recipe import load_recipe
    from comp.vision.tta import predict_logits

    ws, comp = make_toy_workspace(workspace)
    recipe = load_recipe(ws, "tiny")
    torch.manual_seed(0)
    model = build_model(recipe, comp.num_classes, pretrained=False, ws=ws).eval()
    images = np.random.default_rng(0).integers(0, 255, size=(6, 32, 32, 3), dtype=np.uint8)
    cpu = predict_logits(model, images, data_config(model), tta="hflip", device="cpu")
    gpu = predict_logits(model.cuda(), images, data_config(model), tta="hflip", device="cuda")
    np.testing.assert_allclose(cpu, gpu, atol=1e-3)
