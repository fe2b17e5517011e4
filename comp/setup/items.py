"""A competition's files as items: which images are labelled training data, which are test data, with what label.

`train_items` and `test_items` are the contract every later stage reads (see DEVELOPERS.md); `comp init`
(comp/setup/init.py) decides the fields of `comp.toml` they follow. Nothing here decodes pixels and nothing checks that
an image file exists: a labelled id whose file is missing keeps its row with the expected path, and `comp verify`
reports it, so a user sees every problem of the data in one list instead of one exception at a time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.kinds import kind_of
from comp.setup.scan import file_for, read_table, scan_images


def _require_columns(frame: pd.DataFrame, columns: list[str], path: Path, keys: str) -> None:
    missing = [c for c in columns if c and c not in frame.columns]
    if missing:
        raise CompError(
            f"{path}: no column {', '.join(repr(c) for c in missing)} (it has {', '.join(map(repr, frame.columns))}); "
            f"set {keys} in comp.toml to the right column, or re-run `comp init DATA_DIR --force`"
        )


def _check_labels(labels: pd.Series, comp: Competition, where: str) -> None:
    _, unknown = kind_of(comp).targets(list(comp.classes), sorted(set(labels)))  # a tag set holds several classes
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
    `data_dir` (e.g. `train/ants/0013035.jpg`), unique even when every class folder reuses the same file names;
    names layout: `id` is the file name (`cat.123.jpg`), the label read from it by `label_pattern`.
    Rows whose image file is missing are kept (with the expected path) for `comp verify` to report.
    """
    if comp.layout == "folders":
        items = _folder_train_items(comp, ws)
    elif comp.layout == "names":
        items = _name_train_items(comp, ws)
    else:
        items = _csv_train_items(comp, ws)
    if comp.group_column and "group" not in items.columns:
        items["group"] = train_groups(comp, ws, items)[0].to_numpy()
    return items


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
    label_cols = comp.train_label_columns or [comp.train_label_column if comp.labels_header else "label"]
    _require_columns(frame, [id_col, *label_cols], path,
                     "train_id_column/" + ("train_label_columns" if comp.train_label_columns else "train_label_column"))
    if not comp.groups_csv:
        _require_columns(frame, [comp.group_column], path, "group_column (or groups_csv to read it from another CSV)")
    ids = frame[id_col].str.strip()
    labels = (onehot_labels(frame, label_cols, path, kind_of(comp).multilabel) if comp.train_label_columns
              else frame[label_cols[0]].str.strip())
    if comp.class_map:  # several training labels train as one class (a binary set-up from more folders)
        labels = labels.map(lambda v: comp.class_map.get(v, v))
    _check_labels(labels, comp, str(path))
    folder = ws.path(comp.train_dirs[0])
    nested = _files_by_name(folder) if comp.train_subfolders else {}
    out = pd.DataFrame({
        "id": ids.astype(str).to_numpy(),
        "path": [_nested_file(nested, folder, i, comp.image_ext, path) for i in ids],
        "label": labels.astype(str).to_numpy(),
    })
    if comp.group_column and not comp.groups_csv:
        out["group"] = frame[comp.group_column].astype(str).to_numpy()
    return out


def onehot_labels(frame: pd.DataFrame, columns: list[str], path: Path, multilabel: bool = False) -> pd.Series:
    """One-hot label columns (a 1 in the row's class column, 0 elsewhere) as class names; with `multilabel`, each
    row's set of marked columns as tags (space-separated, as a tags column writes them; none marked: empty).

    Refuses, naming the line: a value other than 0/1, and unless `multilabel` a row with no 1 and a row with several
    1s (a multi-label competition: single-label training would have to pick one of its classes, silently)."""
    values = frame[columns].apply(lambda c: c.str.strip())
    bad = ~values.isin(ONES | ZEROS)
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise CompError(f"{path}, line {row + 2}: column {columns[col]!r} holds {values.iat[row, col]!r}; one-hot "
                        f"label columns ({', '.join(columns)}) hold only 0 and 1. Fix the row, or set "
                        "train_label_column (a single label column) in comp.toml")
    hot = values.isin(ONES).to_numpy()
    if multilabel:
        names = np.asarray(columns, dtype=object)
        return pd.Series([" ".join(names[row]) for row in hot], index=frame.index, dtype=object)
    per_row = hot.sum(axis=1)
    if (per_row > 1).any():
        row = int(np.argmax(per_row > 1))
        marked = ", ".join(c for c, h in zip(columns, hot[row], strict=True) if h)
        raise CompError(f"{path}: {int((per_row > 1).sum())} row(s) mark several classes (line {row + 2}: {marked}): "
                        f"the labels are multi-label, not one class per image. {multilabel_hint()}")
    if (per_row == 0).any():
        row = int(np.argmax(per_row == 0))
        raise CompError(f"{path}: {int((per_row == 0).sum())} row(s) mark no class (line {row + 2}): each row of the "
                        f"one-hot columns {', '.join(columns)} needs exactly one 1; fix or drop those rows")
    return pd.Series(np.asarray(columns, dtype=object)[hot.argmax(axis=1)], index=frame.index)


ONES, ZEROS = {"1", "1.0", "1.", "True", "true"}, {"0", "0.0", "0.", "False", "false"}


def multilabel_hint() -> str:
    """What to do with labels that mark several classes per image: name the multi-label kinds that read them."""
    return ("Read them as the `multilabel_probs` kind (one probability column per class): "
            "`comp init DATA_DIR --force --kind multilabel_probs` (or `--kind tags` for a space-separated column)")


def _files_by_name(folder: Path) -> dict[str, Path | None]:
    """Every image below `folder`, by file name and by stem; None marks a name found in two sub-folders."""
    found: dict[str, Path | None] = {}
    for p in scan_images(folder)[0]:
        for key in dict.fromkeys((p.name, p.stem)):
            found[key] = None if key in found and found[key] != p else p
    return found


def _nested_file(nested: dict[str, Path | None], folder: Path, image_id: str, image_ext: str, where: Path) -> str:
    """The file of a labels-CSV id: found anywhere below `folder` when train_subfolders is set, else directly in it."""
    if image_id in nested:
        if nested[image_id] is None:
            raise CompError(f"{where}: id {image_id!r} names files in several sub-folders of {folder}; ids must pick "
                            "one image (set train_subfolders = false and write ids as paths, e.g. chain/name.jpg)")
        return str(nested[image_id])
    return str(file_for(folder, image_id, image_ext))


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
        class_dirs = _class_dirs(root, comp.class_depth, not_classes)
        # class_map: several folders may train as one class (alaska2: JMiPOD/, JUNIWARD/, UERD/ vs Cover/)
        names = {p: (comp.class_map or {}).get(p.name, p.name) for p in class_dirs}
        _check_labels(pd.Series(list(names.values()), dtype=object), comp, str(root))
        for class_dir in class_dirs:
            images, _ = scan_images(class_dir)
            rows += [(_relative_id(str(p), str(data_dir)), str(p), names[class_dir]) for p in images]
    return pd.DataFrame(rows, columns=["id", "path", "label"])


def _class_dirs(root: Path, depth: int, not_classes: set[Path]) -> list[Path]:
    """The folders `depth` levels below `root` (1: its sub-folders), whose names are the classes."""
    level = [root]
    for _ in range(depth):
        level = [p for d in level for p in sorted(d.iterdir())
                 if p.is_dir() and not p.name.startswith(".") and p.resolve() not in not_classes]
    return level


def _name_train_items(comp: Competition, ws: Workspace) -> pd.DataFrame:
    """Labels in the file names (dogs-vs-cats: train/cat.123.jpg): the id is the file name. Images whose name does
    not match `label_pattern` are left out here; `comp verify` lists them as images with no label."""
    if len(comp.train_dirs) != 1:
        raise CompError(f"comp.toml: the names layout needs exactly one image folder in train_dirs, got "
                        f"{comp.train_dirs}")
    pattern = label_regex(comp.label_pattern)
    root = ws.path(comp.train_dirs[0])
    if not root.is_dir():
        raise CompError(f"{root} (train_dirs in comp.toml) is not a folder; fix the path or run `comp init`")
    rows = []
    for p in scan_images(root, recursive=False)[0]:
        match = pattern.fullmatch(p.name)
        if match:
            label = match["label"]
            rows.append((p.name, str(p), (comp.class_map or {}).get(label, label)))
    out = pd.DataFrame(rows, columns=["id", "path", "label"])
    _check_labels(out["label"], comp, f"{root} (label_pattern {comp.label_pattern!r})")
    return out


def label_regex(pattern: str) -> re.Pattern:
    """comp.toml's label_pattern compiled; it must hold a group named `label` (the class part of a file name)."""
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise CompError(f"comp.toml: label_pattern {pattern!r} is not a regular expression ({err})") from None
    if "label" not in compiled.groupindex:
        raise CompError(f"comp.toml: label_pattern {pattern!r} has no group named `label`; mark the class part of "
                        r"the file name with (?P<label>...), e.g. '(?P<label>.+)\.\d+\.jpg'")
    return compiled


def train_groups(comp: Competition, ws: Workspace, items: pd.DataFrame) -> tuple[pd.Series, int]:
    """The group of each training item read from `groups_csv` (ids matched by id, file name or stem), and how many
    items it has no row for: each of those is a group of its own (it cannot leak into another fold with anyone)."""
    if not comp.groups_csv:
        raise CompError(f"comp.toml: group_column = {comp.group_column!r}, but the {comp.layout} layout has no labels "
                        "CSV to read it from; set groups_csv (and groups_id_column) to the CSV holding it, e.g. "
                        "`comp init DATA_DIR --force --groups FILE --group-column COLUMN`, or clear group_column")
    path = ws.path(comp.groups_csv)
    frame = read_table(path)
    if not comp.groups_id_column:
        raise CompError(f"comp.toml: groups_csv is set but groups_id_column is empty; set it to the column of {path} "
                        f"naming each image (its columns: {', '.join(frame.columns)})")
    _require_columns(frame, [comp.groups_id_column, comp.group_column], path, "groups_id_column/group_column")
    keys = frame[comp.groups_id_column].str.strip()
    groups = frame[comp.group_column].str.strip()
    lookup = dict(zip(keys, groups, strict=True))
    per_key = groups.groupby(keys.to_numpy(), sort=False).nunique()  # one pass: a CSV may list every image twice
    clash = per_key.index[per_key > 1].tolist()
    if clash:
        raise CompError(f"{path}: image {clash[0]!r} has rows in different groups ({comp.group_column}: "
                        f"{', '.join(sorted(set(groups[keys == clash[0]])))}); keep one group per image")
    names = [Path(p).name for p in items["path"]]
    name_count = pd.Series(names).value_counts()
    out, missing = [], 0
    for item_id, name in zip(items["id"].astype(str), names, strict=True):
        for key in (item_id, name, os.path.splitext(name)[0]):
            if key in lookup:
                if key != item_id and name_count[name] > 1:
                    raise CompError(f"{path}: {key!r} names {name_count[name]} training images in different folders; "
                                    f"write their ids in {comp.groups_id_column!r} as paths (e.g. {item_id})")
                out.append(lookup[key])
                break
        else:
            missing += 1
            out.append(f"(no group) {item_id}")
    return pd.Series(out, index=items.index, dtype=object), missing


def _relative_id(path: str, base: str) -> str:
    """`path` relative to `base` in / form (as Path.relative_to, on strings: 20x faster over 100k images); a
    train_dir outside data_dir keeps the absolute path, still unique."""
    prefix = base.rstrip(os.sep) + os.sep
    return (path[len(prefix):] if path.startswith(prefix) else path).replace(os.sep, "/")


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


def class_counts(comp: Competition, labels: pd.Series | list[str]) -> dict[str, int]:
    """Training images per class of `comp.classes` (an image with several tags counts once for each)."""
    y, _ = kind_of(comp).targets(list(comp.classes), [str(v) for v in labels])
    per_class = y.sum(axis=0) if y.ndim == 2 else np.bincount(y[y >= 0], minlength=comp.num_classes)
    return {c: int(n) for c, n in zip(comp.classes, per_class, strict=True)}


def class_indices(comp: Competition, labels: pd.Series | list[str], where: str) -> np.ndarray:
    """Labels (class names) as the kind's targets in `comp.classes` (the logits' column order): indices (n,), or
    multi-hot (n, C) for a multi-label kind (a label is a set of tags). The one class-index map.

    `where` names the labels' source in the CompError listing labels that are not classes of comp.toml."""
    y, unknown = kind_of(comp).targets(list(comp.classes), [str(v) for v in labels])
    if unknown:
        raise CompError(
            f"{where}: label(s) {unknown[:3]} are not classes of comp.toml; run `comp verify` "
            "(then `comp folds --force` if the labels changed)"
        )
    return y
