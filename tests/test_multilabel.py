"""Multi-label competitions end to end: a Planet-style tags competition and a per-class probability competition,
generated here (32 px images whose tags are coloured patches), go init -> verify -> folds -> train (tiny) -> stack
-> check -> score, and the scores equal sklearn's on the written files. Also: iterative stratification keeps every
tag's share in every fold, the thresholds of a tags stack are fitted inside the CV folds, and the BCE objective
with label smoothing and mixup trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from comp.core import metrics
from comp.ensemble import blend
from comp.folds import assign_folds

TAGS = ("clear", "haze", "primary", "road", "water")


def _image(rng: np.random.Generator, tags: set[int], size: int = 32) -> np.ndarray:
    """Noise with one bright patch per tag, each tag at its own place and colour: learnable in a few epochs."""
    img = rng.normal(90, 25, size=(size, size, 3))
    for t in tags:
        r, c = divmod(t, 3)
        colour = np.array([(t * 97) % 256, (t * 53 + 80) % 256, (t * 151 + 40) % 256])
        img[r * 11 : r * 11 + 10, c * 11 : c * 11 + 10] = colour
    return np.clip(img, 0, 255).astype(np.uint8)


def _tag_sets(rng: np.random.Generator, n: int) -> list[set[int]]:
    sets = []
    for _ in range(n):
        chosen = {t for t in range(len(TAGS)) if rng.random() < 0.4}
        sets.append(chosen or {int(rng.integers(len(TAGS)))})  # every image has a tag, as in Planet
    return sets


def make_multilabel_competition(root: Path, per_class_columns: bool, n_train: int = 60, n_test: int = 20,
                                seed: int = 0) -> tuple[Path, Path]:
    """Planet's layout (train-jpg/, train_v2.csv image_name,tags; test-jpg/, sample_submission_v2.csv) or, with
    `per_class_columns`, a sample with one probability column per tag. Returns (data folder, answers CSV)."""
    rng = np.random.default_rng(seed)
    (root / "train-jpg").mkdir(parents=True)
    (root / "test-jpg").mkdir()
    rows = []
    for i, tags in enumerate(_tag_sets(rng, n_train)):
        Image.fromarray(_image(rng, tags)).save(root / "train-jpg" / f"train_{i}.png")
        rows.append((f"train_{i}", " ".join(TAGS[t] for t in sorted(tags))))
    pd.DataFrame(rows, columns=["image_name", "tags"]).to_csv(root / "train_v2.csv", index=False)
    answers = []
    for i, tags in enumerate(_tag_sets(rng, n_test)):
        Image.fromarray(_image(rng, tags)).save(root / "test-jpg" / f"test_{i}.png")
        answers.append((f"test_{i}", " ".join(TAGS[t] for t in sorted(tags))))
    ids = [a[0] for a in answers]
    if per_class_columns:
        sample = pd.DataFrame({"image_name": ids, **{t: 0.5 for t in TAGS}})
    else:
        sample = pd.DataFrame({"image_name": ids, "tags": "primary clear water"})
    sample.to_csv(root / "sample_submission_v2.csv", index=False)
    answers_csv = root.parent / f"{root.name}_answers.csv"
    pd.DataFrame(answers, columns=["image_name", "tags"]).to_csv(answers_csv, index=False)
    return root, answers_csv


def _multi_hot(cells: pd.Series) -> np.ndarray:
    return np.array([[t in str(v).split() for t in TAGS] for v in cells], dtype=int)


@pytest.mark.slow
@pytest.mark.parametrize("per_class_columns", [False, True], ids=["tags", "multilabel_probs"])
def test_a_multilabel_competition_end_to_end(per_class_columns, workspace, cli):
    from sklearn.metrics import fbeta_score, roc_auc_score

    data, answers = make_multilabel_competition(workspace / "data" / "planet", per_class_columns)
    code, out = cli("init", str(data), "--n-folds", "3")
    assert code == 0, out
    kind = "multilabel_probs" if per_class_columns else "tags"
    assert f"│ kind │ {kind} │" in out and "multi-label: the labels are sets of 5 tags" in out
    counts = _multi_hot(pd.read_csv(data / "train_v2.csv")["tags"]).sum(axis=0)
    assert f"clear {counts[0]}, haze {counts[1]}" in out  # images per tag, not per combination
    assert cli("verify")[0] == 0
    code, out = cli("folds")
    assert code == 0, out
    assert json.loads((workspace / "folds" / "folds.json").read_text())["method"] == "MultilabelStratifiedKFold"
    head = ["--set", "head=mlp", "--set", "head_hidden=32"] if per_class_columns else []  # heads work with BCE
    # head_init = probe: per-class sigmoid probes on the linear head; the MLP head keeps its init and says why.
    code, out = cli("train", "--model", "tiny", "--fold", "all", "--set", "epochs=3", "--set", "mixup=0.2",
                    "--set", "label_smoothing=0.1", "--set", 'head_init="probe"', *head)
    assert code == 0, out
    assert out.count("not a plain Linear layer" if per_class_columns else "head fitted on frozen features") == 3, out
    oof = np.load(workspace / "models" / "tiny" / "fold0" / "oof_logits.npz", allow_pickle=False)
    assert oof["values"].shape[1] == len(TAGS)  # one logit per class

    code, out = cli("stack", "--models", "tiny", "--name", "ml")
    assert code == 0, out
    sub = workspace / "submissions" / "ml.csv"
    code, out = cli("check", str(sub))
    assert code == 0, out
    code, out = cli("score", str(sub), "--answers", str(answers))
    assert code == 0, out
    got = float(out.split()[-1]) if out.split()[-1][0].isdigit() else float(
        [w for w in out.split() if w[:1].isdigit()][-1])

    written = pd.read_csv(sub, dtype=str, keep_default_na=False)
    truth = pd.read_csv(answers, dtype=str, keep_default_na=False).set_index("image_name").loc[
        written["image_name"], "tags"]
    y = _multi_hot(truth)
    if per_class_columns:
        probs = written[list(TAGS)].astype(float).to_numpy()
        want = np.mean([roc_auc_score(y[:, c], probs[:, c]) for c in range(len(TAGS))])
    else:
        pred = _multi_hot(written["tags"])
        assert pred.sum(axis=1).min() >= 1  # the sample has no empty row: every row names a tag
        want = fbeta_score(y, pred, beta=2, average="samples")
    assert got == pytest.approx(want, abs=1e-4)
    assert want > 0.5  # the patches are learnable: better than chance even after 3 tiny epochs

    sidecar = json.loads((workspace / "submissions" / "ml.json").read_text())
    if not per_class_columns:
        assert sidecar["params"]["kind"] == "thresholded"  # thresholds per tag, fitted inside the CV
        assert len(sidecar["params"]["offsets"]) == len(TAGS)


def test_iterative_stratification_keeps_every_tags_share_in_every_fold():
    rng = np.random.default_rng(4)
    n, n_folds = 600, 5
    rates = np.array([0.5, 0.2, 0.08, 0.03, 0.015])  # a common tag down to a rare one (9 images)
    y = (rng.random((n, len(rates))) < rates).astype(int)
    items = pd.DataFrame({"id": [str(i) for i in range(n)], "label": [""] * n})
    fold = assign_folds(items, n_folds, seed=0, targets=y)
    assert sorted(np.bincount(fold)) == [n // n_folds] * n_folds or np.ptp(np.bincount(fold)) <= 2
    per_fold = np.array([y[fold == k].sum(axis=0) for k in range(n_folds)])  # positives of each tag per fold
    expected = y.sum(axis=0) / n_folds
    # Each tag's positives are spread evenly: every fold within one image of its share (a random split of the
    # 9-image tag would often leave a fold without it).
    assert (np.abs(per_fold - expected) <= 1.0 + 1e-9).all(), per_fold
    assert (per_fold[:, -1] >= 1).all()


def test_thresholds_are_fitted_inside_each_fold_and_beat_one_half():
    rng = np.random.default_rng(0)
    n, c = 400, 4
    y = (rng.random((n, c)) < [0.5, 0.3, 0.1, 0.05]).astype(int)
    z = rng.normal(0, 1, (n, c)) + 1.2 * y - 1.5  # under-confident: 0.5 misses most true tags
    fold = np.arange(n) % 4
    X = z[:, None, :].astype(np.float32)
    plain = blend.honest_logits(blend.MeanBlend(), X, y, fold, multilabel=True)
    tuned = blend.honest_logits(blend.Thresholded(blend.MeanBlend(), beta=2.0), X, y, fold, multilabel=True)
    f_plain, f_tuned = metrics.score("f2_samples", y, plain), metrics.score("f2_samples", y, tuned)
    assert f_tuned > f_plain + 0.05
    # nested: each fold's thresholds come from the other folds only, so they differ between folds
    offsets = [blend.Thresholded(blend.MeanBlend()).fit(X[fold != k], y[fold != k]).offsets_ for k in range(4)]
    assert any(not np.allclose(offsets[0], o) for o in offsets[1:])
    for k in range(4):
        np.testing.assert_allclose(tuned[fold == k], plain[fold == k] - offsets[k], atol=1e-5)


def test_the_bce_objective_takes_multi_hot_targets_with_smoothing_and_mixup():
    import torch

    from comp.core.workspace import Workspace
    from comp.modeling.recipe import load_recipe
    from comp.training.objective import MultiLabelBCE, make_objective

    recipe = load_recipe(Workspace.here(), "tiny", ["mixup=0.4", "label_smoothing=0.2"])
    mixup, criterion = make_objective(recipe, 5, multilabel=True)
    x, y = torch.zeros(4, 3, 8, 8), torch.tensor([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 1]])
    _, soft = mixup(x, y)
    assert soft.shape == (4, 5) and float(soft.min()) >= 0.1 - 1e-6 and float(soft.max()) <= 0.9 + 1e-6
    logits = torch.randn(4, 5)
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float() * 0.8 + 0.1)
    assert torch.allclose(MultiLabelBCE(0.2)(logits, y), want)
    single_mix, single = make_objective(recipe, 5, multilabel=False)
    assert isinstance(single, torch.nn.Module) and not isinstance(single, MultiLabelBCE)
