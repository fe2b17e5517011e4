"""The warnings of `comp check`: a file the platform will score, but whose predictions look wrong (one class
everywhere, a class mix far from the training prior, and what the kind itself warns about, e.g. hard labels under
ROC AUC)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from comp.core.config import Competition
from comp.core.workspace import Workspace
from comp.kinds import RANK_METRICS, Cells, kind_of
from comp.submission.parse import SHOW, labels_of

__all__ = ["RANK_METRICS", "distribution_warnings"]


def distribution_warnings(comp: Competition, ws: Workspace, cells: Cells) -> list[str]:
    """A collapsed model (one class everywhere) or a class mix far from the training prior (often a label-order bug:
    torchvision's ImageFolder sorts "10" before "2"), and the kind's own warnings."""
    kind = kind_of(comp)
    # numeric kinds compare numbers (a large plain file is checked without its text: cells.values is None)
    values = cells.numbers if kind.numeric and cells.numbers is not None else cells.values
    if len(values) < 2 or comp.num_classes < 2:
        return []
    predicted = kind.predicted(comp, cells)
    labels = labels_of(comp)
    warnings = []
    if kind.numeric and (values == values[0]).all():
        shown = ",".join(f"{v:g}" for v in values[0].tolist()[:SHOW]) + (",..." if values.shape[1] > SHOW else "")
        warnings.append(f"every row holds the same probabilities ({shown}): is this the sample itself?")
    elif predicted is not None and len(set(predicted)) == 1:
        warnings.append(f"every row predicts {labels[predicted[0]]!r}: a collapsed model, or the sample itself?")
    warnings += kind.warnings(comp, cells)
    prior = _training_prior(comp, ws) if predicted is not None else None
    if prior is not None:
        n, c = len(predicted), comp.num_classes
        share = np.bincount(predicted, minlength=c) / n
        distance = 0.5 * np.abs(share - prior).sum()
        # Sampling noise alone moves a small test set's mix by about sqrt(C/n)/2; only flag well beyond that.
        if distance > 0.3 + 0.5 * np.sqrt(c / n):
            worst = np.argsort(-np.abs(share - prior))[:SHOW]
            detail = ", ".join(f"{labels[j]!r} {share[j]:.0%} vs {prior[j]:.0%}" for j in worst)
            warnings.append(f"the predicted class mix is far from the training prior (total variation {distance:.2f}:"
                            f" {detail} in training): check the class order (ImageFolder sorts '10' before '2')")
    return warnings


def _training_prior(comp: Competition, ws: Workspace) -> np.ndarray | None:
    """Class shares of the training labels, from folds.csv (every trained workspace has one): one small CSV read,
    where `train_items` would re-read the labels file and scan the image folders on every `comp check`."""
    if not ws.folds_csv.is_file():
        return None
    try:
        labels = pd.read_csv(ws.folds_csv, dtype=str, keep_default_na=False)["label"]
    except (OSError, KeyError, ValueError, pd.errors.ParserError):
        return None  # a broken folds.csv is `comp folds`'s to report; the warning is a courtesy
    counts = labels.value_counts()
    prior = np.array([counts.get(c, 0) for c in comp.classes], dtype=np.float64)
    return prior / prior.sum() if prior.sum() else None
