"""Stacking must not leak: a blend's CV may never look better than the blend honestly is.

What honest CV can and cannot see. A base model whose OOF logits contain the label of the very row they score
(made by a model that trained on that row) fools every CV of every blend, because the leak sits in the held-out
row's own features; that is refused from provenance instead: logits made on other folds (folds hash) or holding a
fold's training rows are rejected by name (tests/test_stack.py::test_stale_or_mismatched_inputs_are_refused).
What the stacking layer must guarantee on its own is that *it* adds no leak: a model whose OOF logits let a stacker
recall the labels of the stacker's own training rows must not raise the stacker's CV above what the same stacker
scores without that model. These tests build such models and check it with a stacker that can memorise (1-nearest
neighbour), so the leak is real: scored in-sample, or on a shuffled K-fold instead of folds.csv, it would look
far better. The same models are then given to comp's own three methods.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from comp.core import metrics
from comp.ensemble.blend import HillClimbBlend, LogisticStacker, MeanBlend, as_log_probs, honest_predictions

N_CLASSES = 5
TOLERANCE = 0.03  # accuracy noise of one honest CV on 600 rows


class MemorisingStacker(ClassifierMixin, BaseEstimator):
    """1-nearest-neighbour on the models' log-probabilities: it recalls the label of any training row it is shown."""

    def fit(self, X, y):
        self.knn_ = KNeighborsClassifier(n_neighbors=1).fit(X.reshape(len(X), -1), y)
        self.classes_ = np.arange(X.shape[2])
        return self

    def predict_log_proba(self, X):
        proba = np.zeros((len(X), len(self.classes_)))
        proba[:, self.knn_.classes_] = self.knn_.predict_proba(X.reshape(len(X), -1))
        return np.log(np.clip(proba, 1e-9, None))

    def predict(self, X):
        return np.argmax(self.predict_log_proba(X), axis=1)


def accuracy(y, log_probs) -> float:
    return metrics.score("accuracy", y, log_probs)


def honest_model(y: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Honest OOF logits of a weak model (about 55% accurate on 5 classes)."""
    return strength * np.eye(N_CLASSES)[y] + rng.normal(size=(len(y), N_CLASSES))


COMP_METHODS = [MeanBlend(), HillClimbBlend("accuracy"), LogisticStacker()]


def test_a_row_memorising_model_does_not_raise_honest_cv():
    """Model L memorised its training rows: its logits are a fixed code per row (image), with no label signal for a
    row it has not seen. A stacker fitted on rows it can recall by that code looks perfect in-sample."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(N_CLASSES), 120)
    fold = rng.permutation(np.arange(len(y)) % 5)
    good = honest_model(y, rng)
    leaky = 4.0 * rng.normal(size=(len(y), N_CLASSES))  # the row's code
    without, with_leak = as_log_probs([good]), as_log_probs([good, leaky])

    stacker = MemorisingStacker()
    in_sample = accuracy(y, stacker.fit(with_leak, y).predict_log_proba(with_leak))
    honest_without = accuracy(y, honest_predictions(stacker, without, y, fold))
    honest_with = accuracy(y, honest_predictions(stacker, with_leak, y, fold))
    model_alone = accuracy(y, good)  # the good model's own OOF score: nothing fitted
    assert in_sample == 1.0  # the leak is real: scored on its own training rows the stacker is perfect
    assert honest_with <= honest_without + TOLERANCE, (honest_with, honest_without)
    assert honest_with <= model_alone + TOLERANCE, (honest_with, model_alone)

    for method in COMP_METHODS:
        base = accuracy(y, honest_predictions(method, without, y, fold))
        leaked = accuracy(y, honest_predictions(method, with_leak, y, fold))
        assert leaked <= base + TOLERANCE, (type(method).__name__, leaked, base)


def test_duplicates_kept_in_one_fold_stay_unseen_by_the_stacker():
    """Each image appears twice (a near-duplicate pair); folds.csv keeps a pair in one fold, as group folds do, so
    the fold model scores both copies alike. A stacker CV'd on a shuffled K-fold trains on one copy and is scored
    on the other: it recalls the twin's label. On the folds.csv split (PredefinedSplit) it cannot."""
    rng = np.random.default_rng(1)
    n_pairs = 300
    y_pair = rng.integers(0, N_CLASSES, n_pairs)
    fold_pair = rng.permutation(np.arange(n_pairs) % 5)
    good_pair = honest_model(y_pair, rng)
    y, fold = np.repeat(y_pair, 2), np.repeat(fold_pair, 2)
    good = np.repeat(good_pair, 2, axis=0) + 1e-3 * rng.normal(size=(2 * n_pairs, N_CLASSES))
    X = as_log_probs([good])

    stacker = MemorisingStacker()
    shuffled = cross_val_predict(stacker, X, y, cv=KFold(5, shuffle=True, random_state=0),
                                 method="predict_log_proba")
    honest = honest_predictions(stacker, X, y, fold)
    model_alone = accuracy(y, good)
    assert accuracy(y, shuffled) >= model_alone + 0.25  # the shuffled split leaks the twins' labels
    assert accuracy(y, honest) <= model_alone + TOLERANCE, (accuracy(y, honest), model_alone)

    for method in COMP_METHODS:
        assert accuracy(y, honest_predictions(method, X, y, fold)) <= model_alone + TOLERANCE, type(method).__name__


@pytest.mark.parametrize("method", COMP_METHODS, ids=lambda m: type(m).__name__)
def test_no_row_is_predicted_by_an_estimator_that_saw_its_label(method):
    """Flip the labels of one fold: if any estimator scoring that fold had been fitted on it, its predictions there
    would move. Honest predictions for fold k depend only on the other folds' rows."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, N_CLASSES, 500)
    fold = np.arange(500) % 5
    X = as_log_probs([honest_model(y, rng), honest_model(y, rng, 2.0)])
    before = honest_predictions(method, X, y, fold)
    flipped = y.copy()
    flipped[fold == 2] = (flipped[fold == 2] + 1) % N_CLASSES
    after = honest_predictions(method, X, flipped, fold)
    np.testing.assert_allclose(after[fold == 2], before[fold == 2], atol=1e-6)
    assert not np.allclose(after[fold != 2], before[fold != 2], atol=1e-6) or isinstance(method, MeanBlend)
