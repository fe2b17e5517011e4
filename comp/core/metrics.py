"""The competition's metric, by name. Every scorer takes integer labels `y` (n,) and logits (n, C).

Logits, not probabilities, are the common currency; scorers that need probabilities take a softmax here so callers
never have to remember which metric wants what.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn import metrics as skm

from comp.core.errors import CompError


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(y: np.ndarray, logits: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == y))


def f1_micro(y: np.ndarray, logits: np.ndarray) -> float:
    return float(skm.f1_score(y, np.argmax(logits, axis=1), average="micro"))


def f1_macro(y: np.ndarray, logits: np.ndarray) -> float:
    return float(skm.f1_score(y, np.argmax(logits, axis=1), average="macro"))


def log_loss(y: np.ndarray, logits: np.ndarray) -> float:
    # Kaggle clips probabilities to [1e-15, 1 - 1e-15] and renormalises rows; sklearn's log_loss does the same.
    probs = softmax(logits)
    return float(skm.log_loss(y, probs, labels=np.arange(probs.shape[1])))


def roc_auc(y: np.ndarray, logits: np.ndarray) -> float:
    probs = softmax(logits)
    if probs.shape[1] == 2:
        return float(skm.roc_auc_score(y, probs[:, 1]))
    return float(skm.roc_auc_score(y, probs, multi_class="ovr", labels=np.arange(probs.shape[1])))


def map_at_k(y: np.ndarray, logits: np.ndarray, k: int = 5) -> float:
    """Mean average precision at k with one true label per row: 1/rank of the truth within the top k, else 0."""
    top = np.argsort(-np.asarray(logits), axis=1, kind="stable")[:, :k]
    hit = top == np.asarray(y)[:, None]
    ranks = np.argmax(hit, axis=1) + 1
    return float(np.mean(np.where(hit.any(axis=1), 1.0 / ranks, 0.0)))


def qwk(y: np.ndarray, logits: np.ndarray) -> float:
    """Quadratic weighted kappa, for ordinal classes (class index order is the ordinal order)."""
    return float(skm.cohen_kappa_score(y, np.argmax(logits, axis=1), weights="quadratic"))


# name -> (scorer, greater is better)
METRICS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], float], bool]] = {
    "accuracy": (accuracy, True),
    "f1_micro": (f1_micro, True),
    "f1_macro": (f1_macro, True),
    "log_loss": (log_loss, False),
    "roc_auc": (roc_auc, True),
    "map@k": (map_at_k, True),
    "qwk": (qwk, True),
}


def _lookup(name: str) -> tuple[Callable[[np.ndarray, np.ndarray], float], bool]:
    key = name.lower()
    if key.startswith("map@") and key != "map@k":
        k = int(key[4:])
        return (lambda y, z: map_at_k(y, z, k)), True
    if key not in METRICS:
        raise CompError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)} (or map@N)")
    return METRICS[key]


def score(name: str, y: np.ndarray, logits: np.ndarray, top_k: int = 5) -> float:
    """Score `logits` against integer labels `y` with the metric called `name` ("map@k" uses `top_k`)."""
    if name.lower() == "map@k":
        return map_at_k(np.asarray(y), np.asarray(logits), top_k)
    fn, _ = _lookup(name)
    return fn(np.asarray(y), np.asarray(logits))


def greater_is_better(name: str) -> bool:
    return _lookup(name)[1]


def is_better(name: str, new: float, old: float | None) -> bool:
    if old is None or np.isnan(old):
        return not np.isnan(new)
    return new > old if greater_is_better(name) else new < old
