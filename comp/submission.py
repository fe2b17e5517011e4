"""The second narrow waist: probabilities keyed by id -> a frame in the sample submission's exact format.

`to_frame` builds it (header, id form, row order and label representation all copied from the sample, joined on
id, never on position); `write` puts it on disk atomically after the same checks `comp check` runs; `check_file`
validates any CSV (or CodaBench results zip) against the sample. This module reads and writes the format; the
checks themselves live in `comp/check.py`.

The five label representations (`comp.kind`): `class_name` (a class name per row), `class_id` (an integer id,
the class folder's name), `binary` (the probability of `comp.positive_class`), `class_probs` (one probability column
per class) and `topk` (the `top_k` best labels, space-separated, best first).
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import os
import re
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from comp import atomic
from comp.config import Competition, Workspace
from comp.errors import CompError
from comp.provenance import sha256_bytes, sha256_file

SHOW = 3  # examples a message lists; it names the first few, never thousands
INTEGER = re.compile(r"[+-]?\d+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class CheckReport:
    """What a check found: `errors` make the file unusable; `warnings` are suspicious but scoreable."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class Table:
    """A CSV parsed as text: the header, the data rows, and each row's line in the file (the header is line 1)."""

    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        at = self.header.index(name)
        return [row[at] if at < len(row) else "" for row in self.rows]


def check_file(comp: Competition, ws: Workspace, path: str | os.PathLike, strict: bool = False) -> CheckReport:
    """Validate the submission at `path` against the sample and the competition (see `comp.check.check_file`)."""
    from comp.check import check_file as _check_file  # check.py builds on this module's reader

    return _check_file(comp, ws, path, strict)


# ---------------------------------------------------------------------------------------------------------------
# Reading: a CSV as text, a results zip, the sample, earlier submissions


def parse_csv(data: bytes, where: str) -> Table:
    """Bytes -> Table, every cell a string. A UTF-8 BOM and CRLF endings are accepted; anything else that a platform
    could misread raises CompError."""
    if not data.strip():
        raise CompError(f"{where} is empty: write the header and one row per test id")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CompError(f"{where} is UTF-16 encoded: re-save it as UTF-8 (pandas: to_csv(path, encoding='utf-8'))")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise CompError(
            f"{where} is not UTF-8: byte 0x{data[err.start]:02x} on line {line} (latin-1 or cp1252?); "
            "re-save it as UTF-8 (pandas: to_csv(path, encoding='utf-8'))"
        ) from None
    if "\x00" in text:
        raise CompError(f"{where} contains NUL bytes: it is not a text CSV; write it with pandas to_csv")
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for row in reader:
            if row:  # blank lines (e.g. a trailing one) carry nothing; pandas and Kaggle skip them too
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as err:
        raise CompError(f"{where} line {reader.line_num + 1}: not valid CSV ({err}); check its quoting") from None
    if not rows:
        raise CompError(f"{where} is empty: write the header and one row per test id")
    return Table(header=rows[0], rows=rows[1:], lines=lines[1:])


def read_zipped_csv(path: Path) -> tuple[bytes, str]:
    """The one CSV of a results zip (CodaBench scores `prediction.csv` at the zip's root) and a name for messages."""
    try:
        with zipfile.ZipFile(path) as archive:
            csvs = [n for n in archive.namelist() if n.lower().endswith(".csv") and not n.startswith("__MACOSX/")]
            if len(csvs) != 1:
                raise CompError(f"{path} holds {len(csvs)} CSV files ({first(csvs)}); a results zip holds exactly one, "
                                "at its root (e.g. prediction.csv)")
            if "/" in csvs[0]:
                raise CompError(f"{path}: {csvs[0]} is inside a folder; the platform reads the zip's root: zip the "
                                f"file itself (cd into its folder, then zip), not its folder")
            return archive.read(csvs[0]), f"{path}:{csvs[0]}"
    except (zipfile.BadZipFile, OSError) as err:
        raise CompError(f"{path} is not a readable zip ({err}); rebuild it") from None


def read_sample(comp: Competition, ws: Workspace) -> Table:
    """The competition's sample submission: the format every submission must match exactly."""
    if not comp.sample_submission:
        raise CompError("comp.toml: sample_submission is empty; run `comp init` again or set it to the sample CSV")
    path = ws.path(comp.sample_submission)
    if not path.is_file():
        raise CompError(f"sample submission {path} not found (comp.toml: sample_submission); re-run `comp init`")
    sample = parse_csv(path.read_bytes(), f"sample submission {path}")
    if comp.id_column not in sample.header:
        raise CompError(
            f"comp.toml: id_column {comp.id_column!r} is not a column of the sample {path} "
            f"(its header: {','.join(sample.header)}); fix id_column"
        )
    return sample


def labels_of(comp: Competition) -> list[str]:
    """How each class (in `comp.classes` order) is written in the submission."""
    return list(comp.submission_labels or comp.classes)


def first(items: Sequence[str]) -> str:
    """The first few items for a message, with the total when some are left out."""
    shown = ", ".join(items[:SHOW])
    return shown + (f", ... ({len(items)} in all)" if len(items) > SHOW else "")


def id_hint(extra: Sequence[str], missing: Sequence[str], id_col: str) -> str:
    """Name the systematic reason ids fail to match the sample's, when there is one (the commonest submission bug)."""
    if not extra or not missing:
        return ""
    probe = list(extra)[:50]
    miss = set(missing)
    if all(x.endswith(".0") and x[:-2] in miss for x in probe):
        return f"ids were written as floats (e.g. {probe[0]!r}); write them as the sample does ({probe[0][:-2]!r})"
    exts = {os.path.splitext(m)[1] for m in missing}
    if len(exts) == 1 and (ext := exts.pop()) and all(x + ext in miss for x in probe):
        return f"ids lack the {ext!r} extension the sample uses (e.g. {probe[0]!r}, the sample has {probe[0] + ext!r})"
    if all(os.path.splitext(x)[1] and os.path.splitext(x)[0] in miss for x in probe):
        stem, ext = os.path.splitext(probe[0])
        return f"ids carry the {ext!r} extension the sample's ids lack (e.g. {probe[0]!r}, the sample has {stem!r})"
    by_int = {int(m): m for m in missing if INTEGER.fullmatch(m)}
    if all(INTEGER.fullmatch(x) and int(x) in by_int for x in probe):
        return (f"ids lost their leading zeros (e.g. {probe[0]!r}, the sample has {by_int[int(probe[0])]!r}): "
                f"read and write column {id_col!r} as text (dtype=str)")
    if all("/" in x and x.rsplit("/", 1)[1] in miss for x in probe):
        folder = probe[0].rsplit("/", 1)[0] + "/"
        return f"ids carry a folder the sample's ids lack (e.g. {probe[0]!r}): drop {folder!r}, write the file name"
    lower = {m.lower(): m for m in missing}
    if all(x.lower() in lower for x in probe):
        return f"ids differ in case from the sample's (e.g. {probe[0]!r}, the sample has {lower[probe[0].lower()]!r})"
    return ""


def same_as_earlier(ws: Workspace, path: Path, data: bytes, siblings: bool = True) -> list[str]:
    """A file byte-identical to one already built or sent only spends a daily submission."""
    folder = ws.submissions_dir
    if not folder.is_dir():
        return []
    digest = sha256_bytes(data)
    for other in sorted(folder.glob("*.csv")) if siblings else []:
        if other == ws.ledger or other.resolve() == path.resolve() or other.stat().st_size != len(data):
            continue
        if sha256_file(other) == digest:
            return [f"this file is identical (sha256) to {other}: the same predictions; submitting both only spends "
                    "a submission"]
    if ws.ledger.is_file():
        try:
            text = ws.ledger.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return []
        if digest in set(_SHA256.findall(text)):
            return [f"a file identical (sha256 {digest[:12]}) to this one was already submitted (see {ws.ledger}): "
                    "submitting it again only spends a submission"]
    return []


# ---------------------------------------------------------------------------------------------------------------
# Writing


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


_positive_index = positive_index  # the name comp/stack.py imports


def float_digits(num_classes: int) -> int:
    """Significant digits that keep a row of `num_classes` rounded probabilities summing to 1 within 1e-7
    (ten times inside the 1e-6 the check allows): each value rounds by at most 0.5e-d."""
    return max(9, math.ceil(math.log10(max(num_classes, 1) * 5e6)))


def to_csv_bytes(comp: Competition, frame: pd.DataFrame) -> bytes:
    """The bytes `write` puts on disk: UTF-8, comma-separated, "\\n" endings, no index column."""
    digits = float_digits(comp.num_classes)
    return frame.to_csv(index=False, lineterminator="\n", float_format=f"%.{digits}g").encode("utf-8")


def write(comp: Competition, ws: Workspace, name: str, frame: pd.DataFrame) -> Path:
    """Write `frame` (from `to_frame`) to `submissions/<name>.csv` atomically, after checking it as `comp check`
    would; a frame that would fail the check is never written. Returns the path."""
    if not _NAME.fullmatch(name) or name.endswith(".csv"):
        raise CompError(f"submission name {name!r}: use letters, digits, '.', '_' or '-' (no path, no .csv), "
                        "e.g. --name blend_v2")
    data = to_csv_bytes(comp, frame)
    from comp.check import check_bytes

    report = check_bytes(comp, ws, data, f"submission {name!r}")
    if report.errors:
        raise CompError(f"submission {name!r} was not written; it would fail the check: " + "; ".join(report.errors))
    path = ws.submission_csv(name)
    atomic.write_bytes(path, data)
    return path
