"""Groups at `comp init`: which CSV column keeps rows in one fold when the groups live in a second CSV (StateFarm's
drivers in driver_imgs_list.csv), and which columns look like groups the user may want (a note, never a guess).

Discovery (discover.py) asks these questions; reading each training item's group is `items.train_groups`, the one
place items are read. Nothing here writes a file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from comp.core.errors import CompError
from comp.setup.scan import naming_share, normalise_label, read_table

# Words in a column name that say its rows come in groups a CV split must not cut (a patient's images in two folds).
GROUP_WORDS = ("patient", "subject", "driver", "individual", "person", "user", "site", "session", "video", "group",
               "study", "case", "participant", "animal", "camera", "location")
GLANCE_ROWS = 20_000  # rows read from a CSV comp does not use, to say what it might hold


def image_column(frame: pd.DataFrame, keys: set[str], preferred: str = "", exclude: str = "") -> str | None:
    """The column of `frame` naming the most images (`keys`: file names and stems; at least half its values), unique
    values first; `preferred` (--id-column) wins when `frame` has it."""
    if preferred in frame.columns and preferred != exclude:
        return preferred
    scores = [(naming_share(frame[c], keys) * frame[c].nunique() / max(1, len(frame)), c)
              for c in frame.columns if c != exclude]
    scores = [s for s in scores if s[0] >= 0.5]
    return max(scores, key=lambda s: s[0])[1] if scores else None


def columns_of(path: Path) -> list[str]:
    """The header of a CSV, or [] when it cannot be read (a CSV comp would not use otherwise)."""
    try:
        return list(read_table(path, nrows=1).columns)
    except CompError:
        return []


def groups_id_column(path: Path, frame: pd.DataFrame, column: str, keys: set[str], preferred: str = "") -> str:
    """The column of the groups CSV naming the training images; CompError when the CSV lacks `column` or names
    no image."""
    if column not in frame.columns:
        raise CompError(f"--group-column {column!r} is not a column of {path} (columns: {', '.join(frame.columns)})")
    found = image_column(frame, keys, preferred, exclude=column)
    if found is None:
        raise CompError(f"{path}: no column names the training images (columns: {', '.join(frame.columns)}); "
                        "the groups CSV needs one column of image file names (or ids) beside the group column")
    return found


def named_like_groups(frame: pd.DataFrame, taken: list[str]) -> list[tuple[str, int]]:
    """(column, distinct values) of the labels-CSV columns named like a group (patient_id, subject...) that repeat:
    CV that splits a patient's images over folds scores too high, and only the user knows whether that matters."""
    found = []
    for column in frame.columns:
        words = set(re.split(r"[^a-z]+", column.lower()))
        n = frame[column].nunique()
        if column not in taken and words & set(GROUP_WORDS) and 2 <= n <= len(frame) // 2:
            found.append((column, n))
    return found


def grouping_in(path: Path, keys: set[str], classes: list[str]) -> tuple[str, str, str] | None:
    """(image column, group-like column, its count of values) when a CSV comp does not read names the training images
    beside a column that repeats and is not the labels (StateFarm: img beside subject); None otherwise."""
    try:
        frame = read_table(path, nrows=GLANCE_ROWS)
    except CompError:
        return None  # a CSV comp does not read may be anything
    id_col = image_column(frame, keys)
    known = {normalise_label(c) for c in classes}
    grouping = [c for c in frame.columns if c != id_col and 2 <= frame[c].nunique() <= len(frame) // 2
                and not {normalise_label(v) for v in frame[c]} <= known]
    if not (id_col and grouping):
        return None
    column = max(grouping, key=lambda c: frame[c].nunique())
    return id_col, column, f"{frame[column].nunique()}{'+' if len(frame) == GLANCE_ROWS else ''}"
