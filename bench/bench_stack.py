"""`comp stack` at scale: 50,000 OOF rows x 3 models x 100 classes, every method scored with honest CV.

Harness: the whole `comp.ensemble.stack.stack` call in a throwaway workspace (load and check 30 logits files, honest
5-fold CV of the mean, hill-climbing weights and the logistic stacker, refit of the best, a 10,000-row submission
written and checked). Target: <= 30 s on a 2-core CPU.
Baseline: the usual recipe, scikit-learn's default `LogisticRegression` on the raw concatenated logits (300
features) scored with `cross_val_predict` on the same folds. One of its five fold fits is timed and multiplied by
five (the full run takes minutes), so its figure is an estimate; its fold accuracy is printed beside ours.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd

from bench.common import Result, temp_workspace, timed

N_ROWS, N_MODELS, N_CLASSES, N_TEST = 50_000, 3, 100, 10_000


def _make_workspace(root):
    """A csv-layout workspace (labels + sample, no images) with folds and three models' logits files."""
    from comp import logits
    from comp.core.config import Competition
    from comp.core.workspace import Workspace
    from comp.folds import make_folds

    rng = np.random.default_rng(0)
    ws = Workspace(root)
    (root / "data").mkdir()
    classes = [f"c{i:03d}" for i in range(N_CLASSES)]
    y = rng.integers(0, N_CLASSES, N_ROWS)
    y_test = rng.integers(0, N_CLASSES, N_TEST)
    pd.DataFrame({"id": [f"{i:06d}" for i in range(N_ROWS)], "label": np.array(classes)[y]}).to_csv(
        root / "data" / "train.csv", index=False)
    test_ids = [f"t{i:06d}" for i in range(N_TEST)]
    pd.DataFrame({"id": test_ids, "label": classes[0]}).to_csv(root / "data" / "sample.csv", index=False)
    competition = Competition(name="bench", train_dirs=["data/train"], labels_csv="data/train.csv",
                              test_dir="data/test", sample_submission="data/sample.csv", classes=classes,
                              submission_labels=classes, n_folds=5)
    ws.save(competition)
    folds, _ = make_folds(competition, ws)
    index = {c: i for i, c in enumerate(classes)}
    y = folds.frame["label"].map(index).to_numpy()
    fold = folds.frame["fold"].to_numpy()
    ids = folds.frame["id"].to_numpy()
    oofs = []
    for m in range(N_MODELS):
        # Models of different skill and confidence, with correlated errors: what a real blend sees.
        def noisy(labels, seed, m=m):
            r = np.random.default_rng(seed)
            return ((1.0 + 0.5 * m) * np.eye(N_CLASSES)[labels] + 1.5 * r.normal(size=(len(labels), N_CLASSES))
                    ).astype(np.float32) * (1 + m)

        oof, test = noisy(y, 10 + m), noisy(y_test, 20 + m)
        oofs.append(oof)
        for k in range(5):
            meta = {"folds_hash": folds.hash, "fold": k, "tta": "none", "model": f"m{m}"}
            logits.save(ws.run(f"m{m}", k).oof, logits.Logits(ids[fold == k], oof[fold == k], classes, meta))
            logits.save(ws.run(f"m{m}", k).test, logits.Logits(test_ids, test, classes, meta))
    return competition, ws, y, fold, np.concatenate(oofs, axis=1)


def _baseline_one_fold(X: np.ndarray, y: np.ndarray, fold: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its default max_iter warns on unscaled logits; that is the point
        start = time.perf_counter()
        model = LogisticRegression().fit(X[fold != 0], y[fold != 0])
        accuracy = float(np.mean(model.predict(X[fold == 0]) == y[fold == 0]))
    return time.perf_counter() - start, accuracy


def run() -> list[Result]:
    from comp.ensemble.stack import stack

    with temp_workspace() as root:
        competition, ws, y, fold, raw = _make_workspace(root)
        result = None

        def harness():
            nonlocal result
            result = stack(competition, ws, None, "best", "bench")

        seconds = timed(harness)
        fold_seconds, base_acc = _baseline_one_fold(raw, y, fold)
    table = result.table
    ours = table[result.method]["per_fold"][0]
    detail = (
        f"{N_ROWS} rows x {N_MODELS} models x {N_CLASSES} classes, 5 folds, {N_TEST} test rows; comp stack "
        f"{seconds:.1f} s in all (target <= 30 s), chose {result.method}; CV accuracy "
        + ", ".join(f"{k} {v['oof']:.4f}" for k, v in table.items())
        + f"; baseline default LogisticRegression one fold fit {fold_seconds:.1f} s (x5 = {5 * fold_seconds:.0f} s), "
        f"fold-0 accuracy {base_acc:.4f} vs ours {ours:.4f}"
    )
    return [Result.from_seconds("stack_honest_cv", seconds, 5 * fold_seconds,
                                "comp stack, 3 methods honest CV vs default LogisticRegression CV", detail=detail)]


if __name__ == "__main__":
    for r in run():
        print(r.line())
        print("  " + r.detail)
