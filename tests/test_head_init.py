"""head_init = "probe" (LP-FT): the head is fitted on frozen features of the training rows only, before training.

Fitting runs L-BFGS (an optimizer step to the suite's guard), so every test that fits is marked slow; each takes
seconds (a tiny timm test model at 32 px, a few dozen images).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import comp.training.train as train_mod
from comp.core.workspace import Workspace
from comp.modeling import recipe as recipe_mod
from comp.modeling.models import build_model, data_config
from comp.modeling.recipe import load_recipe
from comp.training import head_init
from comp.training.head_init import apply_head, fit_linear, linear_classifier, probe_head
from comp.vision.tta import eval_view, predict_logits


def _images(n_classes: int, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 32 px images: a class colour plus a class-placed bar, with noise; (images, labels)."""
    rng = np.random.default_rng(seed)
    out, labels = [], []
    for c in range(n_classes):
        hue = np.array([(c * 97) % 256, (c * 53 + 80) % 256, (c * 151 + 40) % 256], np.float32)
        for _ in range(per_class):
            img = rng.normal(128, 30, (32, 32, 3)).astype(np.float32) * 0.5 + hue * 0.5
            bar = int((c + 0.5) * 32 / n_classes)
            img[:, max(0, bar - 2) : bar + 2] = 255 - hue
            out.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(c)
    return np.stack(out), np.array(labels)


def _features_of(images: np.ndarray, cfg: dict):
    return lambda backbone: predict_logits(backbone, eval_view(images, cfg, "none"), cfg, "none", 16, "cpu",
                                           progress=False)


def test_the_recipe_knows_the_same_values_as_the_trainer():
    assert recipe_mod.HEAD_INITS == head_init.HEAD_INITS
    # Pretrained stock recipes probe (the dataclass default); the from-scratch test recipes keep the head as built.
    assert load_recipe(Workspace.here(), "effnet-lite0").head_init == recipe_mod.Recipe().head_init == "probe"
    assert load_recipe(Workspace.here(), "tiny").head_init == "random"


@pytest.mark.slow  # L-BFGS
def test_a_probe_fits_separable_features_single_and_multi_label():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 24)) + 5.0  # offset and scale like pooled ReLU features
    y = np.repeat(np.arange(4), 30)
    x = (centres[y] + rng.normal(0, 1, (len(y), 24))).astype(np.float32)
    weight, bias, accuracy = fit_linear(x, y, 4, multilabel=False, label_smoothing=0.1)
    assert weight.shape == (4, 24) and bias.shape == (4,)
    assert accuracy > 0.95  # chance is 0.25
    logits = torch.tensor(x) @ weight.T + bias  # the folded-back weights act on raw features
    assert float((logits.argmax(1) == torch.tensor(y)).float().mean()) == pytest.approx(accuracy)
    # Multi-label: tag j present when feature j is above its median (chance 0.5; rows near the median are noise).
    tags = (x[:, :3] > np.median(x[:, :3], 0)).astype(np.float32)
    _, _, tag_accuracy = fit_linear(x, tags, 3, multilabel=True, label_smoothing=0.1)
    assert tag_accuracy > 0.75


@pytest.mark.slow  # L-BFGS
@pytest.mark.parametrize("multilabel", [False, True], ids=["single", "multi"])
def test_the_head_of_a_tiny_timm_model_is_fitted_in_place(multilabel):
    recipe = load_recipe(Workspace.here(), "tiny")
    train_mod.seed_everything(0)
    model = build_model(recipe, num_classes=3)
    cfg = data_config(model, recipe)
    images, labels = _images(3, 12)
    targets = np.eye(3, dtype=np.float32)[labels] if multilabel else labels
    layer, _, _ = linear_classifier(model)
    before = layer.weight.detach().clone()
    result = probe_head(model, _features_of(images, cfg), targets, multilabel, recipe.label_smoothing)
    assert result.weight is not None and result.rows == 36
    assert result.train_accuracy > (0.8 if multilabel else 0.6)  # chance: 2/3 per tag, 1/3 per image
    assert linear_classifier(model)[0] is layer  # the classifier is back in place after the feature pass
    assert torch.equal(layer.weight, before)  # probe_head fits; apply_head writes
    apply_head(model, result)
    assert not torch.equal(layer.weight, before)
    logits = predict_logits(model, eval_view(images, cfg, "none"), cfg, "none", 16, "cpu", progress=False)
    hits = (logits > 0) == (targets > 0.5) if multilabel else logits.argmax(1) == labels
    assert hits.mean() == pytest.approx(result.train_accuracy, abs=1e-6)  # the model now predicts as the probe did
    assert "head fitted on frozen features of 36 training rows" in result.describe()


def test_a_head_that_is_not_one_linear_layer_keeps_its_init_and_says_why():
    recipe = load_recipe(Workspace.here(), "tiny", ['head="mlp"'])
    model = build_model(recipe, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    called = []
    result = probe_head(model, lambda backbone: called.append(1), np.zeros(4, np.int64), False, 0.1)
    assert result.weight is None and not called
    assert "not a plain Linear layer" in result.describe() and "starts as built" in result.describe()
    apply_head(model, result)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


class _Spy:
    """Wraps train.probe_head: records each call's targets and the fitted head."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[tuple[np.ndarray, torch.Tensor | None]] = []
        real = train_mod.probe_head

        def spy(model, features_of, targets, *args, **kwargs):
            result = real(model, features_of, targets, *args, **kwargs)
            self.calls.append((np.array(targets), result.weight))
            return result

        monkeypatch.setattr(train_mod, "probe_head", spy)


@pytest.mark.slow  # trains a model
def test_the_held_out_rows_never_reach_the_probe(make_toy_workspace, workspace, monkeypatch):
    ws, _ = make_toy_workspace(workspace, n_per_class=8, n_folds=2)
    spy = _Spy(monkeypatch)
    args = dict(device="cpu", overrides=["epochs=1", 'head_init="probe"'])
    summary = train_mod.train(ws.load(), ws, "tiny", 0, **args)[0]
    assert len(spy.calls) == 1 and len(spy.calls[0][0]) == summary["n_train"]
    clean = spy.calls[0][1]

    # The same run with fold 0's labels and pixels poisoned: the fitted head must not move by a bit.
    init = train_mod._Job.__init__

    def poisoned(self, *a, **kw):
        init(self, *a, **kw)
        held = self.items["fold"].to_numpy() == 0
        self.y = self.y.copy()
        self.y[held] = (self.y[held] + 1) % 3
        pixels = np.array(self.train_images)
        pixels[held] = 255 - pixels[held]
        self.train_images = pixels

    monkeypatch.setattr(train_mod._Job, "__init__", poisoned)
    train_mod.train(ws.load(), ws, "tiny", 0, force=True, **args)
    assert len(spy.calls) == 2 and torch.equal(spy.calls[1][1], clean)


@pytest.mark.slow  # trains a model
def test_a_resumed_run_ends_equal_and_does_not_fit_again(make_toy_workspace, workspace, monkeypatch):
    ws, _ = make_toy_workspace(workspace, n_per_class=8, n_folds=2)
    spy = _Spy(monkeypatch)
    args = dict(device="cpu", overrides=["epochs=2", 'head_init="probe"'])
    train_mod.train(ws.load(), ws, "tiny", 0, **args)
    reference = torch.load(ws.run("tiny", 0).last, weights_only=True)["model"]

    class Killed(Exception):
        pass

    epoch = train_mod._Job._epoch

    def die_after_the_first(self, k, e, *rest):
        if e == 1:
            raise Killed  # the first epoch's state is saved; the second never starts
        return epoch(self, k, e, *rest)

    monkeypatch.setattr(train_mod._Job, "_epoch", die_after_the_first)
    with pytest.raises(Killed):
        train_mod.train(ws.load(), ws, "tiny", 0, force=True, **args)
    monkeypatch.setattr(train_mod._Job, "_epoch", epoch)
    train_mod.train(ws.load(), ws, "tiny", 0, force=True, **args)
    assert len(spy.calls) == 2  # the uninterrupted run and the killed one fitted; the resumed one did not
    assert torch.equal(spy.calls[0][1], spy.calls[1][1])
    final = torch.load(ws.run("tiny", 0).last, weights_only=True)["model"]
    for key, value in reference.items():
        torch.testing.assert_close(final[key], value, atol=1e-5, rtol=0, msg=key)


@pytest.mark.slow  # trains a model
def test_head_init_random_trains_as_before(make_toy_workspace, workspace, monkeypatch):
    ws, _ = make_toy_workspace(workspace, n_per_class=8, n_folds=2)
    spy = _Spy(monkeypatch)
    built = []
    real_build = train_mod.build_model

    def build(*a, **kw):
        built.append(model := real_build(*a, **kw))
        layer = linear_classifier(model)[0]
        built.append(layer.weight.detach().clone())
        return model

    monkeypatch.setattr(train_mod, "build_model", build)
    seen = []
    real_trainer = train_mod._Job._trainer

    def trainer(self, recipe, model, n_train):
        seen.append(linear_classifier(model)[0].weight.detach().clone())
        return real_trainer(self, recipe, model, n_train)

    monkeypatch.setattr(train_mod._Job, "_trainer", trainer)
    train_mod.train(ws.load(), ws, "tiny", 0, device="cpu", overrides=["epochs=1", 'head_init="random"'])
    assert not spy.calls
    assert torch.equal(seen[0], built[1])  # the Trainer got the head as built


@pytest.mark.slow  # trains a model
def test_the_fitted_head_is_scored_as_epoch_0_and_kept_unless_an_epoch_beats_it(make_toy_workspace, workspace, cli):
    """A short fine-tune can end below the linear probe it started from; the run keeps whichever scored best on
    its held-out rows, the probe included (best_epoch 0)."""
    import json
    import re

    ws, _ = make_toy_workspace(workspace, n_per_class=8, n_folds=2)
    # A learning rate too small to move anything: no epoch can beat the probe by more than noise.
    code, out = cli("train", "--model", "tiny", "--fold", "0", "--device", "cpu", "--set", "num_workers=0",
                    "--set", "head_init='probe'", "--set", "epochs=2", "--set", "lr=1e-9", "--set", "min_lr=0")
    assert code == 0, out
    probe = float(re.search(r"the fitted head alone \(epoch 0\): accuracy ([0-9.]+)", out).group(1))
    summary = json.loads(ws.run("tiny", 0).metrics.read_text())
    assert summary["best_score"] >= probe - 1e-4  # the best of the probe and the epochs, never below the probe
    if summary["best_score"] == pytest.approx(probe, abs=1e-4):
        assert summary["best_epoch"] == 0  # the probe's weights are the ones predicted with
