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
"""

from __future__ import annotations

import os
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.setup.scan import normalise_label
from comp.submission.parse import (
    INTEGER,
    NUMBER,
    SHOW,
    CheckReport,
    Table,
    first,
    id_hint,
    labels_of,
    parse_csv,
    parse_numbers,
    read_sample,
    read_zipped_csv,
    same_as_earlier,
)
from comp.submission.warnings import RANK_METRICS, distribution_warnings

SUM_WARN = 1e-3  # a probability row whose sum strays further from 1 is rescaled by Kaggle: scoreable, but warned
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
    empty = _check_empty(values, label_cols, ids, table.lines)
    report.errors.extend(empty)
    numbers = None
    if not empty:
        numbers = parse_numbers(values) if comp.kind in ("binary", "class_probs") else None  # parsed once
        _check_labels(report, comp, label_cols, values, numbers, ids, table.lines)
    if report.ok:
        report.warnings.extend(distribution_warnings(comp, ws, label_cols, values, numbers))
    return report


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


def _check_empty(values: np.ndarray, cols: list[str], ids: list[str], lines: list[int]) -> list[str]:
    errors = []
    stripped = np.strings.strip(values)
    for j, col in enumerate(cols):
        cells = values[:, j]
        empty = np.flatnonzero(np.strings.str_len(stripped[:, j]) == 0)
        if len(empty):
            errors.append(f"empty value(s) in column {col!r} on {first([_at(lines, ids, i) for i in empty])}: every "
                          "cell needs a prediction (a NaN written by pandas comes out empty)")
        nan = np.flatnonzero(np.isin(stripped[:, j], list(_NAN_WORDS)))
        if len(nan):
            errors.append(f"missing value(s) {str(cells[nan[0]])!r} in column {col!r} on "
                          f"{first([_at(lines, ids, i) for i in nan])}: fill the NaNs with real predictions")
    return errors


# ---------------------------------------------------------------------------------------------------------------
# Labels, per kind


def _check_labels(report: CheckReport, comp: Competition, cols: list[str], values: np.ndarray,
                  numbers: np.ndarray | None, ids: list[str], lines: list[int]) -> None:
    if comp.kind in ("binary", "class_probs"):
        _check_probabilities(report, comp, cols, values, numbers, ids, lines)
        return
    for j, col in enumerate(cols):
        check = {"class_name": _check_names, "class_id": _check_class_ids, "topk": _check_topk}[comp.kind]
        report.errors.extend(check(comp, col, values[:, j].tolist(), ids, lines))


def _check_names(comp: Competition, col: str, cells: list[str], ids: list[str], lines: list[int]) -> list[str]:
    labels = labels_of(comp)
    valid = set(labels)
    bad = [i for i, v in enumerate(cells) if v not in valid]
    if not bad:
        return []
    found = sorted({cells[i] for i in bad}, key=_natural)
    at = first([f"{_at(lines, ids, i)}: {cells[i]!r}" for i in bad])
    if all(v.strip() in valid for v in found):
        return [f"labels in column {col!r} have leading/trailing whitespace ({at}): strip them"]
    if set(found) <= set(comp.classes):
        j = comp.classes.index(found[0])
        return [f"column {col!r} holds folder names ({found[0]!r}...), the sample uses class names "
                f"({labels[j]!r}): write each class's submission label ({at})"]
    if all(INTEGER.fullmatch(v) for v in found) and not all(INTEGER.fullmatch(x) for x in labels):
        return [f"column {col!r} holds folder names or class indices {found[0]!r}..{found[-1]!r}, the sample uses "
                f"class names (e.g. {labels[0]!r}): map each index to its class name ({at})"]
    lower = {x.lower(): x for x in labels}
    if all(v.lower() in lower for v in found):
        return [f"labels in column {col!r} differ in case from the class names ({found[0]!r} vs "
                f"{lower[found[0].lower()]!r}); labels are case-sensitive ({at})"]
    spelled = {normalise_label(x): x for x in labels}
    if all(normalise_label(v) in spelled for v in found):
        return [f"labels in column {col!r} are spelled with '_' for spaces or in another case ({found[0]!r}: the "
                f"class is {spelled[normalise_label(found[0])]!r}); write the class names exactly ({at}); "
                "`comp check FILE --fix OUT` respells them"]
    return [f"unknown class(es) in column {col!r}: {at}; the known classes are {first([repr(x) for x in labels])}"]


def _check_class_ids(comp: Competition, col: str, cells: list[str], ids: list[str], lines: list[int]) -> list[str]:
    labels = labels_of(comp)
    known = {int(x) for x in labels if INTEGER.fullmatch(x)}
    names_lower = {x.lower() for x in [*labels, *comp.classes]}
    floats, names, unknown, padded, other, spaced = [], [], [], [], [], []
    for i, v in enumerate(cells):
        if v != v.strip():
            spaced.append(i)  # ' 0': the problem is the space, whatever the value
        elif INTEGER.fullmatch(v):
            if int(v) not in known:
                unknown.append(i)
            elif str(int(v)) != v:
                padded.append(i)  # "03" or "+3": a scorer comparing text would not match "3"
        elif _is_integral_float(v):
            floats.append(i)
        elif v.lower() in names_lower:
            names.append(i)
        else:
            other.append(i)
    errors = []
    show = lambda rows: first([f"{_at(lines, ids, i)}: {cells[i]!r}" for i in rows])  # noqa: E731
    if spaced:
        errors.append(f"class ids in column {col!r} have leading/trailing whitespace ({show(spaced)}): write "
                      f"{cells[spaced[0]].strip()!r}, not {cells[spaced[0]]!r}")
    if floats:
        v = cells[floats[0]]
        errors.append(f"column {col!r} holds float class ids ({show(floats)}); write integers like "
                      f"{str(int(float(v)))!r} (astype(int) before to_csv)")
    if names:
        errors.append(f"column {col!r} holds class names ({show(names)}), the sample uses integer class ids: write "
                      "each class's id")
    if padded:
        errors.append(f"column {col!r} writes class ids with leading zeros or signs ({show(padded)}); write plain "
                      "integers like '3'")
    if unknown:
        span = f"{min(known)}..{max(known)}" if known else "none"
        errors.append(f"unknown class id(s) in column {col!r} ({show(unknown)}); the known ids are {span}")
    if other:
        errors.append(f"column {col!r} must hold integer class ids; not integers: {show(other)}")
    return errors


def _check_topk(comp: Competition, col: str, cells: list[str], ids: list[str], lines: list[int]) -> list[str]:
    valid = set(labels_of(comp))
    k = comp.top_k
    problems: dict[str, list[str]] = {}
    for i, v in enumerate(cells):
        at = f"{_at(lines, ids, i)}: {v!r}"
        if any(sep in v for sep in (",", ";", "|", "\t")):
            problems.setdefault("sep", []).append(at)
            continue
        tokens = v.split(" ")
        if "" in tokens:
            problems.setdefault("space", []).append(at)
        tokens = [t for t in tokens if t]
        if len(tokens) > k:
            problems.setdefault("many", []).append(at)
        if len(set(tokens)) < len(tokens):
            problems.setdefault("dup", []).append(at)
        unknown = [t for t in tokens if t not in valid]
        if unknown:
            problems.setdefault("unknown", []).append(f"{_at(lines, ids, i)}: {unknown[0]!r}")
            problems.setdefault("tokens", []).extend(unknown)
    messages = {
        "sep": f"column {col!r} separates labels with something other than single spaces ({{}}); write "
               "' '.join(labels)",
        "space": f"column {col!r} has extra spaces between or around labels ({{}}); separate with single spaces",
        "many": f"column {col!r} lists more than top_k = {k} labels ({{}}); keep the {k} best",
        "dup": f"column {col!r} repeats a label within a row ({{}}); each label may appear once per row",
        "unknown": f"unknown label(s) in column {col!r} ({{}}); the known labels are "
                   f"{first([repr(x) for x in labels_of(comp)])}" + _respelling_hint(problems.get("tokens", []),
                                                                                      labels_of(comp)),
    }
    return [messages[key].format(first(rows)) for key, rows in problems.items() if key in messages]


def _respelling_hint(tokens: list[str], labels: list[str]) -> str:
    """' (they differ in case or in '_' vs space from known labels)' when every unknown token is one respelt."""
    spelled = {normalise_label(x): x for x in labels}
    if tokens and all(normalise_label(t) in spelled for t in tokens):
        return (f" ({tokens[0]!r} is {spelled[normalise_label(tokens[0])]!r} in another case or spelling; labels "
                "are case-sensitive: `comp check FILE --fix OUT` respells them)")
    return ""


def _check_probabilities(report: CheckReport, comp: Competition, cols: list[str], values: np.ndarray,
                         x: np.ndarray, ids: list[str], lines: list[int]) -> None:

    def cells(mask: np.ndarray) -> str:
        rows, columns = np.nonzero(mask)
        pairs = zip(rows, columns, strict=True)
        return first([f"{_at(lines, ids, i)} column {cols[j]!r}: {str(values[i, j])!r}" for i, j in pairs])

    ranked = comp.kind == "binary" and comp.metric in RANK_METRICS  # AUC reads only the order: any real score
    what = (f"the probability of class {comp.positive_class!r}" if comp.kind == "binary" and comp.positive_class
            else "probabilities")
    if ranked:
        what = "a real-valued score per row (higher: more likely positive)"
    if np.isnan(x).any():
        report.errors.append(f"not a number as the grader (pandas) reads numbers: {cells(np.isnan(x))}; the sample "
                             f"expects {what}, written with ASCII digits (no '_', no spaces inside)")
        return
    if not np.isfinite(x).all():
        report.errors.append(f"infinite value(s): {cells(~np.isfinite(x))}; write {what}"
                             + ("" if ranked else " in [0, 1]"))
        return
    if ranked:
        return
    # Per-class rows may exceed 1 (the grader divides by the row sum); a binary probability may not.
    low, high = x < 0, (x > 1) if comp.kind == "binary" else np.zeros_like(x, dtype=bool)
    if low.any() or high.any():
        squash = "a sigmoid" if comp.kind == "binary" else "softmax over each row"
        if (low.any() and (high.any() or (x > 1).any())) or (low | high).mean() > 0.25:
            report.errors.append(f"values outside [0, 1] ({cells(low | high)}): looks like logits, not "
                                 f"probabilities: apply {squash}")
        elif low.any():
            report.errors.append(f"negative probability ({cells(low)}); probabilities lie in [0, 1]: clip them")
        else:
            report.errors.append(f"probability above 1 ({cells(high)}); probabilities lie in [0, 1]: clip them")
        return
    if comp.kind == "class_probs":
        # Kaggle's multi-class log loss divides each row by its sum: any non-negative row with a positive sum scores.
        sums = x.sum(axis=1)
        zero = np.flatnonzero(sums <= 0)
        if len(zero):
            shown = first([_at(lines, ids, i) for i in zero])
            report.errors.append(f"{len(zero)} row(s) are all zero ({shown}): the grader divides each row by its "
                                 "sum, so these cannot be scored; write the model's probabilities")
            return
        off = np.flatnonzero(np.abs(sums - 1) > SUM_WARN)
        if len(off):
            shown = first([f"{_at(lines, ids, i)} sums to {sums[i]:.6g}" for i in off])
            report.warnings.append(f"{len(off)} row(s) do not sum to 1 within {SUM_WARN:g} ({shown}): Kaggle "
                                   "rescales each row by its sum, so it scores as if normalised; are these "
                                   "probabilities? (`comp check FILE --fix OUT` normalises the rows)")


def _is_integral_float(value: str) -> bool:
    if not NUMBER.fullmatch(value):  # float() would also take '٣' or '3_0'
        return False
    f = float(value)
    return bool(np.isfinite(f) and f == int(f))


def _natural(value: str) -> tuple:
    return (0, int(value), "") if INTEGER.fullmatch(value) else (1, 0, value)
