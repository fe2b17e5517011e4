"""A battery of malformed submissions built from the real formats: each gets its own specific message.

Every case starts from a valid submission written by the writer for one format (tests/test_submission.py builds
them around ../shared/formats when present, and around synthetic copies with the same header otherwise), breaks
it the way people really do, and asserts on the distinctive part of the message `check_file` gives.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable

import numpy as np
import pytest
from test_submission import CIFAR, FORMATS, REAL, build_format, valid_submission

from comp.core.config import Competition
from comp.core.workspace import Workspace
from comp.submission.check import check_file

Rows = list[list[str]]


def _rows(data: bytes) -> Rows:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def _bytes(rows: Rows, sep: str = ",", eol: str = "\n", quoting: int = csv.QUOTE_MINIMAL,
           encoding: str = "utf-8") -> bytes:
    buf = io.StringIO()
    csv.writer(buf, delimiter=sep, lineterminator=eol, quoting=quoting).writerows(rows)
    return buf.getvalue().encode(encoding)


def _label(comp: Competition, rows: Rows) -> int:
    return rows[0].index(comp.label_columns[0] if comp.kind != "class_probs" else rows[0][1])


def _set_labels(value: Callable[[str], str]) -> Callable[[Competition, Rows], bytes]:
    def mutate(comp: Competition, rows: Rows) -> bytes:
        j = _label(comp, rows)
        for row in rows[1:]:
            row[j] = value(row[j])
        return _bytes(rows)
    return mutate


def _set_cell(row: int, value: str, column: int | None = None) -> Callable[[Competition, Rows], bytes]:
    def mutate(comp: Competition, rows: Rows) -> bytes:
        rows[row][_label(comp, rows) if column is None else column] = value
        return _bytes(rows)
    return mutate


def _set_ids(value: Callable[[str], str]) -> Callable[[Competition, Rows], bytes]:
    def mutate(comp: Competition, rows: Rows) -> bytes:
        j = rows[0].index(comp.id_column)
        for row in rows[1:]:
            row[j] = value(row[j])
        return _bytes(rows)
    return mutate


def _with_rows(change: Callable[[Rows], Rows], **kw) -> Callable[[Competition, Rows], bytes]:
    return lambda comp, rows: _bytes(change(rows), **kw)


def _index_column(comp: Competition, rows: Rows) -> bytes:
    return _bytes([["", *rows[0]]] + [[str(i), *row] for i, row in enumerate(rows[1:])])


def _reset_index_column(comp: Competition, rows: Rows) -> bytes:
    return _bytes([["index", *rows[0]]] + [[str(i), *row] for i, row in enumerate(rows[1:])])


def _logits(comp: Competition, rows: Rows) -> bytes:
    rng = np.random.default_rng(0)
    return _bytes([rows[0]] + [[row[0], *(f"{v:.4f}" for v in rng.normal(0, 3, len(row) - 1))] for row in rows[1:]])


def _zero_row(comp: Competition, rows: Rows) -> bytes:
    rows[2][1:] = ["0"] * (len(rows[2]) - 1)
    return _bytes(rows)


def _ragged(comp: Competition, rows: Rows) -> bytes:
    rows[1] = [rows[1][0], *rows[1][1].split(" ", 1)]  # "a,b c" written as "a,b,c": one field too many
    return _bytes(rows)


def _known(comp: Competition, n: int) -> str:
    return " ".join(comp.classes[:n])


# (case, format, mutation, the distinctive part of the message)
BATTERY: list[tuple[str, str, Callable[[Competition, Rows], bytes], str]] = [
    # header
    ("wrong header", "cifar-10", _with_rows(lambda r: [["id", "prediction"], *r[1:]]),
     "unexpected column(s) 'prediction'"),
    ("header in the wrong case", "alaska2", _with_rows(lambda r: [["id", "Label"], *r[1:]]),
     "column 'id' should be named 'Id'"),
    ("a class column missing", "dog-breed", _with_rows(lambda r: [row[:-1] for row in r]), "missing column(s)"),
    ("a column twice", "cifar-10", _with_rows(lambda r: [[*row, row[1]] for row in r]), "appear more than once"),
    ("pandas index column", "cifar-10", _index_column, "looks like a pandas index column"),
    ("a reset_index() column", "humpback", _reset_index_column, "the first column 'index' looks like a pandas index"),
    ("semicolons", "cifar-10", _with_rows(lambda r: r, sep=";"), "separated by semicolons"),
    ("tabs", "humpback", _with_rows(lambda r: r, sep="\t"), "separated by tabs"),
    ("no header row", "cassava", _with_rows(lambda r: r[1:]), "has no header row"),
    ("header only", "aerial-cactus", _with_rows(lambda r: r[:1]), "has a header but no rows"),
    ("empty file", "cifar-10", lambda comp, rows: b"", "is empty"),
    ("latin-1 bytes", "cifar-10", lambda comp, rows: _bytes([*rows[:1], [rows[1][0], "caf\xe9"], *rows[2:]],
                                                                encoding="latin-1"), "is not UTF-8: byte 0xe9"),
    ("utf-16", "cifar-10", lambda comp, rows: codecs.BOM_UTF16_LE + _bytes(rows).decode().encode("utf-16-le"),
     "UTF-16"),
    ("an unquoted separator inside a value", "humpback", _ragged, "wrong number of fields"),
    # ids
    ("missing ids", "cifar-10", _with_rows(lambda r: [r[0], *r[4:]]), "3 sample id(s) missing from column 'id'"),
    ("an extra id", "humpback", _with_rows(lambda r: [*r, ["zzzz.jpg", "new_whale"]]),
     "1 id(s) not in the sample: 'zzzz.jpg'"),
    ("a duplicated id", "cassava", _with_rows(lambda r: [*r, r[1]]), "duplicated ids"),
    ("a different row count", "alaska2", _with_rows(lambda r: r[: len(r) // 2]), "rows, the sample has"),
    ("ids without the extension", "aerial-cactus", _set_ids(lambda i: i.removesuffix(".jpg")),
     "ids lack the '.jpg' extension the sample uses"),
    ("ids with an extension the sample lacks", "dog-breed", _set_ids(lambda i: i + ".jpg"),
     "ids carry the '.jpg' extension the sample's ids lack"),
    ("ids with a folder", "cassava", _set_ids(lambda i: "test_images/" + i), "ids carry a folder"),
    ("a trailing comma on every line", "cifar-10", _with_rows(lambda r: [[*row, ""] for row in r]),
     "ends with an extra comma"),
    ("ids written as floats", "cifar-10", _set_ids(lambda i: i + ".0"), "ids were written as floats"),
    ("ids that lost leading zeros", "nycu", _set_ids(lambda i: str(int(i))), "ids lost their leading zeros"),
    ("whitespace around ids", "cassava", _set_ids(lambda i: " " + i), "ids have leading/trailing whitespace"),
    ("an empty id", "cifar-10", _set_cell(2, "", column=0), "empty id in column 'id' on line 3"),
    # empty and missing values
    ("an empty value", "cifar-10", _set_cell(3, ""), "empty value(s) in column 'label' on line 4"),
    ("NaN", "dog-breed", _set_cell(1, "nan"), "missing value(s) 'nan'"),
    ("NaN in a binary column", "aerial-cactus", _set_cell(5, "NaN"), "missing value(s) 'NaN'"),
    # probabilities
    ("logits instead of probabilities", "dog-breed", _logits, "looks like logits, not probabilities: apply softmax"),
    ("a negative probability", "dog-breed", _set_cell(2, "-0.01"), "negative probability"),
    ("an all-zero probability row", "dog-breed", _zero_row, "1 row(s) are all zero (line 3"),
    ("a number pandas cannot read", "aerial-cactus", _set_cell(2, "0.0_5"), "as the grader (pandas) reads"),
    ("a word in a probability column", "aerial-cactus", _set_cell(4, "yes"), "not a number"),
    ("an infinite probability", "alaska2", _set_cell(4, "inf"), "infinite value(s)"),
    # class names and ids
    ("folder names instead of class names", "paddy", _set_labels(lambda v: v.replace(" ", "_")),
     "holds folder names ("),
    ("class indices instead of class names", "cifar-10", _set_labels(lambda v: str(CIFAR.index(v))),
     "holds folder names or class indices"),
    ("an unknown class", "cifar-10", _set_cell(2, "spaceship"), "unknown class(es) in column 'label': line 3"),
    ("a class in the wrong case", "cifar-10", _set_labels(str.capitalize), "differ in case"),
    ("whitespace around a label", "cifar-10", _set_cell(2, "cat "), "labels in column 'label' have leading/trailing"),
    ("float class ids", "cassava", _set_labels(lambda v: v + ".0"), "float class ids"),
    ("class names instead of ids", "cassava", _set_cell(1, "Healthy"), "must hold integer class ids"),
    ("a zero-padded class id", "nycu", _set_cell(1, "07"), "leading zeros or signs"),
    ("an unknown class id", "nycu", _set_cell(1, "100"), "unknown class id(s) in column 'pred_label'"),
    # top-k
    ("top-k with 6 labels", "humpback", lambda comp, rows: _set_cell(1, _known(comp, 6))(comp, rows),
     "more than top_k = 5"),
    ("top-k with a duplicate", "humpback", _set_cell(1, "new_whale new_whale"), "repeats a label"),
    ("top-k separated by commas", "humpback", lambda comp, rows: _set_cell(1, _known(comp, 2).replace(" ", ","))(
        comp, rows), "other than single spaces"),
    ("top-k with double spaces", "humpback", lambda comp, rows: _set_cell(1, _known(comp, 2).replace(" ", "  "))(
        comp, rows), "extra spaces"),
    ("top-k with an unknown label", "humpback", _set_cell(1, "new_whale w_unknown"), "unknown label(s)"),
]


VALID = {
    "shuffled rows": lambda rows: _bytes([rows[0], *rows[:0:-1]]),
    "CRLF": lambda rows: _bytes(rows, eol="\r\n"),
    "quoted fields": lambda rows: _bytes(rows, quoting=csv.QUOTE_ALL),
    "BOM": lambda rows: codecs.BOM_UTF8 + _bytes(rows),
    "trailing blank line": lambda rows: _bytes(rows) + b"\n",
    "all at once": lambda rows: codecs.BOM_UTF8 + _bytes([rows[0], *rows[:0:-1]], eol="\r\n", quoting=csv.QUOTE_ALL),
    "reordered columns": lambda rows: _bytes([row[::-1] for row in rows]),  # valid: graders select by name
}


def _setup(name: str, source: str, request, workspace) -> tuple[Competition, Workspace, Rows]:
    shared = request.getfixturevalue("shared") if source == "real" else None
    comp = build_format(name, workspace, shared)
    ws = Workspace(workspace)
    return comp, ws, _rows(valid_submission(comp, ws))


def _params(cases):
    out = []
    for case in cases:
        fmt = case[1]
        out.append(pytest.param(*case, "synthetic", id=f"{case[0]}-synthetic"))
        if fmt in REAL:
            out.append(pytest.param(*case, "real", id=f"{case[0]}-real"))
    return out


def test_the_battery_is_big_enough():
    assert len(BATTERY) >= 25
    assert {fmt for _, fmt, _, _ in BATTERY} == set(FORMATS)  # every format is broken at least once


@pytest.mark.parametrize(("case", "fmt", "mutate", "expected", "source"), _params(BATTERY))
def test_malformed_submission_gets_its_specific_message(case, fmt, mutate, expected, source, request, workspace):
    comp, ws, rows = _setup(fmt, source, request, workspace)
    path = workspace / "submission.csv"
    path.write_bytes(mutate(comp, rows))
    report = check_file(comp, ws, path)
    assert not report.ok, f"{case}: no error"
    assert any(expected in e for e in report.errors), f"{case}: {report.errors}"


@pytest.mark.parametrize("variant", list(VALID))
@pytest.mark.parametrize(("fmt", "source"), [(f, "synthetic") for f in FORMATS] + [(f, "real") for f in REAL])
def test_valid_variants_pass(variant, fmt, source, request, workspace):
    comp, ws, rows = _setup(fmt, source, request, workspace)
    path = workspace / "submission.csv"
    path.write_bytes(VALID[variant](rows))
    report = check_file(comp, ws, path)
    assert report.errors == []
