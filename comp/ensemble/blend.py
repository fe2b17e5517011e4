"""Blending methods as scikit-learn estimators, and their honest cross-validation.

Every estimator takes `X` of shape (n, M, C): the log-probabilities of M models for n rows over C classes, and
integer labels `y` (n,). `__init__` only stores parameters, `fit` returns self, learned state ends in `_`, and
`predict_log_proba` returns blended log-probabilities (valid logits for `comp.core.metrics.score`). Because they are
real estimators, `honest_predictions` can score them with `cross_val_predict` on a `PredefinedSplit` built from
folds.csv: every row is predicted by an estimator that never saw that row's label.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import PredefinedSplit, cross_val_predict

from comp.core import metrics
from comp.core.errors import CompError
from comp.core.metrics import log_softmax


def as_log_probs(logits: list[np.ndarray]) -> np.ndarray:
    """Stack M models' (n, C) logits into (n, M, C) log-probabilities, so models with different logit scales meet
    on one footing (a mean of log-probabilities is a normalised geometric mean of probabilities)."""
    stacked = np.stack([np.asarray(z, dtype=np.float32) for z in logits], axis=1)
    return log_softmax(stacked, axis=2)


def _check_X(X: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)  # log-probabilities need no more precision; halves memory traffic
    if X.ndim != 3:
        raise CompError(f"blend input must be (rows, models, classes) log-probabilities, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise CompError("blend input holds NaN or infinite logits; re-create the offending model's logits")
    if y is not None and len(y) != len(X):
        raise CompError(f"blend input has {len(X)} rows but {len(y)} labels")
    return X


class _Blend(ClassifierMixin, BaseEstimator):
    """Shared prediction plumbing: subclasses set `classes_` and implement `_blend(X) -> (n, C) scores`."""

    def _start_fit(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = _check_X(X, y)
        y = np.asarray(y, dtype=np.int64)
        # Classes are the logits columns, not whatever labels this training subset happens to contain.
        self.classes_ = np.arange(X.shape[2])
        self.n_models_ = X.shape[1]
        return X, y

    def _blend(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_log_proba(self, X: np.ndarray) -> np.ndarray:
        return log_softmax(self._blend(_check_X(X)))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self._blend(_check_X(X)), axis=1)]


class MeanBlend(_Blend):
    """Equal-weight mean of the models' log-probabilities; nothing is learned from labels."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> MeanBlend:
        X, _ = self._start_fit(X, y)
        self.weights_ = np.full(X.shape[1], 1.0 / X.shape[1])
        return self

    def _blend(self, X: np.ndarray) -> np.ndarray:
        return _models_last(X) @ self.weights_.astype(np.float32)


class HillClimbBlend(_Blend):
    """Caruana et al. (2004) ensemble selection with replacement, on the competition metric.

    Starts from the best single model and repeatedly adds (with replacement) the model whose addition most improves
    the metric of the running mean of log-probabilities; stops after `max_iter` additions or when no addition
    improves. `weights_` are the selection counts normalised to sum to 1.
    """

    def __init__(self, metric: str = "accuracy", top_k: int = 5, max_iter: int = 50):
        self.metric = metric  # comp.core.metrics name the selection optimises
        self.top_k = top_k  # k of map@k
        self.max_iter = max_iter  # most models added after the first

    def fit(self, X: np.ndarray, y: np.ndarray) -> HillClimbBlend:
        X, y = self._start_fit(X, y)
        n_models = X.shape[1]

        def score(blend_sum: np.ndarray, count: int) -> float:
            return metrics.score(self.metric, y, blend_sum / count, self.top_k)

        singles = [score(X[:, m], 1) for m in range(n_models)]
        best_m = _argbest(self.metric, singles)
        counts = np.zeros(n_models, dtype=np.int64)
        counts[best_m] = 1
        running, best_score = X[:, best_m].copy(), singles[best_m]
        for _ in range(self.max_iter if n_models > 1 else 0):
            total = int(counts.sum()) + 1
            trial = [score(running + X[:, m], total) for m in range(n_models)]
            m = _argbest(self.metric, trial)
            if not metrics.is_better(self.metric, trial[m], best_score):
                break
            counts[m] += 1
            running += X[:, m]
            best_score = trial[m]
        self.counts_ = counts
        self.weights_ = counts / counts.sum()
        self.train_score_ = best_score
        return self

    def _blend(self, X: np.ndarray) -> np.ndarray:
        return _models_last(X) @ self.weights_.astype(np.float32)


def _argbest(metric: str, values: list[float]) -> int:
    # First best wins ties, so the earlier (simpler) candidate is kept.
    order = np.asarray(values) if metrics.greater_is_better(metric) else -np.asarray(values)
    return int(np.argmax(order))


class LogisticStacker(_Blend):
    """Multinomial logistic regression on the models' log-probabilities: score_c = sum_m w_m * logp_mc + b_c.

    Coefficients are tied across classes (one weight per model, or per model and class with `per_class`), which is
    the parametrisation that stays cheap and hard to overfit with 100+ classes: a free (M*C x C) coefficient matrix
    has 30,000 parameters for 3 models x 100 classes and memorises small OOF sets. Fitted by L-BFGS on the mean
    log loss plus an L2 penalty `||theta||^2 / (2 * C * n)` (sklearn's convention for `C`). The weights also act as
    a temperature, so the output is calibrated by construction.
    """

    def __init__(self, C: float = 1.0, per_class: bool = False, max_iter: int = 200):
        self.C = C  # inverse L2 strength, as in sklearn's LogisticRegression
        self.per_class = per_class  # one weight per (model, class) instead of per model
        self.max_iter = max_iter  # L-BFGS iterations

    def fit(self, X: np.ndarray, y: np.ndarray) -> LogisticStacker:
        X, y = self._start_fit(X, y)
        n, n_models, n_classes = X.shape
        w_shape = (n_models, n_classes) if self.per_class else (n_models,)
        n_w = int(np.prod(w_shape))
        rows = np.arange(n)
        l2 = 1.0 / (self.C * n)
        Xt = _models_last(X)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:n_w].reshape(w_shape), theta[n_w:]
            # Softmax, loss and gradient in place on one (n, C) buffer: this loop is the cost of the whole stack.
            dz = self._scores(Xt, w, b)
            dz -= dz.max(axis=1, keepdims=True)
            picked = dz[rows, y].astype(np.float64)
            np.exp(dz, out=dz)
            total = dz.sum(axis=1, dtype=np.float64)
            loss = float(np.mean(np.log(total) - picked)) + 0.5 * l2 * float(theta @ theta)
            dz *= (1.0 / (total * n)).astype(np.float32)[:, None]  # softmax / n
            dz[rows, y] -= np.float32(1.0 / n)
            if self.per_class:
                dw = np.einsum("nc,ncm->mc", dz, Xt)
            else:  # one BLAS matrix-vector product over all (row, class) pairs
                dw = Xt.reshape(-1, n_models).T @ dz.reshape(-1)
            grad = np.concatenate([np.ravel(dw), dz.sum(axis=0)]).astype(np.float64) + l2 * theta
            return loss, grad

        theta0 = np.concatenate([np.full(n_w, 1.0 / n_models), np.zeros(n_classes)])
        result = minimize(objective, theta0, jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter})
        self.coef_ = result.x[:n_w].reshape(w_shape)
        self.intercept_ = result.x[n_w:]
        self.n_iter_ = int(result.nit)
        return self

    @staticmethod
    def _scores(Xt: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        w32, b32 = w.astype(np.float32), b.astype(np.float32)
        if w.ndim == 2:
            return np.einsum("ncm,mc->nc", Xt, w32) + b32
        return Xt @ w32 + b32

    def _blend(self, X: np.ndarray) -> np.ndarray:
        return self._scores(_models_last(X), self.coef_, self.intercept_)

    @property
    def weights_(self) -> np.ndarray:
        """Each model's share of the total weight (for reports); per-class weights are averaged over classes."""
        w = self.coef_ if self.coef_.ndim == 1 else self.coef_.mean(axis=1)
        return w / w.sum() if abs(w.sum()) > 1e-12 else w


def _models_last(X: np.ndarray) -> np.ndarray:
    """(n, M, C) -> contiguous (n, C, M), so a blend over models is one matrix-vector product."""
    return np.ascontiguousarray(X.transpose(0, 2, 1))


class TemperatureScaled(ClassifierMixin, BaseEstimator):
    """`estimator`, then one temperature T fitted on its training rows to minimise log loss: log_softmax(z / T).

    Wrapped as one estimator so `cross_val_predict` refits T inside every fold: the CV of a calibrated blend is as
    honest as the blend's.
    """

    def __init__(self, estimator: BaseEstimator | None = None):
        self.estimator = estimator  # the blend to calibrate (any estimator with predict_log_proba)

    def fit(self, X: np.ndarray, y: np.ndarray) -> TemperatureScaled:
        self.estimator_ = clone(self.estimator if self.estimator is not None else MeanBlend()).fit(X, y)
        self.classes_ = self.estimator_.classes_
        self.temperature_ = fit_temperature(self.estimator_.predict_log_proba(X), np.asarray(y, dtype=np.int64))
        return self

    def predict_log_proba(self, X: np.ndarray) -> np.ndarray:
        return log_softmax(self.estimator_.predict_log_proba(X) / np.float32(self.temperature_))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.estimator_.predict(X)  # a temperature never changes the argmax

    @property
    def weights_(self) -> np.ndarray:
        return self.estimator_.weights_


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the log loss of softmax(logits / T) (bounded search on log T)."""
    z = np.asarray(logits, dtype=np.float32)
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-np.mean(log_softmax(z / np.float32(np.exp(log_t)))[rows, y], dtype=np.float64))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def honest_predictions(estimator: BaseEstimator, X: np.ndarray, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Out-of-fold log-probabilities of `estimator`: row i comes from a clone fitted on the rows of every other
    fold of folds.csv (`PredefinedSplit(fold)`), never on row i."""
    y = np.asarray(y, dtype=np.int64)
    missing = np.setdiff1d(np.arange(X.shape[2]), y)
    if len(missing):
        # cross_val_predict re-encodes labels to the ones present, which would shift every column after a gap.
        raise CompError(
            f"class index(es) {missing.tolist()} have no row in the OOF labels; every class in comp.toml needs at "
            "least one training image (drop the class from comp.toml `classes`, or add images)"
        )
    return cross_val_predict(estimator, X, y, cv=PredefinedSplit(np.asarray(fold)), method="predict_log_proba")


def probabilities(log_probs: np.ndarray) -> np.ndarray:
    """Blended log-probabilities (n, C) as float64 probabilities, for the submission."""
    return metrics.softmax(log_probs, axis=1)


# ---------------------------------------------------------------------------------------------------------------
# Multi-label blends: X (n, M, C) holds each model's per-class logits (log-odds), y (n, C) is 0/1. Every class is
# its own binary problem, so blends act per class; the output of `predict_logits` is per-class logits again.


def blend_inputs(logits: list[np.ndarray], multilabel: bool) -> np.ndarray:
    """M models' (n, C) logits as the (n, M, C) input of a blend: log-probabilities for single-label models, the
    per-class log-odds themselves for multi-label ones (their mean is a per-class geometric mean of the odds)."""
    if not multilabel:
        return as_log_probs(logits)
    return np.stack([np.asarray(z, dtype=np.float32) for z in logits], axis=1)


class MultiLabelLogistic(BaseEstimator):
    """Per-class logistic regression on the models' logits of that class: logit_c = sum_m w_mc * z_mc + b_c, one
    small L2-regularised fit per class (sklearn's LogisticRegression), so each class gets its own model weights and
    calibration. A class with one value in the training rows keeps the mean of the models."""

    def __init__(self, C: float = 1.0):
        self.C = C  # inverse L2 strength, as in sklearn's LogisticRegression

    def fit(self, X: np.ndarray, y: np.ndarray) -> MultiLabelLogistic:
        from sklearn.linear_model import LogisticRegression

        X, y = _check_X(X), np.asarray(y)
        n_models, n_classes = X.shape[1], X.shape[2]
        self.coef_ = np.full((n_classes, n_models), 1.0 / n_models)
        self.intercept_ = np.zeros(n_classes)
        for c in range(n_classes):
            if 0 < y[:, c].sum() < len(y):
                fit = LogisticRegression(C=self.C, max_iter=200).fit(X[:, :, c], y[:, c])
                self.coef_[c], self.intercept_[c] = fit.coef_[0], fit.intercept_[0]
        self.n_models_ = n_models
        return self

    def predict_logits(self, X: np.ndarray) -> np.ndarray:
        X = _check_X(X)
        return np.einsum("nmc,cm->nc", X, self.coef_.astype(np.float32)) + self.intercept_.astype(np.float32)

    @property
    def weights_(self) -> np.ndarray:
        w = self.coef_.mean(axis=0)
        return w / w.sum() if abs(w.sum()) > 1e-12 else w


class Thresholded(BaseEstimator):
    """`estimator`, then one decision threshold per class fitted on its training rows to maximise F-beta over
    samples (the tags a row writes are the classes over their threshold). Output logits are shifted so that the
    threshold sits at 0: `predict_logits(X) > 0` are the written tags. Wrapped as one estimator so the honest CV
    refits the thresholds inside every fold, nested in the same folds as the blend."""

    def __init__(self, estimator: BaseEstimator | None = None, beta: float = 2.0, passes: int = 2):
        self.estimator = estimator  # a multi-label blend with predict_logits
        self.beta = beta
        self.passes = passes  # rounds of per-class coordinate ascent

    def fit(self, X: np.ndarray, y: np.ndarray) -> Thresholded:
        self.estimator_ = clone(self.estimator if self.estimator is not None else MeanBlend()).fit(X, y)
        self.offsets_ = fit_thresholds(_logits_of(self.estimator_, X), np.asarray(y), self.beta, self.passes)
        return self

    def predict_logits(self, X: np.ndarray) -> np.ndarray:
        return _logits_of(self.estimator_, X) - self.offsets_.astype(np.float32)

    @property
    def weights_(self) -> np.ndarray:
        return self.estimator_.weights_


THRESHOLD_GRID = np.log(np.linspace(0.02, 0.98, 49) / (1 - np.linspace(0.02, 0.98, 49)))  # logits of 0.02..0.98


def fit_thresholds(z: np.ndarray, y: np.ndarray, beta: float = 2.0, passes: int = 2) -> np.ndarray:
    """Per-class logit offsets (thresholds) maximising the mean F-beta over rows of `z - offsets > 0` against `y`.

    Coordinate ascent (one class at a time, the others held, over THRESHOLD_GRID), started from 0 (probability 0.5);
    each trial is O(n): a row's F-beta needs only its true-positive, predicted and true counts, and one class
    changes two of them by its own column. A tie keeps the earlier (lower) candidate, so results are reproducible."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y).astype(bool)
    b2 = beta * beta
    offsets = np.zeros(z.shape[1])
    pred = z > offsets
    t = y.sum(axis=1)
    for _ in range(passes):
        changed = False
        for c in range(z.shape[1]):
            tp_rest = (pred & y).sum(axis=1) - (pred[:, c] & y[:, c])
            p_rest = pred.sum(axis=1) - pred[:, c]
            best, best_score = offsets[c], -1.0
            for cand in THRESHOLD_GRID if offsets[c] in THRESHOLD_GRID else (offsets[c], *THRESHOLD_GRID):
                col = z[:, c] > cand
                tp, p = tp_rest + (col & y[:, c]), p_rest + col
                den = b2 * t + p
                f = np.divide((1 + b2) * tp, den, out=np.zeros(len(tp)), where=den > 0).mean()
                if f > best_score + 1e-12:
                    best, best_score = cand, f
            changed |= best != offsets[c]
            offsets[c] = best
            pred[:, c] = z[:, c] > best
        if not changed:
            break
    return offsets


def _logits_of(estimator: BaseEstimator, X: np.ndarray) -> np.ndarray:
    """Per-class logits of a multi-label estimator (mean and hill-climb blends give their weighted mean)."""
    if hasattr(estimator, "predict_logits"):
        return estimator.predict_logits(X)
    return estimator._blend(_check_X(X))


def predict_logits(estimator: BaseEstimator, X: np.ndarray, multilabel: bool) -> np.ndarray:
    """A fitted blend's output as logits: log-probabilities (single-label) or per-class logits (multi-label)."""
    return _logits_of(estimator, X) if multilabel else estimator.predict_log_proba(X)


def honest_logits(estimator: BaseEstimator, X: np.ndarray, y: np.ndarray, fold: np.ndarray,
                  multilabel: bool) -> np.ndarray:
    """`honest_predictions` for either kind of target: row i from a clone fitted on every other fold's rows."""
    if not multilabel:
        return honest_predictions(estimator, X, y, fold)
    fold = np.asarray(fold)
    out = np.zeros((X.shape[0], X.shape[2]), dtype=np.float32)
    for k in np.unique(fold):
        held = fold == k
        out[held] = _logits_of(clone(estimator).fit(X[~held], y[~held]), X[held])
    return out
