"""A competition's files as items: which images are labelled training data, which are test data, with what label.

`train_items` and `test_items` are the contract every later stage reads (see DEVELOPERS.md); `comp init`
(comp/setup/init.py) decides the fields of `comp.toml` they follow. Nothing here decodes pixels and nothing checks that
an image file exists: a labelled id whose file is missing keeps its row with the expected path, and `comp verify`
reports it, so a user sees every problem of the data in one list instead of one exception at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.setup.scan import file_for, read_table, scan_images


def _require_columns(frame: pd.DataFrame, columns: list[str], path: Path, keys: str) -> None:
    missing = [c for c in columns if c and c not in frame.columns]
    if missing:
        raise CompError(
            f"{path}: no column {', '.join(repr(c) for c in missing)} (it has {', '.join(map(repr, frame.columns))}); "
            f"set {keys} in comp.toml to the right column, or re-run `comp init DATA_DIR --force`"
        )


def _check_labels(labels: pd.Series, comp: Competition, where: str) -> None:
    unknown = sorted(set(labels) - set(comp.classes))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise CompError(
            f"{where}: {len(unknown)} label(s) not in comp.toml's classes: {shown}; the data changed since "
            "`comp init` - run `comp init DATA_DIR --force` (or add them to classes and submission_labels)"
        )


def train_items(comp: Competition, ws: Workspace) -> pd.DataFrame:
    """One row per labelled training image: columns id, path (absolute), label (a class of `comp.classes`) and
    group when `comp.group_column` is set.

    csv layout: `id` is the labels-CSV id as written; folders layout: `id` is the image path relative to
    `data_dir` (e.g. `train/ants/0013035.jpg`), unique even when every class folder reuses the same file names.
    Rows whose image file is missing are kept (with the expected path) for `comp verify` to report.
    """
    if comp.layout == "folders":
        return _folder_train_items(comp, ws)
    return _csv_train_items(comp, ws)


def _csv_train_items(comp: Competition, ws: Workspace) -> pd.DataFrame:
    if not comp.labels_csv:
        raise CompError("comp.toml: layout is csv but labels_csv is empty; set it to the labels file")
    if len(comp.train_dirs) != 1:
        raise CompError(
            f"comp.toml: the csv layout needs exactly one image folder in train_dirs, got {comp.train_dirs}"
        )
    path = ws.path(comp.labels_csv)
    frame = read_table(path, comp.labels_header)
    id_col = comp.train_id_column if comp.labels_header else "id"
    label_col = comp.train_label_column if comp.labels_header else "label"
    _require_columns(frame, [id_col, label_col], path, "train_id_column/train_label_column")
    _require_columns(frame, [comp.group_column], path, "group_column")
    ids = frame[id_col].str.strip()
    labels = frame[label_col].str.strip()
    if comp.class_map:  # several training labels train as one class (a binary set-up from more folders)
        labels = labels.map(lambda v: comp.class_map.get(v, v))
    _check_labels(labels, comp, str(path))
    folder = ws.path(comp.train_dirs[0])
    out = pd.DataFrame({
        "id": ids.astype(str).to_numpy(),
        "path": [str(file_for(folder, i, comp.image_ext)) for i in ids],
        "label": labels.astype(str).to_numpy(),
    })
    if comp.group_column:
        out["group"] = frame[comp.group_column].astype(str).to_numpy()
    return out


def _folder_train_items(comp: Competition, ws: Workspace) -> pd.DataFrame:
    if not comp.train_dirs:
        raise CompError("comp.toml: layout is folders but train_dirs is empty; list the class-folder roots")
    data_dir = ws.path(comp.data_dir)
    # Class folders may sit at the top of data_dir beside test/ and val/ (alaska2: Cover/, JMiPOD/, Test/): those
    # are other roots, not classes.
    not_classes = {ws.path(d).resolve() for d in [*comp.train_dirs, comp.test_dir] if d}
    rows = []
    for rel in comp.train_dirs:
        root = ws.path(rel)
        if not root.is_dir():
            raise CompError(f"{root} (train_dirs in comp.toml) is not a folder; fix the path or run `comp init`")
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                            and p.resolve() not in not_classes)
        # class_map: several folders may train as one class (alaska2: JMiPOD/, JUNIWARD/, UERD/ vs Cover/)
        names = {p: (comp.class_map or {}).get(p.name, p.name) for p in class_dirs}
        _check_labels(pd.Series(list(names.values()), dtype=object), comp, str(root))
        for class_dir in class_dirs:
            images, _ = scan_images(class_dir)
            rows += [(_relative_id(p, data_dir), str(p), names[class_dir]) for p in images]
    return pd.DataFrame(rows, columns=["id", "path", "label"])


def _relative_id(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:  # a train_dir outside data_dir: fall back to the absolute path, still unique
        return path.as_posix()


def test_items(comp: Competition, ws: Workspace) -> pd.DataFrame:
    """One row per test image: columns id (exactly as the submission writes it) and path (absolute), in the
    sample submission's row order. Empty when the competition has no test images (no submission possible)."""
    if not comp.sample_submission:
        if comp.test_dir:
            raise CompError("comp.toml: test_dir is set but sample_submission is empty; run `comp init --force`")
        return pd.DataFrame({"id": pd.Series([], dtype=str), "path": pd.Series([], dtype=str)})
    if not comp.test_dir:
        raise CompError(
            "comp.toml: sample_submission is set but test_dir is empty; set test_dir to the folder of test images"
        )
    path = ws.path(comp.sample_submission)
    sample = read_table(path)
    _require_columns(sample, [comp.id_column], path, "id_column")
    ids = sample[comp.id_column].str.strip()
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise CompError(
            f"{path}: id {duplicated.iloc[0]!r} appears more than once (row {duplicated.index[0] + 2}); "
            "submissions are matched by id, so each test id must be unique - check id_column in comp.toml"
        )
    folder = ws.path(comp.test_dir)
    # Sample ids usually lack the extension exactly when training ids do; `file_for` adds image_ext only when the
    # id does not already end with it, so one image_ext serves both files.
    ext = comp.image_ext
    return pd.DataFrame({
        "id": ids.astype(str).to_numpy(),
        "path": [str(file_for(folder, i, ext)) for i in ids],
    })


test_items.__test__ = False  # a library function, not a pytest test, even when a test module imports it


def with_folds(items: pd.DataFrame, folds_frame: pd.DataFrame) -> pd.DataFrame:
    """`items` (train_items) with each row's fold from folds.csv, joined on id: the one ids-with-folds join.

    A CompError names ids that repeat or that folds.csv lacks (the labels changed since `comp folds`)."""
    try:
        merged = items.merge(folds_frame[["id", "fold"]], on="id", how="left", validate="one_to_one")
    except pd.errors.MergeError:
        raise CompError("training ids repeat in the labels or in folds.csv; run `comp verify` to find them") from None
    if merged["fold"].isna().any():
        missing = merged.loc[merged["fold"].isna(), "id"].tolist()
        raise CompError(
            f"{len(missing)} training id(s) are not in folds.csv (e.g. {missing[:3]}); run `comp folds --force`"
        )
    merged["fold"] = merged["fold"].astype("int64")
    return merged


def class_indices(comp: Competition, labels: pd.Series | list[str], where: str) -> np.ndarray:
    """Labels (class names) as indices into `comp.classes` (the logits' column order): the one class-index map.

    `where` names the labels' source in the CompError listing labels that are not classes of comp.toml."""
    index = {c: i for i, c in enumerate(comp.classes)}
    values = [str(v) for v in labels]
    unknown = sorted({v for v in values if v not in index})
    if unknown:
        raise CompError(
            f"{where}: label(s) {unknown[:3]} are not classes of comp.toml; run `comp verify` "
            "(then `comp folds --force` if the labels changed)"
        )
    return np.array([index[v] for v in values], dtype=np.int64)
