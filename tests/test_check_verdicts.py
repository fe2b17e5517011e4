"""`comp check` gives the verdict the platform's grader gives, on competitions generated here (not the real ones).

Each case is a submission generated for a random competition of one of the five kinds, then kept valid or broken
the way people do. The verdict it should get comes from `grader_verdict`, a small model of how the graders read a
file (pandas: `read_csv`, columns selected by name, ids matched as text, numbers as pandas parses them, Kaggle's
rescaling of probability rows, any real score under AUC), written independently of comp's checker. comp must agree
on accept/reject, and say the distinctive thing it is expected to say. Three seeds per case: the rules may not be
tuned to one competition's names, ids or sizes.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from comp.core.config import Competition
from comp.core.workspace import Workspace
from comp.submission.check import check_file

Rows = list[list[str]]
KINDS = ("class_name", "class_id", "binary", "class_probs", "topk")
SEEDS = (1, 2, 3)
_ADJ = ["Loose", "Common", "Black", "Scentless", "Small-flowered", "Fat", "Shepherds", "Cleavers", "wild"]
_NOUN = ["Silky-bent", "Chickweed", "grass", "Mayweed", "Cranesbill", "Hen", "Purse", "beet", "Maize"]


# ---------------------------------------------------------------------------------------------------------------
# A random competition of one kind, and a valid submission for it


@dataclass
class Generated:
    comp: Competition
    ws: Workspace
    rows: Rows  # a valid submission, header first
    ids: list[str]


def generate(kind: str, seed: int, root: Path, metric: str = "") -> Generated:
    rng = np.random.default_rng(seed * 101 + KINDS.index(kind))
    n = int(rng.integers(24, 48))
    width = int(rng.integers(3, 6))
    ext = [".jpg", ".png", ""][seed % 3]
    ids = [f"{i:0{width}d}{ext}" for i in rng.permutation(10 ** (width - 1))[:n]]  # leading zeros, some extension
    id_col = ["id", "Id", "image_id", "image_name"][seed % 4]
    label_col = ["label", "Label", "target", "pred_label"][(seed + 1) % 4]
    if kind == "class_name":
        classes = sorted({f"{_ADJ[i]} {_NOUN[j]}" for i, j in rng.integers(0, 9, (8, 2))})[: int(rng.integers(3, 6))]
    elif kind == "class_id":
        classes = [str(i) for i in range(int(rng.integers(3, 12)))]
    elif kind == "binary":
        classes = ["0", "1"]
    elif kind == "class_probs":
        classes = sorted({f"{_ADJ[i].lower()}_{_NOUN[j].lower()}" for i, j in rng.integers(0, 9, (9, 2))})[:5]
    else:
        classes = ["new_whale", *[f"w_{rng.integers(16 ** 7):07x}" for _ in range(9)]]
    metric = metric or {"binary": "roc_auc", "class_probs": "log_loss", "topk": "map@k"}.get(kind, "accuracy")
    header = [id_col, *(classes if kind == "class_probs" else [label_col])]
    placeholder = {"binary": "0.5", "class_probs": "0.2", "topk": " ".join(classes[:5])}.get(kind, classes[0])
    with open(root / "sample_submission.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([header, *([i] + [placeholder] * (len(header) - 1)
                                                                for i in ids)])
    comp = Competition(name=f"gen-{kind}-{seed}", sample_submission="sample_submission.csv", id_column=id_col,
                       label_columns=header[1:], kind=kind, metric=metric, classes=classes, top_k=5,
                       positive_class="1" if kind == "binary" else "")
    body = []
    for k, i in enumerate(ids):
        if kind == "class_probs":
            p = rng.dirichlet(np.ones(len(classes)))
            body.append([i, *(f"{v:.9g}" for v in p / p.sum())])
        elif kind == "binary":
            body.append([i, f"{rng.random():.6f}"])
        elif kind == "topk":
            body.append([i, " ".join(rng.permutation(classes)[: 1 + k % 5])])
        else:
            body.append([i, classes[k % len(classes)]])
    return Generated(comp, Workspace(root), [header, *body], ids)


def to_bytes(rows: Rows, eol: str = "\n", quoting: int = csv.QUOTE_MINIMAL) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=eol, quoting=quoting).writerows(rows)
    return buffer.getvalue().encode("utf-8")


# ---------------------------------------------------------------------------------------------------------------
# The graders, as a model: how Kaggle-style scorers read a file (independent of comp's checker)


def grader_verdict(gen: Generated, data: bytes) -> bool:
    """True when a pandas-based grader scores the file: columns by name, ids as text, numbers as pandas reads them,
    probability rows rescaled by their sum, any real score under an AUC metric, labels compared as text."""
    comp = gen.comp
    sample = pd.read_csv(gen.ws.path(comp.sample_submission), dtype=str, keep_default_na=False)
    try:
        text = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        parsed = pd.read_csv(io.BytesIO(data), dtype={comp.id_column: str})
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError):
        return False
    if sorted(text.columns) != sorted(sample.columns):  # pandas renames a repeated column ('label.1')
        return False
    ids = text[comp.id_column]
    if len(ids) != len(sample) or set(ids) != set(sample[comp.id_column]) or ids.duplicated().any():
        return False
    cols = [c for c in sample.columns if c != comp.id_column]
    if comp.kind in ("binary", "class_probs"):
        if any(parsed[c].dtype.kind not in "if" for c in cols):
            return False  # a cell pandas cannot read as a number turns the column into text
        x = parsed[cols].to_numpy(dtype=np.float64)
        if not np.isfinite(x).all():
            return False
        if comp.kind == "binary":
            return comp.metric in ("roc_auc", "weighted_auc") or bool(((x >= 0) & (x <= 1)).all())
        return bool((x >= 0).all() and (x.sum(axis=1) > 0).all())
    cells = text[cols[0]].tolist()
    labels = set(comp.submission_labels or comp.classes)
    if comp.kind == "topk":
        lists = [c.split(" ") for c in cells]
        return all(0 < len(t) <= comp.top_k and len(set(t)) == len(t) and set(t) <= labels for t in lists)
    return all(c in labels for c in cells)


# ---------------------------------------------------------------------------------------------------------------
# The cases: (name, kinds, mutation, what comp must say: an error fragment, or "warn:" + a warning fragment, or "")


def set_labels(fn: Callable[[str, int], str]) -> Callable[[Generated], bytes]:
    def mutate(gen: Generated) -> bytes:
        rows = [list(r) for r in gen.rows]
        for k, row in enumerate(rows[1:]):
            row[1] = fn(row[1], k)
        return to_bytes(rows)
    return mutate


def set_cell(row: int, value: str | Callable[[Generated], str], column: int = 1) -> Callable[[Generated], bytes]:
    def mutate(gen: Generated) -> bytes:
        rows = [list(r) for r in gen.rows]
        rows[row][column] = value(gen) if callable(value) else value
        return to_bytes(rows)
    return mutate


def set_ids(fn: Callable[[str], str]) -> Callable[[Generated], bytes]:
    def mutate(gen: Generated) -> bytes:
        return to_bytes([gen.rows[0], *([fn(r[0]), *r[1:]] for r in gen.rows[1:])])
    return mutate


def with_rows(fn: Callable[[Rows], Rows], **kw) -> Callable[[Generated], bytes]:
    return lambda gen: to_bytes(fn([list(r) for r in gen.rows]), **kw)


def scale_rows(factor: float, fmt: str = "{:.9g}") -> Callable[[Generated], bytes]:
    def mutate(gen: Generated) -> bytes:
        return to_bytes([gen.rows[0], *([r[0], *(fmt.format(float(v) * factor) for v in r[1:])]
                                        for r in gen.rows[1:])])
    return mutate


def everyone(value: Callable[[Generated], str]) -> Callable[[Generated], bytes]:
    return lambda gen: to_bytes([gen.rows[0], *([r[0], value(gen)] for r in gen.rows[1:])])


def _lost_zeros(i: str) -> str:
    stem, dot, ext = i.partition(".")
    return str(int(stem)) + dot + ext


def _has_zero_padded(gen: Generated) -> bool:
    return any(_lost_zeros(i) != i for i in gen.ids)


ALL = KINDS
NUMERIC = ("binary", "class_probs")
LABELS = ("class_name", "class_id", "topk")

CASES: list[tuple[str, tuple[str, ...], Callable[[Generated], bytes], str]] = [
    # valid everywhere: what a grader reads the same way
    ("as written", ALL, with_rows(lambda r: r), ""),
    ("rows shuffled", ALL, with_rows(lambda r: [r[0], *r[:0:-1]]), ""),
    ("CRLF endings", ALL, with_rows(lambda r: r, eol="\r\n"), ""),
    ("every field quoted", ALL, with_rows(lambda r: r, quoting=csv.QUOTE_ALL), ""),
    ("a UTF-8 BOM", ALL, lambda gen: codecs.BOM_UTF8 + to_bytes(gen.rows), ""),
    ("columns in another order", ALL, with_rows(lambda r: [row[::-1] for row in r]),
     "warn:graders select columns by name"),
    # broken everywhere
    ("a sample id missing", ALL, with_rows(lambda r: [r[0], *r[2:]]), "sample id(s) missing"),
    ("an id twice", ALL, with_rows(lambda r: [*r, r[1]]), "duplicated ids"),
    ("an id not in the sample", ALL, with_rows(lambda r: [*r[:-1], ["zz-not-an-id", *r[-1][1:]]]),
     "not in the sample"),
    ("ids that lost their leading zeros", ALL, set_ids(_lost_zeros), "ids lost their leading zeros"),
    ("a column renamed", ALL, with_rows(lambda r: [[r[0][0], *(c + "_x" for c in r[0][1:])], *r[1:]]),
     "unexpected column(s)"),
    ("an empty cell", ALL, set_cell(3, ""), "empty value(s)"),
    ("a ragged row", ALL, with_rows(lambda r: [*r[:2], [*r[2], "x"], *r[3:]]), "wrong number of fields"),
    # numbers, as pandas reads them
    ("spaces around numbers", NUMERIC, set_cell(2, lambda gen: f" {gen.rows[2][1]} "), ""),
    ("a digit group separator '_'", NUMERIC, set_cell(2, "0.0_5"), "not a number as the grader (pandas) reads"),
    ("Arabic-Indic digits", NUMERIC, set_cell(3, "٠.٥"), "not a number as the grader (pandas) reads"),
    ("full-width digits", NUMERIC, set_cell(4, "０.５"), "not a number as the grader (pandas) reads"),
    ("a trailing no-break space", NUMERIC, set_cell(5, lambda gen: gen.rows[5][1] + "\xa0"),
     "not a number as the grader (pandas) reads"),
    ("an exponent", NUMERIC, set_cell(2, lambda gen: f"{float(gen.rows[2][1]) * 100!r}e-2"), ""),
    ("infinity", NUMERIC, set_cell(2, "inf"), "infinite value(s)"),
    ("a word", NUMERIC, set_cell(2, "yes"), "not a number"),
    # binary under AUC: any real score ranks on Kaggle; mirror graders reject what is outside [0, 1] (warned)
    ("real-valued scores (logits)", ("binary",), set_labels(lambda v, k: f"{(k * 7919 % 23) - 11.5:.3f}"),
     "warn:reject values outside [0, 1]"),
    ("scores above 1", ("binary",), set_labels(lambda v, k: f"{float(v) * 100:.4f}"), "warn:--fix OUT"),
    ("hard 0/1 labels", ("binary",), set_labels(lambda v, k: str(k % 2)), "warn:hard labels throw away"),
    # per-class probabilities: Kaggle divides each row by its sum
    ("six decimals (rows off by 1e-6)", ("class_probs",), scale_rows(1.0, "{:.6f}"), ""),
    ("rows summing to 2", ("class_probs",), scale_rows(2.0), "warn:Kaggle rescales each row"),
    ("rows summing to 0.9", ("class_probs",), scale_rows(0.9), "warn:Kaggle rescales each row"),
    ("an all-zero row", ("class_probs",), lambda gen: to_bytes([*gen.rows[:2], [gen.rows[2][0]] + ["0"] * (
        len(gen.rows[0]) - 1), *gen.rows[3:]]), "all zero"),
    ("a negative probability", ("class_probs",), set_cell(2, "-0.01"), "negative probability"),
    # labels compared as text
    ("a label with a leading space", LABELS, set_cell(2, lambda gen: " " + gen.rows[2][1]), "space"),
    ("an unknown label", LABELS, set_cell(2, "zz_unknown"), "unknown"),
    ("labels in upper case", ("class_name", "topk"), set_labels(lambda v, k: v.upper()), "case"),
    ("labels with '_' for spaces", ("class_name",), set_labels(lambda v, k: v.replace(" ", "_")),
     "spelled with '_' for spaces"),
    ("one class everywhere (names with spaces)", ("class_name",), everyone(lambda gen: gen.comp.classes[1]),
     "warn:every row predicts"),
    ("class ids as floats", ("class_id",), set_labels(lambda v, k: v + ".0"), "float class ids"),
    ("a zero-padded class id", ("class_id",), set_cell(2, lambda gen: "0" + gen.rows[2][1]), "leading zeros"),
    ("an Arabic-Indic class id", ("class_id",), set_cell(2, "٣"), "must hold integer class ids"),
    ("fewer than k labels", ("topk",), set_labels(lambda v, k: v.split(" ")[0]), ""),
    ("more than k labels", ("topk",), set_labels(lambda v, k: " ".join(f"new_whale w_{j:07x}" for j in range(3))),
     "more than top_k"),
]


def _params():
    out = []
    for name, kinds, mutate, expected in CASES:
        for kind in kinds:
            out.append(pytest.param(name, kind, mutate, expected, id=f"{kind}-{name}"))
    return out


def test_the_battery_covers_every_kind_with_40_new_submissions():
    per_kind = Counter(kind for _, kinds, _, _ in CASES for kind in kinds)
    assert set(per_kind) == set(KINDS) and sum(per_kind.values()) >= 40
    assert all(n >= 15 for n in per_kind.values()), per_kind


@pytest.mark.parametrize(("name", "kind", "mutate", "expected"), _params())
def test_comp_check_gives_the_graders_verdict(name, kind, mutate, expected, workspace):
    for seed in SEEDS:
        root = workspace / f"{kind}-{seed}"
        root.mkdir()
        gen = generate(kind, seed, root)
        if name == "ids that lost their leading zeros" and not _has_zero_padded(gen):
            continue
        data = mutate(gen)
        path = root / "submission.csv"
        path.write_bytes(data)
        platform = grader_verdict(gen, data)
        report = check_file(gen.comp, gen.ws, path)
        assert report.ok == platform, f"{name} (seed {seed}): grader {platform}, comp {report.errors}"
        if expected.startswith("warn:"):
            assert any(expected[5:] in w for w in report.warnings), f"{name} (seed {seed}): {report.warnings}"
        elif expected:
            assert any(expected in e for e in report.errors), f"{name} (seed {seed}): {report.errors}"
        else:
            assert report.warnings == [], f"{name} (seed {seed}): {report.warnings}"


def test_a_binary_metric_that_needs_probabilities_refuses_scores_outside_0_1(workspace):
    gen = generate("binary", 5, workspace, metric="log_loss")
    path = workspace / "s.csv"
    path.write_bytes(set_labels(lambda v, k: f"{float(v) * 3 - 1:.4f}")(gen))
    report = check_file(gen.comp, gen.ws, path)
    assert not report.ok and not grader_verdict(gen, path.read_bytes())
    assert any("looks like logits" in e for e in report.errors)


def verdict_table() -> dict[str, Counter]:
    """kind -> Counter of verdicts over the battery (valid / valid with a warning / rejected), for the closing
    note: `python -c "import sys; sys.path.insert(0, 'tests'); from test_check_verdicts import *; ..."`."""
    import tempfile

    table: dict[str, Counter] = {k: Counter() for k in KINDS}
    for _name, kinds, mutate, _ in CASES:
        for kind in kinds:
            with tempfile.TemporaryDirectory() as tmp:
                gen = generate(kind, 1, Path(tmp))
                path = Path(tmp) / "s.csv"
                path.write_bytes(mutate(gen))
                report = check_file(gen.comp, gen.ws, path)
                table[kind]["rejected" if not report.ok else "warned" if report.warnings else "valid"] += 1
    return table
