"""The training objective, chosen once at setup from the competition's kind: softmax cross-entropy over the classes
for single-label kinds, one sigmoid and binary cross-entropy per class for multi-label ones (tags, per-class
probabilities). Both keep label smoothing and mixup/cutmix; the step only calls `mixup` (or not) and `criterion`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from comp.modeling.recipe import Recipe


class MultiLabelBCE(nn.Module):
    """Mean binary cross-entropy over (image, class) of logits against 0/1 (or mixed, soft) targets; `smoothing`
    pulls each target towards 0.5 as timm's multi-label mixup does (y * (1 - s) + s / 2)."""

    def __init__(self, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = float(smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float()
        if self.smoothing:
            target = target * (1.0 - self.smoothing) + 0.5 * self.smoothing
        return F.binary_cross_entropy_with_logits(logits.float(), target)


def make_objective(recipe: Recipe, num_classes: int, multilabel: bool) -> tuple[Mixup | None, nn.Module]:
    """(mixup or None, criterion) for the recipe; targets are class indices, or multi-hot rows with `multilabel`."""
    mixup = None
    if recipe.uses_mix:
        mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, prob=recipe.mix_prob,
                      label_smoothing=recipe.label_smoothing, num_classes=num_classes, multi_label=multilabel)
    if multilabel:
        # With mixup the targets arrive mixed and smoothed already.
        return mixup, MultiLabelBCE(0.0 if mixup else recipe.label_smoothing)
    return mixup, SoftTargetCrossEntropy() if mixup else nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
