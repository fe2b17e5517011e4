"""The second narrow waist: probabilities keyed by id -> a frame in the sample submission's exact format.

`to_frame` builds it (header, id form, row order and label representation all copied from the sample, joined on
id, never on position); `write` puts it on disk atomically after the same checks `comp check` runs; the checks live in
`comp.submission.check`.

The five label representations (`comp.kind`): `class_name` (a class name per row), `class_id` (an integer id,
the class folder's name), `binary` (the probability of `comp.positive_class`), `class_probs` (one probability column
per class) and `topk` (the `top_k` best labels, space-separated, best first).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from comp.core import atomic
from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.submission.parse import INTEGER, Table, first, id_hint, labels_of, read_sample

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a submission name: a plain file name, no folder


def to_frame(comp: Competition, ws: Workspace, ids: Sequence[str], probs: np.ndarray) -> pd.DataFrame:
    """Probabilities `probs` (n, C), columns in `comp.classes` order, for test `ids` (as `test_items` gives them)
    -> a DataFrame in the sample's exact format: its header, its ids in its row order, its label representation."""
    sample = read_sample(comp, ws)
    probs = np.asarray(probs)
    if not np.issubdtype(probs.dtype, np.floating):
        probs = probs.astype(np.float64)
    ids = [str(i) for i in ids]
    if probs.ndim != 2 or probs.shape != (len(ids), comp.num_classes):
        raise CompError(
            f"submission writer: got probabilities of shape {probs.shape} for {len(ids)} ids and "
            f"{comp.num_classes} classes; expected ({len(ids)}, {comp.num_classes})"
        )
    _require_probabilities(probs, ids)
    order = _sample_order(sample, ids, comp.id_column)
    label_cols = [c for c in sample.header if c != comp.id_column]
    # Labels are computed in the given row order and then moved to the sample's: cheaper than copying `probs`
    columns = {comp.id_column: np.asarray(sample.column(comp.id_column), dtype=object)}
    columns.update({c: values[order] for c, values in _label_columns(comp, label_cols, probs).items()})
    return pd.DataFrame(columns)[sample.header]


def _require_probabilities(probs: np.ndarray, ids: list[str]) -> None:
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        shown = first([repr(ids[i]) for i in np.flatnonzero(bad)])
        raise CompError(f"submission writer: non-finite probabilities for id(s) {shown}; the model or the blend "
                        "produced NaN/inf")
    if probs.min(initial=0) < -1e-6 or probs.max(initial=0) > 1 + 1e-6:
        raise CompError(
            f"submission writer: values from {probs.min():.3g} to {probs.max():.3g} are not probabilities; "
            "pass softmax(logits), not logits"
        )
    zero = np.flatnonzero(probs.sum(axis=1) <= 0)
    if len(zero):
        raise CompError(f"submission writer: all-zero probabilities for id(s) {first([repr(ids[i]) for i in zero])}; "
                        "pass softmax(logits)")


def _sample_order(sample: Table, ids: list[str], id_col: str) -> np.ndarray:
    """Row index into `ids` of each sample id, in the sample's order; any id missing, extra or repeated is an error."""
    counts = Counter(ids)
    dupes = [repr(i) for i, n in counts.items() if n > 1]
    if dupes:
        raise CompError(f"submission writer: test ids repeat ({first(dupes)}); each test image must appear once")
    want = sample.column(id_col)
    at = {i: k for k, i in enumerate(ids)}
    missing = [w for w in want if w not in at]
    want_set = set(want)
    extra = [i for i in ids if i not in want_set]
    if missing or extra:
        hint = id_hint(extra, missing, id_col)
        raise CompError(
            f"submission writer: the predicted ids do not match the sample's column {id_col!r}"
            + (f": {hint}" if hint else "")
            + (f"; {len(missing)} sample id(s) have no prediction ({first([repr(m) for m in missing])})" if missing
               else "")
            + (f"; {len(extra)} predicted id(s) are not in the sample ({first([repr(e) for e in extra])})" if extra
               else "")
            + "; predict again on the current test set (`comp predict`) or fix id_column/test_dir in comp.toml"
        )
    return np.array([at[w] for w in want], dtype=np.int64)


def _label_columns(comp: Competition, label_cols: list[str], probs: np.ndarray) -> dict[str, np.ndarray]:
    labels = labels_of(comp)
    if comp.kind != "class_probs" and len(label_cols) != 1:
        raise CompError(
            f"comp.toml: kind {comp.kind!r} writes one label column but the sample has {len(label_cols)} "
            f"({first(label_cols)}); set kind = \"class_probs\" if it holds one column per class"
        )
    if comp.kind == "class_name":
        return {label_cols[0]: np.asarray(labels, dtype=object)[probs.argmax(axis=1)]}
    if comp.kind == "class_id":
        not_int = [repr(label) for label in labels if not INTEGER.fullmatch(label)]
        if not_int:
            raise CompError(
                f"comp.toml: kind is class_id but submission_labels {first(not_int)} are not integers; set "
                "submission_labels to the integer id of each class (or kind = \"class_name\")"
            )
        return {label_cols[0]: np.array([int(x) for x in labels], dtype=np.int64)[probs.argmax(axis=1)]}
    if comp.kind == "binary":
        return {label_cols[0]: probs[:, positive_index(comp)].astype(np.float64).clip(0, 1)}
    if comp.kind == "topk":
        spaced = [repr(label) for label in labels if " " in label or not label]
        if spaced:
            raise CompError(f"comp.toml: top-k labels are space-separated, so labels {first(spaced)} cannot be "
                            "written; set submission_labels without spaces")
        k = min(comp.top_k, probs.shape[1])
        # argpartition first: a full sort of 50k rows x 5k classes takes a minute, the top k of each a second
        top = np.argpartition(-probs, k - 1, axis=1)[:, :k] if k < probs.shape[1] else np.tile(
            np.arange(k), (len(probs), 1))
        best = np.take_along_axis(top, np.argsort(-np.take_along_axis(probs, top, axis=1), axis=1, kind="stable"),
                                  axis=1)
        names = np.asarray(labels, dtype=object)
        return {label_cols[0]: np.array([" ".join(names[row]) for row in best], dtype=object)}
    # class_probs: the sample's columns, in its order, each matched to a class by its submission label
    index = {label: j for j, label in enumerate(labels)} | {c: j for j, c in enumerate(comp.classes)}
    unmatched = [repr(c) for c in label_cols if c not in index]
    if unmatched or len(label_cols) != len(labels):
        raise CompError(
            f"comp.toml: the sample's probability columns ({len(label_cols)}) do not pair one to one with the "
            f"{len(labels)} classes" + (f"; no class is written as {first(unmatched)}" if unmatched else "")
            + ": fix submission_labels so each sample column names one class"
        )
    p = probs.astype(np.float64).clip(0, None)
    p /= p.sum(axis=1, keepdims=True)
    return {c: p[:, index[c]] for c in label_cols}


def positive_index(comp: Competition) -> int:
    """Column of `comp.classes` whose probability a binary submission holds."""
    positive = comp.positive_class
    if not positive and sorted(comp.classes) == ["0", "1"]:
        positive = "1"  # the only unambiguous default: a 0/1 target's probability is that of "1"
    if positive not in comp.classes:
        raise CompError(
            f"comp.toml: kind is binary but positive_class {positive!r} is not one of the classes "
            f"({first([repr(c) for c in comp.classes])}); set positive_class to the class whose probability "
            "the sample's column holds"
        )
    return comp.classes.index(positive)


def float_digits(num_classes: int) -> int:
    """Significant digits that keep a row of `num_classes` rounded probabilities summing to 1 within 1e-7 (the
    check warns only beyond 1e-3, where Kaggle's rescaling would hide a bug): each value rounds by at most 0.5e-d."""
    return max(9, math.ceil(math.log10(max(num_classes, 1) * 5e6)))


def to_csv_bytes(comp: Competition, frame: pd.DataFrame) -> bytes:
    """The bytes `write` puts on disk: UTF-8, comma-separated, "\\n" endings, no index column."""
    digits = float_digits(comp.num_classes)
    return frame.to_csv(index=False, lineterminator="\n", float_format=f"%.{digits}g").encode("utf-8")


def write(comp: Competition, ws: Workspace, name: str, frame: pd.DataFrame) -> Path:
    """Write `frame` (from `to_frame`) to `submissions/<name>.csv` atomically, after checking it as `comp check`
    would; a frame that would fail the check is never written. Returns the path."""
    if not NAME_PATTERN.fullmatch(name) or name.endswith(".csv"):
        raise CompError(f"submission name {name!r}: use letters, digits, '.', '_' or '-' (no path, no .csv), "
                        "e.g. --name blend_v2")
    data = to_csv_bytes(comp, frame)
    from comp.submission.check import check_bytes

    report = check_bytes(comp, ws, data, f"submission {name!r}")
    if report.errors:
        raise CompError(f"submission {name!r} was not written; it would fail the check: " + "; ".join(report.errors))
    path = ws.submission_csv(name)
    atomic.write_bytes(path, data)
    return path
