"""`check_file`: validate a submission CSV against the competition's sample, the way the platform's scorer would.

A platform rejects a file (or, worse, scores it badly) for a wrong header, a missing or duplicated id, an empty cell,
a label it does not know, or probabilities that are not probabilities. Each problem becomes one message that names
the line, id or column and says how to fix it. The file is parsed as text (`comp.submission.parse`), so nothing
is silently coerced: "007" stays "007", "1.0" is not "1", "nan" is not a number.

Values are read as the graders read them (pandas): a number is what `pandas.read_csv` takes for one, not what
Python's float() takes. What a grader scores although it differs from the sample is a warning, not an error: the
sample's columns in another order (graders select columns by name), probability rows that do not sum to 1 (Kaggle
rescales each row by its sum), any real-valued score under an AUC metric (only the ranking counts).

Warnings (scoreable but suspicious): those, every row predicting one class, a predicted class mix far from the
training prior, a file identical to one already built or submitted. `comp.submission.fix` rewrites what it can.

Speed: a large, plain numeric file (probabilities or scores, no quoting, no blank lines) is read by pandas' C parser
(the graders' own reader) straight into float64, with no Python object per cell (60 MB: ~2 s, < 500 MB). Anything
else, and any file with a problem, takes the exact text path, which names every problem by line and id.
"""

from __future__ import annotations

import csv
import os
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.kinds import Cells, kind_of
from comp.submission.parse import (
    SHOW,
    CheckReport,
    Table,
    first,
    id_hint,
    parse_csv,
    parse_numbers,
    read_sample,
    read_zipped_csv,
    same_as_earlier,
)
from comp.submission.warnings import distribution_warnings

_NAN_WORDS = {"nan", "NaN", "NAN", "None", "null", "NULL", "NA", "N/A", "<NA>"}


def check_file(comp: Competition, ws: Workspace, path: str | os.PathLike, strict: bool = False) -> CheckReport:
    """Validate the submission at `path` against the sample and the competition.

    No errors means the platform will accept it. With `strict`, warnings are reported as errors."""
    path = Path(path)
    if not path.is_file():
        raise CompError(f"{path} not found: pass the submission CSV (e.g. submissions/NAME.csv)")
    data = path.read_bytes()
    where, zipped = str(path), zipfile.is_zipfile(path)
    if zipped:  # a CodaBench results zip: its one CSV is what gets scored
        data, where = read_zipped_csv(path)
    report = check_bytes(comp, ws, data, where)
    if report.ok:
        # a zip's CSV naturally equals the CSV it was made from: compare it with the ledger only
        report.warnings.extend(same_as_earlier(ws, path, data, siblings=not zipped))
    if strict and report.warnings:
        report.errors.extend(f"{w} (an error under --strict)" for w in report.warnings)
        report.warnings = []
    return report


def check_bytes(comp: Competition, ws: Workspace, data: bytes, where: str = "submission") -> CheckReport:
    """The content checks of `check_file` on a CSV held in memory (the writer runs them before writing)."""
    fast = _check_plain_numbers(comp, ws, data)
    if fast is not None:
        return fast
    sample = read_sample(comp, ws)
    report = CheckReport()
    try:
        table = parse_csv(data, where)
    except CompError as err:
        report.errors.append(str(err))
        return report
    report.errors.extend(_check_header(sample, table) or _check_shape(sample, table))
    if report.errors:
        return report  # the columns are not the sample's: row checks would only repeat that
    if table.header != sample.header:  # the sample's columns in another order: graders select them by name
        report.warnings.append(f"the columns are in the order {_columns(table.header)}, the sample's is "
                               f"{_columns(sample.header)}: graders select columns by name, so it scores; "
                               "`comp check FILE --fix OUT` writes the sample's order")
        table = table.select(sample.header)
    ids = table.column(comp.id_column)
    report.errors.extend(_check_ids(sample, table, ids, comp.id_column))
    label_cols = [c for c in table.header if c != comp.id_column]
    # One numpy string array: the per-cell checks below run as vectorised string/number ops (1M+ cells is common)
    values = np.array(table.rows, dtype=str)[:, [table.header.index(c) for c in label_cols]]
    kind = kind_of(comp)
    sample_cells = np.array([sample.column(c) for c in label_cols], dtype=str).T.reshape(len(sample.rows), -1)
    empty = _check_empty(values, label_cols, ids, table.lines, blank_ok=kind.empty_allowed(sample_cells))
    report.errors.extend(empty)
    cells = Cells(label_cols, values, ids, table.lines)
    if not empty:
        cells.numbers = parse_numbers(values) if kind.numeric else None  # parsed once
        errors, warnings = kind.check(comp, cells)
        report.errors.extend(errors)
        report.warnings.extend(warnings)
    if report.ok:
        report.warnings.extend(distribution_warnings(comp, ws, cells))
    return report


FAST_BYTES = 1 << 20  # files from this size up take the vectorised path when they are plain


def _check_plain_numbers(comp: Competition, ws: Workspace, data: bytes) -> CheckReport | None:
    """`check_bytes` for a large, plain file of a numeric kind, read as the graders read it (pandas' C parser, into
    float64); None when the file is not plain or anything is wrong, so the exact text path reads it again and
    names each problem. Plain: UTF-8 without quotes, NULs, blank lines or lone carriage returns, the sample's exact
    header, every prediction cell a finite number, the sample's ids, and no error from the kind."""
    kind = kind_of(comp)
    if not kind.numeric or len(data) < FAST_BYTES:
        return None
    body = data.removeprefix(b"\xef\xbb\xbf")
    if (b'"' in body or b"\x00" in body or b"\n\n" in body or b"\n\r\n" in body
            or (b"\r" in body and body.count(b"\r") != body.count(b"\r\n"))):
        return None
    import io

    import pandas as pd

    try:
        sample_path = ws.path(comp.sample_submission)
        header = _first_row(body[:body.find(b"\n")] if b"\n" in body else body)
        with open(sample_path, "rb") as fh:
            sample_header = _first_row(fh.readline().removeprefix(b"\xef\xbb\xbf"))
        if not comp.sample_submission or header != sample_header:
            return None
        id_col = comp.id_column
        label_cols = [c for c in header if c != id_col]
        if id_col not in header or len(set(header)) != len(header) or not label_cols:
            return None
        want = pd.read_csv(sample_path, usecols=[id_col], dtype=str, na_filter=False, keep_default_na=False,
                           encoding="utf-8-sig")[id_col].tolist()
        frame = pd.read_csv(io.BytesIO(body), dtype={id_col: str, **dict.fromkeys(label_cols, np.float64)},
                            na_filter=False, keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, csv.Error):
        return None
    if list(frame.columns) != header or frame.empty:
        return None
    numbers = frame[label_cols].to_numpy(np.float64)
    if not np.isfinite(numbers).all():
        return None
    ids = frame[id_col].tolist()
    lines = list(range(2, len(ids) + 2))  # no quoting and no blank lines: row i is on line i + 2
    id_errors = _check_ids(Table([id_col], [[w] for w in want], []), Table(header, [], lines), ids, id_col)
    if id_errors:
        return None
    cells = Cells(label_cols, None, ids, lines, numbers)
    errors, warnings = kind.check(comp, cells)
    if errors:
        return None
    report = CheckReport()
    report.warnings.extend(warnings)
    report.warnings.extend(distribution_warnings(comp, ws, cells))
    return report


def _first_row(line: bytes) -> list[str]:
    return next(csv.reader([line.rstrip(b"\r\n").decode("utf-8")]), [])


def _at(lines: list[int], ids: list[str], i: int) -> str:
    return f"line {lines[i]} (id {ids[i]!r})"


# ---------------------------------------------------------------------------------------------------------------
# Structure: header, rows, ids, empty cells


def _check_header(sample: Table, table: Table) -> list[str]:
    want, got = sample.header, table.header
    if got == want:
        return []
    spec = f"the header must be exactly: {_columns(want)}"
    if len(got) == 1 and len(want) > 1:
        for name, sep in (("semicolons", ";"), ("tabs", "\t"), ("'|'", "|")):
            if got[0].count(sep) == len(want) - 1:
                return [f"fields are separated by {name}, the sample uses commas: write it with to_csv(path) "
                        f"(sep=','), not sep={sep!r}"]
        return [f"the header has one column {got[0]!r} but the sample has {len(want)}; {spec}"]
    if len(got) == len(want) + 1 and got[:-1] == want and got[-1] == "":
        return [f"every line ends with an extra comma (an empty last column); the header must be exactly: "
                f"{_columns(want)}"]
    index_like = got[0] in ("", "index", "level_0") or got[0].startswith("Unnamed")  # to_csv / reset_index names
    if len(got) == len(want) + 1 and got[1:] == want and index_like:
        return [f"the first column {got[0]!r} looks like a pandas index column (0, 1, 2, ...): write the file "
                f"with to_csv(path, index=False); {spec}"]
    if got and got[0] in set(sample.column(want[0])):
        return [f"the file has no header row: its first line is a data row (id {got[0]!r}); add the header "
                f"{_columns(want)}"]
    if sorted(got) == sorted(want) and len(set(got)) == len(got):
        return []  # the same columns in another order: check_bytes warns and reads them by name
    errors = []
    norm = {w.strip().lower(): w for w in want}
    renamed = [(g, norm[g.strip().lower()]) for g in got if g not in want and g.strip().lower() in norm]
    errors += [f"column {g!r} should be named {w!r} (names are case- and space-sensitive); {spec}" for g, w in renamed]
    fixed = {g for g, _ in renamed} | {w for _, w in renamed}
    missing = [repr(w) for w in want if w not in got and w not in fixed]
    extra = [repr(g) for g in got if g not in want and g not in fixed]
    if missing:
        errors.append(f"missing column(s) {first(missing)}; {spec}")
    if extra:
        errors.append(f"unexpected column(s) {first(extra)}; {spec}")
    dupes = [repr(c) for c, n in Counter(got).items() if n > 1]
    if dupes:
        errors.append(f"column(s) {first(dupes)} appear more than once; {spec}")
    return errors or [f"the header {_columns(got)} differs from the sample's; {spec}"]


def _columns(names: list[str]) -> str:
    """A header for a message: whole when short, else its start and its width (dog breeds have 121 columns)."""
    if len(names) <= 12:
        return ",".join(names)
    return ",".join(names[:6]) + f",... ({len(names)} columns)"


def _check_shape(sample: Table, table: Table) -> list[str]:
    if not table.rows:
        return [f"the file has a header but no rows; the sample has {len(sample.rows)} (one per test id)"]
    width = len(table.header)
    bad = [f"line {ln} has {len(row)}" for row, ln in zip(table.rows, table.lines, strict=True) if len(row) != width]
    if bad:
        return [f"rows with the wrong number of fields ({first(bad)}; the header has {width}): an unquoted comma "
                "inside a value? quote it or remove it"]
    return []


def _check_ids(sample: Table, table: Table, ids: list[str], id_col: str) -> list[str]:
    errors = []
    want = sample.column(id_col)
    want_set = set(want)
    if len(ids) != len(want):
        errors.append(f"the file has {len(ids)} rows, the sample has {len(want)}: write exactly one row per sample id")
    blank = [f"line {line}" for i, line in zip(ids, table.lines, strict=True) if not i.strip()]
    if blank:
        errors.append(f"empty id in column {id_col!r} on {first(blank)}; every row needs its sample id")
    spaced = [f"line {line} ({i!r})" for i, line in zip(ids, table.lines, strict=True) if i.strip() and i != i.strip()]
    if spaced:
        errors.append(f"ids have leading/trailing whitespace ({first(spaced)}): strip them")
    counts = Counter(ids)
    lines_of: dict[str, list[int]] = {}
    for i, line in zip(ids, table.lines, strict=True):
        lines_of.setdefault(i, []).append(line)
    dupes = [f"{i!r} (lines {', '.join(map(str, lines_of[i][:SHOW]))})" for i, n in counts.items() if n > 1]
    if dupes:
        errors.append(f"duplicated ids: {first(dupes)}; each sample id must appear exactly once")
    extra = [i for i in counts if i not in want_set and i.strip() and i == i.strip()]
    # a sample id present only with whitespace around it is reported once, as whitespace, not again as missing
    stripped = {i.strip() for i in counts if i != i.strip()}
    missing = [w for w in want if w not in counts and w not in stripped]
    hint = id_hint(extra, missing, id_col)
    if hint:
        errors.append(f"{hint}; {len(extra)} id(s) affected")
        if len(missing) <= len(extra):
            return errors  # the hint explains every mismatch; listing the ids again adds nothing
    if missing:
        shown = first([repr(m) for m in missing])
        errors.append(f"{len(missing)} sample id(s) missing from column {id_col!r}: {shown}")
    if extra and not hint:
        shown = first([f"{e!r} (line {lines_of[e][0]})" for e in extra])
        errors.append(f"{len(extra)} id(s) not in the sample: {shown}; the ids must be the sample's ids")
    return errors


def _check_empty(values: np.ndarray, cols: list[str], ids: list[str], lines: list[int],
                 blank_ok: bool = False) -> list[str]:
    """Empty and NaN cells (an empty cell is a prediction only where the kind says so: an image without tags)."""
    errors = []
    # np.char, not np.strings (numpy >= 2 only): the kernel runs on Kaggle images that still ship numpy 1.26
    stripped = np.char.strip(values)
    for j, col in enumerate(cols):
        cells = values[:, j]
        empty = np.flatnonzero(np.char.str_len(stripped[:, j]) == 0) if not blank_ok else []
        if len(empty):
            errors.append(f"empty value(s) in column {col!r} on {first([_at(lines, ids, i) for i in empty])}: every "
                          "cell needs a prediction (a NaN written by pandas comes out empty)")
        nan = np.flatnonzero(np.isin(stripped[:, j], list(_NAN_WORDS)))
        if len(nan):
            errors.append(f"missing value(s) {str(cells[nan[0]])!r} in column {col!r} on "
                          f"{first([_at(lines, ids, i) for i in nan])}: fill the NaNs with real predictions")
    return errors
