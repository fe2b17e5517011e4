"""`comp check FILE --fix OUT`: what has one right answer is rewritten into the sample's exact format and each change
is reported; what would need a guess is refused and nothing is written. Competitions are generated (all five kinds,
three seeds), as in test_check_verdicts.py."""

from __future__ import annotations

import codecs
import csv
import io
import zipfile

import numpy as np
import pytest
from test_check_verdicts import KINDS, SEEDS, Generated, generate, to_bytes

from comp.submission.check import check_file
from comp.submission.fix import fix_file


def _messy(gen: Generated) -> bytes:
    """Everything fixable at once: BOM, CRLF, columns reversed, rows reversed, spaces around ids, ids without their
    extension (or without their leading zeros), labels respelled per kind, probability rows scaled by 2."""
    header, *body = [list(r) for r in gen.rows]
    kind = gen.comp.kind
    for k, row in enumerate(body):
        stem, dot, ext = row[0].partition(".")
        row[0] = f" {stem if dot and k % 2 else str(int(stem)) + dot + ext} " if not dot or k % 2 else f" {row[0]}"
        if kind == "class_name":
            row[1] = row[1].upper().replace(" ", "_") if k % 2 else row[1]
        elif kind == "class_id":
            row[1] = row[1] + ".0" if k % 2 else row[1]
        elif kind == "topk":
            row[1] = ",".join(row[1].split(" "))
        elif kind == "class_probs":
            row[1:] = [f"{float(v) * 2:.9g}" for v in row[1:]]
    rows = [header[::-1], *(row[::-1] for row in body[::-1])]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return codecs.BOM_UTF8 + buffer.getvalue().encode("utf-8")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_messy_but_fixable_file_becomes_the_exact_format(kind, seed, workspace):
    gen = generate(kind, seed, workspace)
    bad, out = workspace / "bad.csv", workspace / "fixed.csv"
    bad.write_bytes(_messy(gen))
    assert not check_file(gen.comp, gen.ws, bad).ok
    result = fix_file(gen.comp, gen.ws, bad, out)
    assert result.ok, result.refused
    said = "\n".join(result.changes)
    for expected in ("BOM", "CRLF", "columns reordered", "rows reordered", "whitespace around"):
        assert expected in said, said
    report = check_file(gen.comp, gen.ws, out)
    assert report.errors == [] and report.warnings == []
    want = to_bytes(gen.rows)
    if kind == "class_probs":  # rescaled rows are rewritten with the writer's digits: equal as numbers
        assert "divided" in said
        got = np.array([r[1:] for r in csv.reader(io.StringIO(out.read_text()))][1:], dtype=float)
        ref = np.array([r[1:] for r in gen.rows[1:]], dtype=float)
        assert np.allclose(got, ref, atol=1e-8)
    else:
        assert out.read_bytes() == want


REFUSED = {
    "a missing row": (lambda g: to_bytes([g.rows[0], *g.rows[2:]]), "have no row"),
    "an unknown label": (lambda g: to_bytes([g.rows[0], [g.rows[1][0], *["zz_nothing"] * (len(g.rows[0]) - 1)],
                                             *g.rows[2:]]), "not a class"),
    "an empty cell": (lambda g: to_bytes([g.rows[0], [g.rows[1][0], *[""] * (len(g.rows[0]) - 1)], *g.rows[2:]]),
                      "empty value"),
    "a duplicated id with another label": (lambda g: to_bytes([*g.rows, [g.rows[1][0], *g.rows[2][1:]]]),
                                           "duplicated ids"),
    "latin-1 bytes": (lambda g: to_bytes(g.rows)[:-1] + "\xe9\n".encode("latin-1"), "not UTF-8"),
}


@pytest.mark.parametrize("case", list(REFUSED))
@pytest.mark.parametrize("kind", KINDS)
def test_what_needs_a_guess_is_refused_and_nothing_written(case, kind, workspace):
    gen = generate(kind, 1, workspace)
    mutate, expected = REFUSED[case]
    if case == "an unknown label" and kind in ("binary", "class_probs"):
        expected = "not numbers"
    bad, out = workspace / "bad.csv", workspace / "fixed.csv"
    bad.write_bytes(mutate(gen))
    result = fix_file(gen.comp, gen.ws, bad, out)
    assert not result.ok and any(expected in r for r in result.refused), result.refused
    assert not out.exists()


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("class_probs", "-0.2", "negative"),
    ("binary", "nan", "not numbers"),
    ("class_id", "7.5", "not a class"),
])
def test_logits_nans_and_fractions_are_not_guessed(kind, value, expected, workspace):
    gen = generate(kind, 2, workspace)
    rows = [list(r) for r in gen.rows]
    rows[3][1] = value
    (workspace / "bad.csv").write_bytes(to_bytes(rows))
    result = fix_file(gen.comp, gen.ws, workspace / "bad.csv", workspace / "out.csv")
    assert any(expected in r for r in result.refused), result.refused


def test_a_results_zip_is_fixed_into_a_zip(workspace):
    gen = generate("class_id", 1, workspace)
    with zipfile.ZipFile(workspace / "in.zip", "w") as archive:
        archive.writestr("prediction.csv", _messy(gen))
    result = fix_file(gen.comp, gen.ws, workspace / "in.zip", workspace / "out.zip")
    assert result.ok, result.refused
    with zipfile.ZipFile(workspace / "out.zip") as archive:
        assert archive.namelist() == ["prediction.csv"] and archive.read("prediction.csv") == to_bytes(gen.rows)


def test_cli_reports_each_change_and_refuses_with_exit_1(cli, workspace):
    gen = generate("class_name", 3, workspace)
    gen.ws.save(gen.comp)
    (workspace / "bad.csv").write_bytes(_messy(gen))
    code, out = cli("check", "bad.csv", "--fix", "good.csv")
    assert code == 0, out
    assert "fixed: removed the UTF-8 byte-order mark" in out and "labels respelled" in out and "wrote" in out
    assert (workspace / "good.csv").read_bytes() == to_bytes(gen.rows)
    assert cli("check", "good.csv")[0] == 0
    (workspace / "worse.csv").write_bytes(to_bytes([gen.rows[0], *gen.rows[3:]]))
    code, out = cli("check", "worse.csv", "--fix", "out.csv")
    assert code == 1 and "cannot fix" in out and "nothing was written" in out
    assert not (workspace / "out.csv").exists()


def test_empty_extra_columns_are_dropped_but_filled_ones_refused(workspace):
    gen = generate("class_name", 2, workspace)
    # a column "notes" no row fills, and a trailing comma on every line
    rows = [[*gen.rows[0], "notes", ""], *([*r, "", ""] for r in gen.rows[1:])]
    (workspace / "extra.csv").write_bytes(to_bytes(rows))
    result = fix_file(gen.comp, gen.ws, workspace / "extra.csv", workspace / "out.csv")
    assert result.ok and any("dropped empty column(s) 'notes', ''" in c for c in result.changes), result.changes
    assert (workspace / "out.csv").read_bytes() == to_bytes(gen.rows)
    rows[3][-2] = "7"  # one row fills 'notes': what it means is a guess
    (workspace / "extra.csv").write_bytes(to_bytes(rows))
    result = fix_file(gen.comp, gen.ws, workspace / "extra.csv", workspace / "out2.csv")
    assert any("unexpected 'notes'" in r for r in result.refused) and not (workspace / "out2.csv").exists()
