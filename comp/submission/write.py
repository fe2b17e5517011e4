"""The second narrow waist: probabilities keyed by id -> a frame in the sample submission's exact format.

`to_frame` builds it (header, id form, row order and label representation all copied from the sample, joined on
id, never on position); `write` puts it on disk atomically after the same checks `comp check` runs; the checks live in
`comp.submission.check`.

How probabilities become the sample's columns is the kind's (`comp.kinds`: a class name, a class id, the positive
class's probability, a probability per class, the top k, tags, a probability per tag).
"""

from __future__ import annotations

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
from comp.kinds import float_digits, kind_of, positive_index
from comp.submission.parse import Table, first, id_hint, read_sample

__all__ = ["NAME_PATTERN", "float_digits", "positive_index", "to_csv_bytes", "to_frame", "write"]

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
    kind = kind_of(comp)
    _require_probabilities(probs, ids, rows_sum=not kind.multilabel)
    order = _sample_order(sample, ids, comp.id_column)
    label_cols = [c for c in sample.header if c != comp.id_column]
    sample_cells = np.array([sample.column(c) for c in label_cols], dtype=str).T.reshape(len(sample.rows), -1)
    # Labels are computed in the given row order and then moved to the sample's: cheaper than copying `probs`
    columns = {comp.id_column: np.asarray(sample.column(comp.id_column), dtype=object)}
    columns.update({c: values[order] for c, values in kind.encode(comp, label_cols, probs, sample_cells).items()})
    return pd.DataFrame(columns)[sample.header]


def _require_probabilities(probs: np.ndarray, ids: list[str], rows_sum: bool) -> None:
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
    zero = np.flatnonzero(probs.sum(axis=1) <= 0) if rows_sum else []  # a multi-label row may hold no class
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
