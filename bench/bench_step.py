"""Training step: `comp.training.loop.Trainer.train_epoch` vs a minimal hand-written loop (same model, data, precision).

CPU, fp32, timm resnet18 (random init) on 64 px, batches of 32, AdamW, label smoothing 0.1. Both start from the same
uint8 batches and convert/normalise them in the step; the harness also does its random flip, the LR schedule
update and the loss bookkeeping. Ratio = plain / harness time (1.0 = no overhead; the target is >= 0.95, i.e.
harness overhead <= 5%). Timed as process CPU time with one torch thread, in alternating order, median of several
rounds: on a shared 2-core machine wall-clock time varied 2x between identical runs; CPU time of one thread measures
the work itself (its own round-to-round noise is about +-3%).
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time

import torch
from torch import nn

from bench.common import Result, one_thread

SIZE, BATCH, STEPS, ROUNDS = 64, 32, 4, 8


def run() -> list[Result]:
    import timm

    from comp.core.workspace import Workspace
    from comp.modeling.models import build_model, data_config
    from comp.modeling.recipe import load_recipe
    from comp.training.loop import Trainer

    torch.manual_seed(0)
    recipe = load_recipe(Workspace.here(), "tiny", [
        'name="resnet18"', f"img_size={SIZE}", f"batch_size={BATCH}", "ema=false", 'amp="none"', "warmup_epochs=0",
    ])
    model = build_model(recipe, num_classes=10)
    cfg = data_config(model)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), dtype=torch.uint8, generator=gen),
                torch.randint(0, 10, (BATCH,), generator=gen)) for _ in range(STEPS)]

    # The plain loop's layout (contiguous) and one thread: this bench measures the Trainer's overhead, not the speed
    # choices it makes for a real run (bench_finetune measures those).
    trainer = Trainer(recipe, model, cfg, torch.device("cpu"), n_train=BATCH * STEPS, channels_last=False)
    trainer.plan = dataclasses.replace(trainer.plan, train_threads=1)
    plain_model = copy.deepcopy(timm.create_model("resnet18", num_classes=10))
    plain_model.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(plain_model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1) * 255

    def plain() -> None:
        plain_model.train()
        for images, labels in batches:
            x = (images.float() - mean) / std
            loss = criterion(plain_model(x), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        loss.item()

    def harness() -> None:
        trainer.train_epoch(batches, epoch=0)

    with one_thread():
        plain(), harness()  # warm-up: allocator, kernel selection
        harness_s, plain_s = [], []
        for r in range(ROUNDS):  # alternate the order so drifts in machine load hit both alike
            for fn, times in ((plain, plain_s), (harness, harness_s))[:: 1 if r % 2 == 0 else -1]:
                times.append(_cpu_seconds(fn))
    note = f"Trainer step vs plain PyTorch loop, resnet18 {SIZE}px b{BATCH} fp32 CPU"
    harness_t, plain_t = statistics.median(harness_s), statistics.median(plain_s)
    detail = (f"{STEPS} steps of {BATCH}, median of {ROUNDS} alternating rounds in CPU seconds (1 thread): "
              f"harness {harness_t:.3f}s, plain {plain_t:.3f}s")
    return [Result.from_seconds("train_step", harness_t, plain_t, note, items=BATCH * STEPS, detail=detail)]


def _cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


if __name__ == "__main__":
    for result in run():
        print(result.line(), result.detail)
