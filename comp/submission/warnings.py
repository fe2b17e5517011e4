"""The warnings of `comp check`: a file the platform will score, but whose predictions look wrong (one class
everywhere, a class mix far from the training prior, hard labels under ROC AUC)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from comp.core.config import Competition
from comp.core.workspace import Workspace
from comp.submission.parse import INTEGER, SHOW, labels_of

RANK_METRICS = ("roc_auc", "weighted_auc")  # metrics that read only the order of a binary score


def distribution_warnings(comp: Competition, ws: Workspace, cols: list[str], values: np.ndarray,
                           numbers: np.ndarray | None) -> list[str]:
    """A collapsed model (one class everywhere) or a class mix far from the training prior (often a label-order bug:
    torchvision's ImageFolder sorts "10" before "2")."""
    if len(values) < 2 or comp.num_classes < 2:
        return []
    predicted = _predicted_classes(comp, cols, values, numbers)
    labels = labels_of(comp)
    warnings = []
    if comp.kind in ("binary", "class_probs") and (values == values[0]).all():
        shown = ",".join(values[0].tolist()[:SHOW]) + (",..." if values.shape[1] > SHOW else "")
        warnings.append(f"every row holds the same probabilities ({shown}): is this the sample itself?")
    elif predicted is not None and len(set(predicted)) == 1:
        warnings.append(f"every row predicts {labels[predicted[0]]!r}: a collapsed model, or the sample itself?")
    if comp.kind == "binary" and comp.metric in RANK_METRICS and np.isin(numbers, (0.0, 1.0)).all():
        warnings.append("every value is 0 or 1: hard labels throw away the ranking ROC AUC scores; write the "
                        "probabilities instead")
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


def _predicted_classes(comp: Competition, cols: list[str], values: np.ndarray,
                       numbers: np.ndarray | None) -> np.ndarray | None:
    """The class index each row predicts (its label, its first top-k label, its most likely column)."""
    labels = labels_of(comp)
    if comp.kind == "binary":
        pos = comp.positive_class if comp.positive_class in comp.classes else comp.classes[-1]
        p = comp.classes.index(pos)
        if comp.num_classes != 2 or comp.metric in RANK_METRICS or numbers.min() < 0 or numbers.max() > 1:
            return None  # under AUC only the order counts: a 0.5 threshold says nothing about the model
        return np.where(numbers[:, 0] > 0.5, p, 1 - p)
    if comp.kind == "class_probs":
        index = {x: j for j, x in enumerate(labels)}
        if not all(c in index for c in cols):
            return None
        return np.array([index[cols[j]] for j in numbers.argmax(axis=1)])
    index = {x: j for j, x in enumerate(labels)}
    if comp.kind == "class_id":
        index = {str(int(x)): j for j, x in enumerate(labels) if INTEGER.fullmatch(x)}
        cells = [str(int(v)) for v in values[:, 0].tolist()]
    elif comp.kind == "topk":
        cells = [v.split(" ")[0] for v in values[:, 0].tolist()]
    else:  # a class name may hold spaces ('Loose Silky-bent'): the whole cell is the class
        cells = values[:, 0].tolist()
    return np.array([index[v] for v in cells]) if all(v in index for v in cells) else None


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
