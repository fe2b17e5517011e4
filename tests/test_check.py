"""`check_file` beyond the battery: warnings (one class everywhere, a class mix far from the training prior, a file
already built or submitted), --strict, and the errors for a missing file or sample."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest
from test_submission import _write_sample, build_format, random_probs

from comp.core import atomic
from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.provenance import sha256_file
from comp.core.workspace import Workspace
from comp.submission.check import check_file
from comp.submission.write import to_frame, write


def _three_classes(workspace, n: int = 60) -> tuple[Competition, Workspace, list[str]]:
    ids = [f"t{i:03d}" for i in range(n)]
    sample = _write_sample(workspace, ["id", "label"], [[i, "cat"] for i in ids])
    comp = Competition(name="toy", sample_submission=sample, classes=["cat", "dog", "frog"])
    return comp, Workspace(workspace), ids


def _submission(workspace, ids: list[str], labels: list[str], name: str = "sub.csv"):
    path = workspace / name
    pd.DataFrame({"id": ids, "label": labels}).to_csv(path, index=False)
    return path


def _balanced(n: int) -> list[str]:
    return [("cat", "dog", "frog")[i % 3] for i in range(n)]


def test_a_balanced_valid_file_has_no_errors_and_no_warnings(workspace):
    comp, ws, ids = _three_classes(workspace)
    report = check_file(comp, ws, _submission(workspace, ids, _balanced(len(ids))))
    assert report.ok and report.errors == [] and report.warnings == []


def test_one_class_everywhere_warns_and_strict_makes_it_an_error(workspace):
    comp, ws, ids = _three_classes(workspace)
    path = _submission(workspace, ids, ["dog"] * len(ids))
    report = check_file(comp, ws, path)
    assert report.ok
    assert any("every row predicts 'dog'" in w for w in report.warnings)
    strict = check_file(comp, ws, path, strict=True)
    assert not strict.ok and strict.warnings == []
    assert any("every row predicts 'dog'" in e and "--strict" in e for e in strict.errors)


def test_the_sample_itself_warns_for_binary(workspace):
    comp = build_format("aerial-cactus", workspace, None)
    report = check_file(comp, Workspace(workspace), workspace / comp.sample_submission)
    assert report.ok and any("every row holds the same probabilities (0.5)" in w for w in report.warnings)


def test_a_class_mix_far_from_the_training_prior_warns(workspace):
    comp, ws, ids = _three_classes(workspace)
    n = 90
    folds = pd.DataFrame({"id": [f"x{i}" for i in range(n)], "label": _balanced(n), "fold": [i % 5 for i in range(n)]})
    atomic.write_csv(ws.folds_csv, folds)
    skewed = ["cat"] * 50 + ["dog"] * 5 + ["frog"] * 5
    report = check_file(comp, ws, _submission(workspace, ids, skewed))
    assert report.ok
    assert any("far from the training prior" in w and "'cat' 83% vs 33%" in w for w in report.warnings)
    assert check_file(comp, ws, _submission(workspace, ids, _balanced(len(ids)), "ok.csv")).warnings == []


def test_a_small_test_set_is_not_flagged_for_sampling_noise(workspace):
    comp, ws, ids = _three_classes(workspace, n=6)
    atomic.write_csv(ws.folds_csv, pd.DataFrame({"id": ["a", "b", "c"], "label": ["cat", "dog", "frog"],
                                                 "fold": [0, 1, 2]}))
    report = check_file(comp, ws, _submission(workspace, ids, ["cat", "cat", "cat", "dog", "cat", "frog"]))
    assert report.warnings == []


def test_a_file_identical_to_an_earlier_submission_warns(workspace):
    comp = build_format("cifar-10", workspace, None)
    ws = Workspace(workspace)
    ids, probs = random_probs(comp, ws)
    frame = to_frame(comp, ws, ids, probs)
    first = write(comp, ws, "first", frame)
    assert not any("identical" in w for w in check_file(comp, ws, first).warnings)  # not identical to itself
    second = write(comp, ws, "second", frame)
    report = check_file(comp, ws, second)
    assert report.ok and any("identical (sha256) to" in w and "first.csv" in w for w in report.warnings)


def test_a_file_already_in_the_ledger_warns(workspace):
    comp = build_format("cifar-10", workspace, None)
    ws = Workspace(workspace)
    ids, probs = random_probs(comp, ws)
    path = workspace / "elsewhere.csv"
    path.write_bytes(write(comp, ws, "sent", to_frame(comp, ws, ids, probs)).read_bytes())
    digest = sha256_file(path)
    ws.submission_csv("sent").unlink()
    atomic.write_csv(ws.ledger, pd.DataFrame({"time": ["2026-01-01"], "sha256": [digest], "message": ["v1"]}))
    report = check_file(comp, ws, path)
    assert any("already submitted" in w for w in report.warnings)


def test_errors_name_the_line_the_id_and_the_value(workspace):
    comp, ws, ids = _three_classes(workspace, n=6)
    path = _submission(workspace, ids, ["cat", "dog", "horse", "frog", "cat", "dog"])
    (error,) = check_file(comp, ws, path).errors
    assert "line 4 (id 't002'): 'horse'" in error and "known classes are 'cat', 'dog', 'frog'" in error


def test_many_problems_list_the_first_few_and_the_count(workspace):
    comp, ws, ids = _three_classes(workspace, n=40)
    path = _submission(workspace, ids, ["horse"] * 40)
    (error,) = check_file(comp, ws, path).errors
    assert error.count("'horse'") == 3 and "(40 in all)" in error


def test_a_missing_file_or_sample_is_a_comp_error(workspace):
    comp, ws, ids = _three_classes(workspace)
    with pytest.raises(CompError, match="not found"):
        check_file(comp, ws, workspace / "nope.csv")
    path = _submission(workspace, ids, _balanced(len(ids)))
    no_sample = Competition(name="toy", classes=["cat"])
    with pytest.raises(CompError, match="sample_submission is empty"):
        check_file(no_sample, ws, path)
    wrong_id = Competition(name="toy", sample_submission=comp.sample_submission, id_column="image", classes=["cat"])
    with pytest.raises(CompError, match="id_column 'image' is not a column"):
        check_file(wrong_id, ws, path)


def test_probability_rows_follow_kaggles_rescaling(workspace):
    """`to_csv(float_format="%.6f")` rows are off by ~1e-6 and pass silently; rows off by more than 1e-3 still score
    (Kaggle divides each row by its sum) but warn; an all-zero row cannot be rescaled and is an error."""
    comp = build_format("dog-breed", workspace, None)
    ws = Workspace(workspace)
    ids, probs = random_probs(comp, ws)
    frame = to_frame(comp, ws, ids, probs)
    path = workspace / "six.csv"
    frame.to_csv(path, index=False, float_format="%.6f")
    sums = np.abs(pd.read_csv(path).iloc[:, 1:].sum(axis=1) - 1)
    report = check_file(comp, ws, path)
    assert (sums > 1e-7).any() and report.errors == [] and report.warnings == []
    scaled = frame.copy()
    scaled.iloc[:5, 1:] *= 1.5
    scaled.to_csv(path, index=False)
    report = check_file(comp, ws, path)
    assert report.ok and any("5 row(s) do not sum to 1" in w and "Kaggle rescales" in w for w in report.warnings)
    scaled.iloc[7, 1:] = 0.0
    scaled.to_csv(path, index=False)
    assert any("1 row(s) are all zero" in e for e in check_file(comp, ws, path).errors)


def test_binary_scores_any_real_under_auc_probabilities_otherwise(workspace):
    comp = build_format("alaska2", workspace, None)
    ws = Workspace(workspace)
    sample = pd.read_csv(workspace / comp.sample_submission, dtype=str)
    sample["Label"] = np.linspace(-4, 9, len(sample)).round(3).astype(str)  # logits / any real score
    sample.to_csv(workspace / "real.csv", index=False)
    assert check_file(comp, ws, workspace / "real.csv").errors == []
    for metric in ("weighted_auc", "log_loss"):
        other = Competition(**{**comp.__dict__, "metric": metric})
        errors = check_file(other, ws, workspace / "real.csv").errors
        assert (errors == []) if metric == "weighted_auc" else any("looks like logits" in e for e in errors)


def test_the_one_class_warning_reads_class_names_with_spaces(workspace):
    ids = [f"{i:04d}.png" for i in range(30)]
    sample = _write_sample(workspace, ["file", "species"], [[i, "Maize"] for i in ids])
    classes = ["Black-grass", "Loose Silky-bent", "Maize"]
    comp = Competition(name="seedlings", sample_submission=sample, id_column="file", label_columns=["species"],
                       classes=classes)
    path = workspace / "s.csv"
    pd.DataFrame({"file": ids, "species": "Loose Silky-bent"}).to_csv(path, index=False)
    report = check_file(comp, Workspace(workspace), path)
    assert report.ok and any("every row predicts 'Loose Silky-bent'" in w for w in report.warnings)
    pd.DataFrame({"file": ids, "species": "Loose_Silky-bent"}).to_csv(path, index=False)
    (error,) = check_file(comp, Workspace(workspace), path).errors
    assert "'_' for spaces" in error and "the class is 'Loose Silky-bent'" in error


def test_class_id_messages_name_the_real_problem(workspace):
    comp = build_format("cassava", workspace, None)
    ws = Workspace(workspace)
    sample = pd.read_csv(workspace / comp.sample_submission, dtype=str)
    sample.loc[0, "label"] = " 0"
    sample.to_csv(workspace / "s.csv", index=False)
    (error,) = check_file(comp, ws, workspace / "s.csv").errors
    assert "whitespace" in error and "write '0', not ' 0'" in error and "float" not in error


def test_a_real_models_submission_passes_against_the_real_sample(shared, workspace):
    comp = build_format("aerial-cactus", workspace, shared)
    real = shared / "formats" / "aerial-cactus-identification__real_submission_example.csv"
    report = check_file(comp, Workspace(workspace), real)
    assert report.errors == [] and report.warnings == []


def test_a_real_file_with_stray_columns_is_refused_by_name(shared, workspace):
    comp = build_format("cifar-10", workspace, shared)
    stray = shared / "formats" / "cifar-10__trainLabels_head.csv"  # header id,label,index, (two extra columns)
    (error,) = check_file(comp, Workspace(workspace), stray).errors
    assert "unexpected column(s) 'index', ''" in error and "must be exactly: id,label" in error


def test_hard_labels_in_an_auc_competition_warn(workspace):
    comp = build_format("aerial-cactus", workspace, None)
    ws = Workspace(workspace)
    sample = pd.read_csv(workspace / comp.sample_submission, dtype=str)
    path = workspace / "hard.csv"
    sample.assign(has_cactus=[str(i % 2) for i in range(len(sample))]).to_csv(path, index=False)
    report = check_file(comp, ws, path)
    assert report.ok and any("hard labels" in w for w in report.warnings)


def test_a_codabench_zip_is_checked_by_its_csv_and_a_zipped_folder_is_refused(workspace):
    comp = build_format("nycu", workspace, None)
    ws = Workspace(workspace)
    ids, probs = random_probs(comp, ws)
    csv_path = write(comp, ws, "prediction", to_frame(comp, ws, ids, probs))
    good, nested, broken = (workspace / f"{n}.zip" for n in ("good", "nested", "broken"))
    with zipfile.ZipFile(good, "w") as z:
        z.write(csv_path, "prediction.csv")
    assert check_file(comp, ws, good).errors == check_file(comp, ws, good).warnings == []
    with zipfile.ZipFile(nested, "w") as z:
        z.write(csv_path, "out/prediction.csv")
    with pytest.raises(CompError, match="inside a folder; the platform reads the zip's root"):
        check_file(comp, ws, nested)
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("prediction.csv", csv_path.read_text().replace("\n", "\n ", 3))
    assert any("leading/trailing whitespace" in e for e in check_file(comp, ws, broken).errors)
