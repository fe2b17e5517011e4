"""`comp check FILE --fix OUT`: rewrite a submission into the sample's exact format, saying what changed.

Only what has one right answer is rewritten: the encoding (a BOM, UTF-16), line endings, the separator, a pandas
index column or an empty trailing column, column names in another case or with spaces, the column order, the row
order, ids that lost or gained the sample's extension, their leading zeros or a '.0', stray whitespace, labels spelled
with '_' for spaces or in another case, integral floats as class ids, top-k lists with other separators, and
probability rows that do not sum to 1 (divided by their sum, as Kaggle's scorer does). Anything else (a missing id, an
unknown class, logits, an empty cell) would need a guess: it is refused and nothing is written.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from comp.core import atomic
from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.kinds import Cells, Refused, kind_of
from comp.submission import ledger
from comp.submission.check import check_bytes
from comp.submission.parse import INTEGER, CheckReport, Table, first, parse_csv, read_sample, read_zipped_csv


@dataclass
class FixResult:
    """What `fix_file` did: `changes` (one line each), or `refused` (then nothing was written); `report` is the check
    of the written file."""

    changes: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    report: CheckReport | None = None

    @property
    def ok(self) -> bool:
        return not self.refused


_Refuse = Refused  # one problem that cannot be fixed without guessing (the kinds raise it too)


def fix_file(comp: Competition, ws: Workspace, path: str | os.PathLike, out: str | os.PathLike,
             force: bool = False) -> FixResult:
    """Rewrite the submission at `path` into the sample's exact format at `out` (atomically; a results zip when `out`
    ends in .zip). Nothing is written when a problem needs a guess: `refused` says which. An existing `out` is
    replaced only with `force`, and never when the ledger holds it (`ledger.refuse_overwrite`)."""
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise CompError(f"{path} not found: pass the submission CSV to fix")
    if out.resolve() == path.resolve():
        raise CompError(f"--fix {out}: write the fixed file elsewhere, not over {path} (keep the original)")
    if out.is_dir():
        raise CompError(f"--fix {out} is a folder; give the file to write, e.g. --fix {out / 'fixed.csv'}")
    ledger.refuse_overwrite(ws, out, force, "write the fixed copy to a new file (--fix OUT)")
    data, member = path.read_bytes(), ""
    if zipfile.is_zipfile(path):
        data, where = read_zipped_csv(path)
        member = where.rsplit(":", 1)[1]
    result = FixResult()
    try:
        fixed = _fix(comp, ws, data, result.changes)
    except _Refuse as err:
        result.refused.append(str(err))
        return result
    report = check_bytes(comp, ws, fixed, str(out))
    if report.errors:  # a fix must never write a file that fails: what is left needs a person
        result.refused.extend(report.errors)
        return result
    result.report = report
    if out.suffix.lower() == ".zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(member or comp.submission_zip_name or "prediction.csv", fixed)
        fixed = buffer.getvalue()
    atomic.write_bytes(out, fixed)
    return result


def _fix(comp: Competition, ws: Workspace, data: bytes, changes: list[str]) -> bytes:
    sample = read_sample(comp, ws)
    text = _decode(data, changes)
    table = _parse(text, sample, changes)
    table = _fix_header(table, sample, changes)
    bad = [f"line {ln} has {len(row)}" for row, ln in zip(table.rows, table.lines, strict=True)
           if len(row) != len(table.header)]
    if bad:
        raise _Refuse(f"rows with the wrong number of fields ({first(bad)}; the header has {len(table.header)}): "
                      "which value belongs to which column is a guess")
    _strip_cells(table, changes)
    table = _fix_ids(table, sample, comp.id_column, changes)
    label_cols = [c for c in sample.header if c != comp.id_column]
    values = np.array(table.rows, dtype=object)[:, [table.header.index(c) for c in label_cols]]
    kind = kind_of(comp)
    sample_cells = np.array([sample.column(c) for c in label_cols], dtype=str).T.reshape(len(sample.rows), -1)
    empty = [f"line {table.lines[i]}" for i in np.flatnonzero((values == "").any(axis=1))]
    if empty and not kind.empty_allowed(sample_cells):
        raise _Refuse(f"empty value(s) on {first(empty)}: only a prediction can fill them")
    values = kind.fix(comp, Cells(label_cols, values, table.column(comp.id_column), table.lines), changes)
    ids = np.array(table.column(comp.id_column), dtype=object)[:, None]
    rows = np.concatenate([ids, values], axis=1)[:, [[comp.id_column, *label_cols].index(c) for c in sample.header]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(sample.header)
    writer.writerows(rows.tolist())
    return buffer.getvalue().encode("utf-8")


# ---------------------------------------------------------------------------------------------------------------
# Bytes, separator, header


def _decode(data: bytes, changes: list[str]) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        changes.append("re-encoded from UTF-16 to UTF-8")
        text = data.decode("utf-16")
    else:
        if data.startswith(codecs.BOM_UTF8):
            changes.append("removed the UTF-8 byte-order mark (BOM)")
            data = data[len(codecs.BOM_UTF8):]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _Refuse(f"the file is not UTF-8 (byte 0x{data[err.start]:02x}): which encoding it is would be a "
                          "guess; re-save it as UTF-8") from None
    if "\r\n" in text:
        changes.append("line endings CRLF -> LF")
    return text


def _parse(text: str, sample: Table, changes: list[str]) -> Table:
    try:
        table = parse_csv(text.encode("utf-8"), "the file")
    except CompError as err:
        raise _Refuse(str(err)) from None
    want = len(sample.header)
    if len(table.header) == 1 and want > 1:
        for name, sep in (("semicolons", ";"), ("tabs", "\t"), ("'|'", "|")):
            if text.splitlines()[0].count(sep) == want - 1:
                changes.append(f"fields separated by {name} -> commas")
                rows = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=sep) if row]
                lines = list(range(2, len(rows) + 1))
                return Table(header=rows[0], rows=rows[1:], lines=lines)
    return table


def _fix_header(table: Table, sample: Table, changes: list[str]) -> Table:
    want, got = sample.header, table.header
    if got and got[0] in set(sample.column(want[0])) and len(got) == len(want) == 2:
        changes.append(f"added the missing header row {','.join(want)}")
        return Table(header=list(want), rows=[got, *table.rows], lines=[1, *table.lines])
    # Columns the sample lacks and no row fills (a trailing comma on every line, 'index,' added by hand) carry nothing
    empty = [j for j, g in enumerate(got) if g not in want and all(j >= len(r) or not r[j].strip() for r in table.rows)]
    if empty and len(got) - len(empty) >= len(want):
        changes.append(f"dropped empty column(s) {first([repr(got[j]) for j in empty])} the sample does not have")
        keep = [j for j in range(len(got)) if j not in empty]
        table = Table(header=[got[j] for j in keep], rows=[[r[j] for j in keep if j < len(r)] for r in table.rows],
                      lines=table.lines)
        got = table.header
    index_like = got and (got[0] in ("", "index", "level_0") or got[0].startswith("Unnamed"))
    if len(got) == len(want) + 1 and index_like and sorted(got[1:]) == sorted(want):
        changes.append(f"dropped the pandas index column {got[0]!r}")
        table = Table(header=got[1:], rows=[r[1:] for r in table.rows], lines=table.lines)
        got = table.header
    if got != want:
        by_norm = {w.strip().lower(): w for w in want}
        renamed = [by_norm.get(g.strip().lower(), g) for g in got]
        if sorted(renamed) == sorted(want) and len(set(renamed)) == len(renamed):
            spelled = [f"{g!r} -> {r!r}" for g, r in zip(got, renamed, strict=True) if g != r]
            if spelled:
                changes.append(f"renamed column(s) {first(spelled)} as the sample spells them")
            table = Table(header=renamed, rows=table.rows, lines=table.lines)
    if sorted(table.header) != sorted(want) or len(set(table.header)) != len(table.header):
        missing = [w for w in want if w not in table.header]
        extra = [g for g in table.header if g not in want]
        raise _Refuse(f"the columns {','.join(table.header[:8])} are not the sample's "
                      f"({','.join(want[:8])}{', ...' if len(want) > 8 else ''}): "
                      + (f"missing {first([repr(m) for m in missing])}; " if missing else "")
                      + (f"unexpected {first([repr(e) for e in extra])}; " if extra else "")
                      + "which column is which would be a guess")
    if table.header != want:
        shown = ",".join(want[:6]) + ("..." if len(want) > 6 else "")
        changes.append(f"columns reordered to the sample's order ({shown})")
    return table


def _strip_cells(table: Table, changes: list[str]) -> None:
    n = 0
    for row in table.rows:
        for j, cell in enumerate(row):
            if cell != cell.strip():
                row[j] = cell.strip()
                n += 1
    if n:
        changes.append(f"removed whitespace around {n} cell(s)")


# ---------------------------------------------------------------------------------------------------------------
# Ids and row order


def _id_spellings(sample_ids: list[str]) -> list[tuple[str, Callable[[str], str]]]:
    """Ways an id may be misspelt, each a function from the file's spelling to the sample's (tried in order)."""
    exts = {os.path.splitext(s)[1] for s in sample_ids}
    ext = exts.pop() if len(exts) == 1 else ""
    by_int = {}
    for s in sample_ids:
        stem, e = os.path.splitext(s)
        if INTEGER.fullmatch(stem):
            by_int[(int(stem), e)] = s
    lower = {s.lower(): s for s in sample_ids}

    def zeros(x: str) -> str:
        stem, e = os.path.splitext(x)
        return by_int.get((int(stem), e), x) if INTEGER.fullmatch(stem) else x

    return [
        (f"added the {ext!r} extension the sample's ids have", lambda x: x + ext if ext else x),
        ("removed the extension the sample's ids lack", lambda x: os.path.splitext(x)[0]),
        ("ids written as floats ('.0') -> as the sample writes them", lambda x: x[:-2] if x.endswith(".0") else x),
        ("restored the ids' leading zeros", zeros),
        ("removed the folder in front of the ids", lambda x: x.rsplit("/", 1)[-1]),
        ("ids respelled in the sample's case", lambda x: lower.get(x.lower(), x)),
    ]


def _fix_ids(table: Table, sample: Table, id_col: str, changes: list[str]) -> Table:
    want = sample.column(id_col)
    known = set(want)
    at = table.header.index(id_col)
    ids = [row[at] for row in table.rows]
    odd = sorted({i for i in ids if i not in known})
    if odd:
        for what, respell in _id_spellings(want):
            mapped = {i: respell(i) for i in odd}
            if all(m in known for m in mapped.values()):
                ids = [mapped.get(i, i) for i in ids]
                changes.append(f"{what} ({len(odd)} id(s), e.g. {odd[0]!r} -> {mapped[odd[0]]!r})")
                break
    seen: dict[str, int] = {}
    dupes = []
    for k, i in enumerate(ids):
        if i in seen:
            dupes.append(f"{i!r} (lines {table.lines[seen[i]]}, {table.lines[k]})")
        seen[i] = k
    extra = [i for i in ids if i not in known]
    missing = [w for w in want if w not in seen]
    problems = []
    if dupes:
        problems.append(f"duplicated ids {first(dupes)}: which row to keep is a guess")
    if extra:
        problems.append(f"{len(extra)} id(s) not in the sample ({first([repr(e) for e in extra])})")
    if missing:
        problems.append(f"{len(missing)} sample id(s) have no row ({first([repr(m) for m in missing])}): only a "
                        "prediction can fill them")
    if problems:
        raise _Refuse("; ".join(problems))
    if [ids[seen[w]] for w in want] != ids:
        changes.append("rows reordered to the sample's order")
    rows = []
    for w in want:
        row = list(table.rows[seen[w]])
        row[at] = w
        rows.append(row)
    return Table(header=table.header, rows=rows, lines=[table.lines[seen[w]] for w in want])
