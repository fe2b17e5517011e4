"""The recipe's `head_init = "probe"`: fit the new classifier on frozen pretrained features before fine-tuning (LP-FT).

A fresh head on a pretrained backbone predicts nothing useful for its first steps, and the large gradients it sends
back meanwhile distort the pretrained features (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution"). A short CPU run of a few epochs cannot afford that. So, before training, a
linear probe is fitted on the pooled pre-logit features of the run's training rows (never its held-out rows), seen
by the frozen backbone in eval mode at the centre view, and becomes the classifier's starting weights; then training
runs as it would have (warmup, schedule, freezing unchanged).

The probe is a multinomial logistic regression (single-label) or one sigmoid per class (multi-label), fitted with
torch's full-batch L-BFGS on standardised features with a small L2 and the recipe's label smoothing, then folded
back into the raw features' scale. No sklearn: `comp train` does not import it (start-up time).

Only a plain `nn.Linear` classifier is fitted; other heads (the `mlp` head, two-headed distilled ViTs, a conv
classifier) keep their initialisation and the run says why. The cost is one evaluation pass over the training rows
(the budget planner counts it) plus the fit, seconds on a CPU for a few thousand rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from comp.modeling.heads import classifier_names

HEAD_INITS = ("random", "probe")  # the recipe's values (comp.modeling.recipe checks them; kept equal by a test)
# L2 on the weights of the centred, unit-RMS features, per row of the mean loss: strong on purpose. A probe fitted
# close to 100% training accuracy (L2 0.1) leaves fine-tuning almost no loss to learn from, and the backbone adapts
# less: measured (effnet-lite0 at 96 px, hymenoptera and Sign-Language-Digits, 2-3 folds each, OOF accuracy) it won
# after 1 epoch but lost to the zero head after 3; at 3.0 (training accuracy ~0.92-0.97) it beat the zero head at
# both (README, "Starting the head").
L2 = 3.0
# L-BFGS iterations: real features converged within 30 (the same weights at 30, 50 and 100); the cap bounds the
# unusual case, e.g. 5,000 rows x 1,000 classes of unlearnable labels took 25 s at 100 on one core.
MAX_ITER = 50


@dataclass(frozen=True)
class ProbeResult:
    """What the fit did, for the run's one line; `weight`/`bias` are None when the head kept its initialisation."""

    weight: torch.Tensor | None
    bias: torch.Tensor | None
    rows: int = 0
    train_accuracy: float = float("nan")
    seconds: float = 0.0
    reason: str = ""  # why the head was not fitted

    def describe(self) -> str:
        if self.weight is None:
            return f"head_init = probe skipped: {self.reason}; the head starts as built"
        return (f"head fitted on frozen features of {self.rows} training rows in {self.seconds:.1f}s: train accuracy "
                f"{self.train_accuracy:.3f}")


def probe_head(model: nn.Module, features_of: Callable[[nn.Module], np.ndarray], targets: np.ndarray,
               multilabel: bool, label_smoothing: float, device: torch.device | str = "cpu",
               fit: bool = True) -> ProbeResult:
    """Fit `model`'s linear classifier on frozen features and write it in place; returns what was done.

    `features_of(backbone)` runs the given model (the same model with its classifier replaced by an identity, so it
    outputs the classifier's input) over the training rows in eval mode and returns (n, features) in `targets`'
    order: the caller decides which rows and view (comp.training.train uses the training rows' centre view). Targets
    are class indices (n,) or multi-hot rows (n, C) with `multilabel`. With `fit` False only the features are
    made (a DDP rank other than 0 joins the collective feature pass; rank 0 fits and broadcasts).
    """
    t0 = time.perf_counter()
    layer, name, reason = linear_classifier(model)
    if layer is None:
        return ProbeResult(None, None, reason=reason)
    model.set_submodule(name, nn.Identity())
    try:
        features = features_of(model)
    finally:
        model.set_submodule(name, layer)
    if features.ndim != 2 or features.shape != (len(targets), layer.in_features):
        return ProbeResult(None, None, reason=f"the classifier's input has shape {features.shape[1:]}, not "
                                              f"({layer.in_features},) per image")
    if not fit:
        return ProbeResult(None, None, reason="not fitted in this process")
    weight, bias, accuracy = fit_linear(features, targets, layer.out_features, multilabel, label_smoothing, device)
    return ProbeResult(weight, bias, len(targets), accuracy, time.perf_counter() - t0)


def apply_head(model: nn.Module, result: ProbeResult) -> None:
    """Write a fitted probe into the model's classifier (no-op for a skipped one)."""
    if result.weight is None:
        return
    layer, _, _ = linear_classifier(model)
    assert layer is not None and result.bias is not None
    with torch.no_grad():
        layer.weight.copy_(result.weight.to(layer.weight))
        if layer.bias is not None:
            layer.bias.copy_(result.bias.to(layer.bias))


def linear_classifier(model: nn.Module) -> tuple[nn.Linear | None, str, str]:
    """(the model's one Linear classifier, its module name, "") or (None, "", why there is none to fit)."""
    names = classifier_names(model)
    if len(names) != 1:
        what = "records no classifier module" if not names else f"has {len(names)} classifiers ({', '.join(names)})"
        return None, "", f"{type(model).__name__} {what}"
    layer = model.get_submodule(names[0])
    if not isinstance(layer, nn.Linear):
        return None, "", f"its classifier {names[0]} is a {type(layer).__name__}, not a plain Linear layer"
    return layer, names[0], ""


def fit_linear(features: np.ndarray, targets: np.ndarray, num_classes: int, multilabel: bool,
               label_smoothing: float, device: torch.device | str = "cpu", l2: float = L2,
               max_iter: int = MAX_ITER) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(weight (C, D), bias (C,), training accuracy) of a linear classifier on raw `features` (n, D).

    Fitted on centred features scaled to unit RMS (L-BFGS converges in few steps there, and one L2 suits every
    backbone's feature scale), then folded back: W_raw = W / sigma, b_raw = b - W_raw @ mu. Single-label: softmax
    cross-entropy with `label_smoothing` (as nn.CrossEntropyLoss). Multi-label: per-class sigmoid cross-entropy with
    targets smoothed towards 0.5 (as comp.training.objective.MultiLabelBCE); accuracy is then over (row, class) pairs.
    """
    device = torch.device(device)
    x = torch.as_tensor(np.ascontiguousarray(features), dtype=torch.float32, device=device)
    mu = x.mean(0)
    # One scale for all features, not one per feature: pooled ReLU features include near-constant ones, and per-feature
    # scaling gives those weights of 1/their tiny spread, which the training-mode features (augmented, batch-norm
    # statistics of the batch) turn into huge logits (measured: a first epoch's loss of 29 instead of ~2).
    sigma = (x - mu).square().mean().sqrt().clamp_min(1e-12)
    z = (x - mu) / sigma
    if multilabel:
        target = torch.as_tensor(np.asarray(targets), dtype=torch.float32, device=device)
        soft = target * (1.0 - label_smoothing) + 0.5 * label_smoothing

        def loss_of(logits: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(logits, soft)
    else:
        target = torch.as_tensor(np.asarray(targets), dtype=torch.int64, device=device)

        def loss_of(logits: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits, target, label_smoothing=label_smoothing)

    w = torch.zeros(num_classes, x.shape[1], device=device, requires_grad=True)
    b = torch.zeros(num_classes, device=device, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_of(z @ w.T + b) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        weight = w / sigma
        bias = b - weight @ mu
        logits = x @ weight.T + bias
        hits = (logits > 0) == (target > 0.5) if multilabel else logits.argmax(1) == target
        accuracy = float(hits.float().mean()) if hits.numel() else float("nan")
    return weight.detach().cpu(), bias.detach().cpu(), accuracy
