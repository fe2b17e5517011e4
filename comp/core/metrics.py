"""The competition's metric, by name, computed as the platforms' graders compute it (to 1e-9 on the same file).

Every scorer takes integer labels `y` (n,) and scores (n, C): logits from the models (the common currency; scorers
that need probabilities take a softmax here), or, with `written=True`, the values a submission file holds, which
the graders read as they are: probabilities (binary: the columns [1 - s, s] around the written score s, which may
lie outside [0, 1]), 1/0 for a written label, and for top-k lists minus each listed class's position (0 for the
first) with -inf for the classes not listed.

What the graders do, and so what happens here: AUC ranks the raw scores (a binary file's s as written, a model's
logit margin; nothing is clipped or squashed into [0, 1], which would tie the extremes); log loss is sklearn's,
which clips probabilities to [eps, 1 - eps] with eps the float64 machine epsilon (not 1e-15); MAP@k scores a row's
listed labels only (a list shorter than k is not filled up with the unlisted classes).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from comp.core.errors import CompError


def _skm():
    # sklearn.metrics imported on first use: importing it costs ~1-2 s of a CPU core, and a training run scored by
    # accuracy (most) never needs it; under a short --budget those seconds are training time.
    from sklearn import metrics

    return metrics


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities along `axis`, in float64 (what the probability metrics and submission files need)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Per-class probabilities of a multi-label model (float64), without overflow for large |logits|."""
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(softmax) along `axis` in the input's float precision: float32 stays float32, which halves the time of
    every blend on 50k x 100 inputs (scipy's version upcasts)."""
    z = np.asarray(logits)
    if not np.issubdtype(z.dtype, np.floating):
        z = z.astype(np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def accuracy(y: np.ndarray, z: np.ndarray, written: bool = False) -> float:
    return float(np.mean(np.argmax(z, axis=1) == y))


def f1_micro(y: np.ndarray, z: np.ndarray, written: bool = False) -> float:
    return float(_skm().f1_score(y, np.argmax(z, axis=1), average="micro"))


def f1_macro(y: np.ndarray, z: np.ndarray, written: bool = False) -> float:
    return float(_skm().f1_score(y, np.argmax(z, axis=1), average="macro"))


def log_loss(y: np.ndarray, z: np.ndarray, written: bool = False) -> float:
    """sklearn's log_loss, as the graders call it: probabilities clipped to [eps, 1 - eps] (float64's machine
    epsilon), written rows taken as they are (a file's rows are not renormalised here; `comp check` warns of them)."""
    probs = np.asarray(z, dtype=np.float64) if written else softmax(z)
    return float(_skm().log_loss(y, probs, labels=np.arange(probs.shape[1])))


def _binary_score(z: np.ndarray, written: bool) -> np.ndarray:
    """The one score per row that a binary AUC ranks: the written score itself, or the models' logit margin (a
    softmax would round the extremes to exactly 0 or 1 and tie them)."""
    z = np.asarray(z, dtype=np.float64)
    return z[:, 1] if written else z[:, 1] - z[:, 0]


def roc_auc(y: np.ndarray, z: np.ndarray, written: bool = False) -> float:
    """Binary: AUC of the raw scores. More classes: the mean one-vs-rest AUC of each class's column (sklearn's
    `multi_class="ovr"` macro average, without its demand that written rows sum to 1, which graders do not make)."""
    z = np.asarray(z)
    y = np.asarray(y)
    if z.shape[1] == 2:
        return float(_skm().roc_auc_score(y == 1, _binary_score(z, written)))
    probs = np.asarray(z, dtype=np.float64) if written else softmax(z)
    return float(np.mean([_skm().roc_auc_score(y == c, probs[:, c]) for c in range(probs.shape[1])]))


def weighted_auc(y: np.ndarray, z: np.ndarray, written: bool = False, tpr_bands: tuple[float, ...] = (0.0, 0.4, 1.0),
                 weights: tuple[float, ...] = (2.0, 1.0)) -> float:
    """ROC AUC with the area under TPR 0.4 counted twice (alaska2's metric): each TPR band's area is weighted,
    and the sum divided by its best value, so a perfect ranking scores 1. Class 1 is the positive class (`comp init
    --positive/--negative` orders the classes negative, positive). Exact: the curve is cut where it crosses a band
    edge, so the trapezoids of the clipped curve are the true areas (the competition's kernel pads instead)."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != 2:
        raise CompError(f"weighted_auc scores a binary competition; got {z.shape[1] if z.ndim == 2 else 1} classes "
                        "(set metric = \"roc_auc\", or set up two classes with `comp init --positive/--negative`)")
    fpr, tpr, _ = _skm().roc_curve(np.asarray(y) == 1, _binary_score(z, written))
    cut_f, cut_t = [fpr], [tpr]
    for edge in tpr_bands[1:-1]:  # where a segment crosses the edge: tpr and fpr both grow along the curve
        i = np.flatnonzero((tpr[:-1] < edge) & (tpr[1:] > edge))
        cut_f.append(fpr[i] + (edge - tpr[i]) * (fpr[i + 1] - fpr[i]) / (tpr[i + 1] - tpr[i]))
        cut_t.append(np.full(len(i), edge))
    f, t = np.concatenate(cut_f), np.concatenate(cut_t)
    order = np.lexsort((t, f))
    f, t = f[order], t[order]
    total = best = 0.0
    for lo, hi, w in zip(tpr_bands[:-1], tpr_bands[1:], weights, strict=True):
        band = np.clip(t - lo, 0.0, hi - lo)
        total += w * float(np.sum((f[1:] - f[:-1]) * (band[1:] + band[:-1]) / 2))
        best += w * (hi - lo)
    return total / best


def map_at_k(y: np.ndarray, z: np.ndarray, k: int = 5, written: bool = False) -> float:
    """Mean average precision at k with one true label per row: 1/rank of the truth within the top k, else 0.

    Models' scores rank all classes (ties by class order). A written list ranks only what it lists: the truth's
    rank is its position in the list (from `-z`), and a class not listed (-inf) never scores, however short the
    list, as the graders' `apk` reads it."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y)
    if written:
        at = z[np.arange(len(y)), y]
        rank = np.where(np.isfinite(at), 1.0 - at, np.inf)
        return float(np.mean(np.where(rank <= k, 1.0 / rank, 0.0)))
    top = np.argsort(-z, axis=1, kind="stable")[:, :k]
    hit = top == y[:, None]
    ranks = np.argmax(hit, axis=1) + 1
    return float(np.mean(np.where(hit.any(axis=1), 1.0 / ranks, 0.0)))


def _multi_hot(y: np.ndarray, logits: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 2 or y.shape != np.shape(logits):
        raise CompError(f"metric {name} scores multi-label targets (one 0/1 column per class); these are single-label "
                        "(set kind = \"tags\" or \"multilabel_probs\" in comp.toml, or another metric)")
    return y.astype(bool)


def f_beta_samples(y: np.ndarray, logits: np.ndarray, beta: float = 2.0, written: bool = False) -> float:
    """F-beta of each image's predicted tag set (logit > 0, i.e. probability > 0.5) against its true set, averaged
    over images (Planet's F2); equal to sklearn's fbeta_score(average="samples"), an image with neither true nor
    predicted tags scoring 0 as there. numpy, not sklearn: the threshold search calls it thousands of times."""
    truth = _multi_hot(y, logits, f"f{beta:g}_samples")
    pred = np.asarray(logits) > (0.5 if written else 0)  # a written tag list reads as 1/0 per class
    tp = (truth & pred).sum(axis=1)
    b2 = beta * beta
    denominator = b2 * truth.sum(axis=1) + pred.sum(axis=1)
    f = np.divide((1 + b2) * tp, denominator, out=np.zeros(len(tp), dtype=np.float64), where=denominator > 0)
    return float(f.mean()) if len(f) else float("nan")


def mean_column_auc(y: np.ndarray, logits: np.ndarray, written: bool = False) -> float:
    """ROC AUC of each class column (sklearn's roc_auc_score), averaged over the columns; a column whose truth is all
    0 or all 1 has no AUC and is left out (NaN when every column is)."""
    truth = _multi_hot(y, logits, "mean_column_auc")
    z = np.asarray(logits, dtype=np.float64)
    scores = [_skm().roc_auc_score(truth[:, c], z[:, c]) for c in range(truth.shape[1])
              if 0 < truth[:, c].sum() < len(truth)]
    return float(np.mean(scores)) if scores else float("nan")


def qwk(y: np.ndarray, z: np.ndarray, written: bool = False) -> float:
    """Quadratic weighted kappa, for ordinal classes (class index order is the ordinal order)."""
    return float(_skm().cohen_kappa_score(y, np.argmax(z, axis=1), weights="quadratic"))


# name -> (scorer, greater is better)
METRICS: dict[str, tuple[Callable[..., float], bool]] = {
    "accuracy": (accuracy, True),
    "f1_micro": (f1_micro, True),
    "f1_macro": (f1_macro, True),
    "log_loss": (log_loss, False),
    "roc_auc": (roc_auc, True),
    "weighted_auc": (weighted_auc, True),
    "map@k": (map_at_k, True),
    "qwk": (qwk, True),
    "f2_samples": (f_beta_samples, True),
    "mean_column_auc": (mean_column_auc, True),
}
_F_BETA = re.compile(r"f([0-9]+(?:\.[0-9]+)?)_samples")  # f<beta>_samples: F-beta over images, any beta > 0


def f_beta_of(name: str) -> float | None:
    """The beta of an F-beta-over-samples metric name (`f2_samples` -> 2.0), else None."""
    found = _F_BETA.fullmatch(name.lower())
    return float(found.group(1)) if found and float(found.group(1)) > 0 else None


def _lookup(name: str) -> tuple[Callable[..., float], bool]:
    key = name.lower()
    if key.startswith("map@") and key != "map@k":
        k = int(key[4:])
        return (lambda y, z, written=False: map_at_k(y, z, k, written)), True
    beta = _F_BETA.fullmatch(key)
    if beta and float(beta.group(1)) > 0:
        return (lambda y, z, written=False: f_beta_samples(y, z, float(beta.group(1)), written)), True
    if key not in METRICS:
        raise CompError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)} (or map@N, f<beta>_samples)")
    return METRICS[key]


def score(name: str, y: np.ndarray, z: np.ndarray, top_k: int = 5, written: bool = False) -> float:
    """Score `z` against integer labels `y` with the metric called `name` ("map@k" uses `top_k`): logits, or with
    `written` the values of a submission file (see the module doc)."""
    if name.lower() == "map@k":
        return map_at_k(np.asarray(y), np.asarray(z), top_k, written)
    fn, _ = _lookup(name)
    return fn(np.asarray(y), np.asarray(z), written=written)


def fold_scores(metric: str, y: np.ndarray, logits: np.ndarray, fold: np.ndarray, top_k: int = 5) -> dict:
    """CV of out-of-fold `logits`: the metric per fold, their mean and std, and the metric on the whole OOF."""
    fold = np.asarray(fold)
    per_fold = [score(metric, y[fold == k], logits[fold == k], top_k) for k in np.unique(fold)]
    return {
        "per_fold": per_fold,
        "mean": float(np.mean(per_fold)),
        "std": float(np.std(per_fold)),
        "oof": score(metric, y, logits, top_k),
    }


def greater_is_better(name: str) -> bool:
    return _lookup(name)[1]


def is_better(name: str, new: float, old: float | None) -> bool:
    if old is None or np.isnan(old):
        return not np.isnan(new)
    return new > old if greater_is_better(name) else new < old
