"""CPU speed policy: cores as the OS and cgroup allow, thread plans that never oversubscribe them, one loader per
run with per-item seeding (the same batches whatever the workers), normalisation in loader workers, and the
channels_last probe (measured, recorded, kept on resume)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from comp.core.workspace import Workspace
from comp.modeling.recipe import Recipe
from comp.training import runtime
from comp.vision import augment, images

DATA_CONFIG = {"input_size": (3, 16, 16), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
               "interpolation": "bilinear", "crop_pct": 1.0}
RECIPE = Recipe(scale_min=0.3, hflip=0.5, vflip=0.5)  # the output size is DATA_CONFIG's


def test_cgroup_quota_caps_the_cores(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert images._cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert images._cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert images._cgroup_cpu_quota(tmp_path) == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert images._cgroup_cpu_quota(tmp_path) is None

    affinity = len(__import__("os").sched_getaffinity(0))
    monkeypatch.setattr(images, "_cgroup_cpu_quota", lambda: 1.5)
    assert images.available_cores() == 1  # a fractional quota rounds down: a second busy thread would be throttled
    monkeypatch.setattr(images, "_cgroup_cpu_quota", lambda: 1000.0)
    assert images.available_cores() == affinity  # the affinity mask still bounds it


@pytest.mark.parametrize("cores", [1, 2, 3, 8, 64])
@pytest.mark.parametrize("requested", [-1, 0, 1, 4, 100])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_thread_plan_never_oversubscribes(monkeypatch, cores, requested, device):
    monkeypatch.setattr(runtime, "available_cores", lambda: cores)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    plan = runtime.thread_plan(requested, n_items=5000, batch_size=32, device=torch.device(device))
    assert plan.cores == cores
    assert plan.workers + plan.train_threads <= cores or (cores == 1 and plan.workers == 0)
    assert plan.train_threads >= 1 and plan.eval_threads == cores
    if requested >= 0:
        assert plan.workers == min(requested, cores - 1)
    assert plan.normalize_in_workers == (device == "cpu" and plan.workers > 0)


def test_thread_plan_choices_and_ranks(monkeypatch):
    monkeypatch.setattr(runtime, "available_cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert runtime.thread_plan(-1, 100, 32, cpu).workers == 0  # a tiny set: no worker start-up
    assert runtime.thread_plan(-1, 5000, 32, cpu).workers == 2  # one per 8 cores on a CPU
    monkeypatch.setattr(runtime, "available_cores", lambda: 4)
    plan = runtime.thread_plan(-1, 5000, 32, cpu)  # a small CPU box: the step gets every core, loading runs inline
    assert plan.workers == 0 and plan.train_threads == 4 and not plan.normalize_in_workers
    monkeypatch.setattr(runtime, "available_cores", lambda: 16)
    assert runtime.thread_plan(-1, 5000, 32, cuda).workers == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four ranks on this machine share its cores
    plan = runtime.thread_plan(-1, 5000, 32, cuda)
    assert plan.cores == 4 and plan.workers == 3 and plan.train_threads == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own limit caps it
    assert runtime.process_cores() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # nested-level syntax: not a cap comp reads
    assert runtime.process_cores() == 4


def test_torch_threads_is_restored():
    before = torch.get_num_threads()
    with runtime.torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def _dataset(n: int = 12) -> images.ArrayDataset:
    pixels = np.random.default_rng(0).integers(0, 256, (n, 20, 20, 3), dtype=np.uint8)
    return images.ArrayDataset(pixels, np.arange(n) % 3, augment.train_transform(DATA_CONFIG, RECIPE))


def _epoch_batches(loader, epoch: int) -> list[torch.Tensor]:
    loader.sampler.set_epoch(epoch)
    return [x.clone() for x, _ in loader]


def _sampler(dataset, seed: int = 5):
    return torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)


def test_epoch_loader_batches_depend_on_the_epoch_only_and_leave_the_main_rng_alone():
    dataset = _dataset()
    reused = images.epoch_loader(dataset, 4, sampler=_sampler(dataset), seed=5, workers=0)
    first = _epoch_batches(reused, 0)
    second = _epoch_batches(reused, 1)
    fresh = images.epoch_loader(dataset, 4, sampler=_sampler(dataset), seed=5, workers=0)
    for a, b in zip(_epoch_batches(fresh, 1), second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # a new loader at epoch 1 = the reused one
    assert any(not torch.equal(a, b) for a, b in zip(first, second, strict=True))  # epochs differ

    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    want = torch.rand(1), random.random(), np.random.rand()
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    _epoch_batches(fresh, 2)  # items are made in this process; their seeding must not move its RNGs
    assert (torch.rand(1), random.random(), np.random.rand()) == want


@pytest.mark.slow
def test_epoch_loader_gives_the_same_batches_with_workers_kept_across_epochs():
    dataset = _dataset()
    inline = images.epoch_loader(dataset, 4, sampler=_sampler(dataset), seed=9, workers=0)
    pooled = images.epoch_loader(dataset, 4, sampler=_sampler(dataset), seed=9, workers=2)
    assert pooled.persistent_workers
    for epoch in range(3):
        for a, b in zip(_epoch_batches(inline, epoch), _epoch_batches(pooled, epoch), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    normalised = images.epoch_loader(dataset, 4, sampler=_sampler(dataset), seed=9, workers=1,
                                     collate_fn=augment.NormalizingCollate(DATA_CONFIG))
    for a, b in zip(_epoch_batches(normalised, 1), _epoch_batches(inline, 1), strict=True):
        assert a.dtype == torch.float32 and a.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(a, augment.batch_normalize(b, DATA_CONFIG), rtol=0, atol=0)


def test_normalizing_collate_equals_batch_normalize_and_the_step_passes_it_through():
    items = [(torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8), i) for i in range(5)]
    uint8, labels = images.collate_channels_last(items)
    floats, same_labels = augment.NormalizingCollate(DATA_CONFIG)(items)
    assert floats.dtype == torch.float32 and floats.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(floats, augment.batch_normalize(uint8, DATA_CONFIG), rtol=0, atol=0)
    assert torch.equal(labels, same_labels)
    step = augment.GpuBatchAugment(DATA_CONFIG, SimpleNamespace(random_erasing=0.0))
    torch.testing.assert_close(step(floats), step(uint8), rtol=0, atol=0)


def _conv_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def test_channels_last_probe_measures_and_touches_nothing():
    model = _conv_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    want = torch.rand(3)
    torch.manual_seed(1)
    choice, timings = runtime.probe_channels_last(model, size=16, batch=2)
    assert isinstance(choice, bool)
    assert choice == (timings["channels_last_s"] < timings["contiguous_s"])
    assert torch.equal(torch.rand(3), want)  # dropout in the probe drew from a forked RNG
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert runtime.probe_channels_last(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), 2)[0] is False


def test_trainer_records_its_speed_choices_and_resumes_in_the_saved_format():
    from comp.modeling.models import build_model, data_config
    from comp.modeling.recipe import load_recipe
    from comp.training.loop import Trainer

    recipe = load_recipe(Workspace.here(), "tiny", ["channels_last=true", "batch_size=4"])
    cfg = data_config(build_model(recipe, 3))
    cpu = torch.device("cpu")
    trainer = Trainer(recipe, build_model(recipe, 3), cfg, cpu, 8)
    assert "channels_last_probe" in trainer.speed and trainer.speed["channels_last"] == trainer.channels_last
    assert trainer.speed["train_threads"] + trainer.speed["workers"] <= trainer.speed["cores"]
    saved = Trainer(recipe, build_model(recipe, 3), cfg, cpu, 8, channels_last=True).state_dict()
    resumed = Trainer(recipe, build_model(recipe, 3), cfg, cpu, 8, channels_last=False)
    resumed.load_state_dict(saved)
    conv = next(m for m in resumed.model.modules() if isinstance(m, nn.Conv2d))
    assert resumed.channels_last and conv.weight.is_contiguous(memory_format=torch.channels_last)
    off = Trainer(load_recipe(Workspace.here(), "tiny", ["channels_last=false"]), build_model(recipe, 3), cfg, cpu, 8)
    assert off.channels_last is False and "channels_last_probe" not in off.speed  # the recipe can turn it off


@pytest.mark.slow
def test_loader_workers_do_not_change_the_trained_run(make_toy_workspace, workspace, monkeypatch):
    """The same fold trained with no loader workers and with one (kept across epochs, normalising) ends with the
    same OOF logits: items are seeded by index, not by worker; speed choices are recorded in metrics.json."""
    import dataclasses
    import json

    from comp import logits
    from comp.training import loop
    from comp.training.train import train

    # One step thread in both runs: the plan would give the run without workers more, and more threads sum the
    # convolution gradients in another order (equal to float precision, not bit for bit).
    plan = loop.thread_plan
    monkeypatch.setattr(loop, "thread_plan", lambda *a: dataclasses.replace(plan(*a), train_threads=1))
    ws, _ = make_toy_workspace(workspace, n_per_class=8, n_folds=2)
    oof = {}
    for workers in (0, 1):
        train(ws.load(), ws, "tiny", 0, device="cpu", force=True,
              overrides=["epochs=2", f"num_workers={workers}", "channels_last=false"])
        oof[workers] = logits.load(ws.run("tiny", 0).oof).values
        speed = json.loads(ws.run("tiny", 0).metrics.read_text())["speed"]
        assert speed["workers"] == min(workers, speed["cores"] - 1)
        assert speed["normalize_in_workers"] == (speed["workers"] > 0) and speed["channels_last"] is False
    np.testing.assert_allclose(oof[1], oof[0], atol=1e-6, rtol=0)


@pytest.mark.slow  # trains two tiny folds
def test_the_memory_format_probe_runs_once_per_side_in_a_command(make_toy_workspace, workspace, monkeypatch, cli):
    """Every fold of one `comp train` (and a --budget's timing run) at one side reuses the first Trainer's
    channels_last probe (~2 s of a CPU core each, which a short budget pays), and records where its choice came from."""
    import json

    from comp.training import loop

    ws, _ = make_toy_workspace(workspace, n_per_class=8, n_folds=2)
    calls = []
    probe = loop.probe_channels_last

    def counted(*args, **kwargs):
        calls.append(args[1])
        return probe(*args, **kwargs)

    monkeypatch.setattr(loop, "probe_channels_last", counted)
    code, out = cli("train", "--model", "tiny", "--fold", "all", "--device", "cpu", "--set", "num_workers=0",
                    "--set", "epochs=1", "--set", "channels_last=true")
    assert code == 0, out
    assert calls == [32]  # two folds, one probe
    speeds = [json.loads(ws.run("tiny", k).metrics.read_text()).get("speed", {}) for k in (0, 1)]
    assert "channels_last_probe" in speeds[0] and speeds[1].get("channels_last_from", "").startswith("probed by")
    assert speeds[0]["channels_last"] == speeds[1]["channels_last"]
