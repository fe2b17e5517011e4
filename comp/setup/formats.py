"""The submission's format, read from the sample: which column is the id, how labels are written (the five kinds).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from comp.core.errors import CompError
from comp.setup.scan import _is_integer, _is_number, normalise_label


@dataclass(frozen=True)
class SubmissionFormat:
    """What the sample submission says about how predictions are written (the matching comp.toml fields)."""

    kind: str
    label_columns: list[str]
    submission_labels: list[str]
    positive_class: str = ""
    top_k: int = 5
    notes: tuple[str, ...] = ()


def detect_format(sample: pd.DataFrame, id_column: str, classes: list[str], kind: str = "",
                  where: str = "sample submission", positive: str = "") -> SubmissionFormat:
    """Decide the submission kind and how each class is spelled in it.

    The sample's values are often placeholders (every row the same class, or 0), so the header speaks first (several
    prediction columns -> class_probs; a column named after a class of a 2-class problem -> binary), the values
    second (space-separated lists -> topk, fractions -> binary, class names -> class_name, integers -> class_id),
    the training labels third. `kind` forces the kind; the spelling is still read from the sample. `positive`
    (from --positive/--negative) names the class a binary column holds.
    """
    # Trailing commas give pandas "Unnamed: n" columns with nothing in them; they are not predictions.
    label_columns = [c for c in sample.columns
                     if c != id_column and not (c.startswith("Unnamed:") and not sample[c].str.strip().any())]
    if not label_columns:
        raise CompError(f"{where}: no prediction column besides the id column {id_column!r} "
                        f"(columns: {', '.join(sample.columns)}); pass --id-column if the id is another column")
    values = [v.strip() for c in label_columns for v in sample[c] if v.strip()]
    notes: list[str] = []
    forced = bool(kind)
    if not kind:
        kind, note = _guess_kind(label_columns, values, classes, where)
        if note:
            notes.append(note)
    if kind == "class_probs":
        return SubmissionFormat(kind, label_columns, _pair_columns(label_columns, classes, where), notes=tuple(notes))
    if len(label_columns) != 1:
        raise CompError(f"{where}: kind {kind} needs one prediction column, the sample has {len(label_columns)} "
                        f"({', '.join(label_columns)}); use --kind class_probs or fix --id-column")
    column = label_columns[0]
    if kind == "binary":
        if len(classes) != 2:
            raise CompError(f"{where}: kind binary needs exactly 2 classes, the training labels have {len(classes)} "
                            f"({', '.join(classes[:6])}); pass --negative C (C vs the rest) or --positive A,B to "
                            "group them into two, or --kind with another kind")
        named = [c for c in classes if normalise_label(c) == normalise_label(column)]
        positive = positive or (named[0] if named else classes[1])
        notes.append(f"binary: column {column!r} holds the probability of class {positive!r}")
        return SubmissionFormat(kind, label_columns, list(classes), positive_class=positive, notes=tuple(notes))
    if kind == "class_id":
        if all(_is_integer(c) for c in classes):
            return SubmissionFormat(kind, label_columns, list(classes), notes=tuple(notes))
        notes.append("class_id with named classes: class i (in sorted order) is written as the integer i")
        return SubmissionFormat(kind, label_columns, [str(i) for i in range(len(classes))], notes=tuple(notes))
    tokens = [t for v in values for t in v.split()] if kind == "topk" else values
    top_k = max((len(v.split()) for v in values), default=0) if kind == "topk" else 5
    # A forced kind says the sample's values are placeholders: only values that are classes teach a spelling.
    spelled = _spell_like_sample(tokens, classes, where, strict=not forced)
    return SubmissionFormat(kind, label_columns, spelled, top_k=top_k or 5,
                            notes=tuple(notes))


def _guess_kind(label_columns: list[str], values: list[str], classes: list[str], where: str) -> tuple[str, str]:
    if len(label_columns) > 1:
        return "class_probs", ""
    column = label_columns[0]
    known = {normalise_label(c) for c in classes}
    if len(classes) == 2 and normalise_label(column) in known:
        return "binary", ""
    # "new_whale w_1287fbc" is a top-k list; "golden retriever" is one class spelled with a space.
    if any(len(v.split()) > 1 and normalise_label(v) not in known for v in values):
        return "topk", ""
    numeric_classes = all(_is_integer(c) for c in classes)
    if values and all(_is_number(v) for v in values):
        if len(classes) == 2:
            # A 2-class sample holding numbers is a probability in every Kaggle sample seen (cactus, histopathology,
            # invasive species, dogs vs cats), even when the placeholder is an integer 0.
            return "binary", "a 2-class sample with numbers: predicting a probability (--kind class_id to write ids)"
        if not all(_is_integer(v) for v in values):
            raise CompError(f"{where}: column {column!r} holds fractions (a probability) but the training labels "
                            f"have {len(classes)} classes, not 2; pass --negative C (C vs the rest) or --positive A,B "
                            "to group them into two, or --kind")
        if numeric_classes:
            return "class_id", ""
        raise CompError(f"{where}: column {column!r} holds integers but the training labels are names "
                        f"({', '.join(classes[:5])}...); comp cannot tell which integer is which class. If it is one "
                        "score per image (a binary task over grouped folders, e.g. Cover vs the rest), pass "
                        "--negative C or --positive A,B; else --kind class_id (class i in sorted order -> i) or "
                        "--kind class_name")
    if values and not {normalise_label(v) for v in values} <= known:
        unknown = sorted({v for v in values if normalise_label(v) not in known})
        raise CompError(f"{where}: column {column!r} holds value(s) that are not training labels: "
                        f"{', '.join(map(repr, unknown[:5]))}; training labels are {', '.join(classes[:10])}. "
                        "Pass --label-column for the right training column, or --kind")
    return ("class_id" if numeric_classes else "class_name"), ""


def _pair_columns(columns: list[str], classes: list[str], where: str) -> list[str]:
    by_norm = {normalise_label(c): c for c in columns}
    paired = [by_norm.get(normalise_label(c)) for c in classes]
    unmatched_classes = [c for c, p in zip(classes, paired, strict=True) if p is None]
    unmatched_columns = sorted(set(columns) - set(p for p in paired if p))
    if unmatched_classes or unmatched_columns:
        raise CompError(
            f"{where}: the probability columns do not pair with the training labels (ignoring case and _ vs space): "
            f"classes without a column: {', '.join(unmatched_classes[:10]) or '-'}; columns without a class: "
            f"{', '.join(unmatched_columns[:10]) or '-'}. Check --label-column (the training labels) or --sample"
        )
    return [p for p in paired if p]


def _spell_like_sample(tokens: list[str], classes: list[str], where: str, strict: bool = True) -> list[str]:
    """Each class as the sample spells it (`golden retriever` for folder `golden_retriever`), else as trained."""
    spelled = {normalise_label(t): t for t in tokens}
    known = {normalise_label(c) for c in classes}
    unknown = sorted({t for t in tokens if normalise_label(t) not in known})
    if unknown and strict:
        raise CompError(f"{where}: label(s) {', '.join(map(repr, unknown[:5]))} in the sample are not training "
                        f"labels ({', '.join(classes[:10])}); pass --label-column or --kind")
    return [spelled.get(normalise_label(c), c) for c in classes]
