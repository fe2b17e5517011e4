"""Reading submissions as the platforms read them: a CSV as text cells, a results zip, the sample, earlier files.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.provenance import sha256_bytes, sha256_file
from comp.core.workspace import Workspace
from comp.kinds.values import INTEGER, NUMBER, SHOW, first, labels_of, parse_numbers

__all__ = ["INTEGER", "NUMBER", "SHOW", "CheckReport", "Table", "first", "id_hint", "labels_of", "parse_csv",
           "parse_numbers", "read_sample", "read_zipped_csv", "same_as_earlier"]

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

    def select(self, names: list[str]) -> Table:
        """The same rows with columns `names` in that order (each a column of this table)."""
        at = [self.header.index(n) for n in names]
        return Table(header=list(names), rows=[[row[j] for j in at] for row in self.rows], lines=self.lines)


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
    by_int = {k: m for m in missing if (k := _int_key(m))}
    if all((k := _int_key(x)) and k in by_int for x in probe):  # '1' for '0001', '1.jpg' for '0001.jpg'
        return (f"ids lost their leading zeros (e.g. {probe[0]!r}, the sample has {by_int[_int_key(probe[0])]!r}): "
                f"read and write column {id_col!r} as text (dtype=str)")
    if all("/" in x and x.rsplit("/", 1)[1] in miss for x in probe):
        folder = probe[0].rsplit("/", 1)[0] + "/"
        return f"ids carry a folder the sample's ids lack (e.g. {probe[0]!r}): drop {folder!r}, write the file name"
    lower = {m.lower(): m for m in missing}
    if all(x.lower() in lower for x in probe):
        return f"ids differ in case from the sample's (e.g. {probe[0]!r}, the sample has {lower[probe[0].lower()]!r})"
    return ""


def _int_key(value: str) -> tuple[int, str] | None:
    """An id whose name is an integer, as (number, extension): '0001.jpg' and '1.jpg' share (1, '.jpg')."""
    stem, ext = os.path.splitext(value)
    return (int(stem), ext) if INTEGER.fullmatch(stem) else None


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
