"""The kinds room: one class per submission kind, and all that differs between kinds.

A kind is how a competition writes its predictions; `comp.toml`'s `kind` names it. Each is a `Kind` subclass
(`base.py`): single-label ones in `single.py`, multi-label ones in `multilabel.py`. `kind_of(comp)` is the one way
every other module gets at the kind's behaviour: detection from the sample (`detect_format`, here), encoding
probabilities into the sample's columns, decoding a submission for scoring, checking and fixing its values, the
predicted classes for warnings, the training targets and the default metric. No module outside this room tests a
kind's name. Adding a kind: one class (it registers itself), its name in `comp.core.config.KINDS` (what comp.toml
is checked against), one row in tests/test_kinds.py.

The room sits in layer 1 (it needs only `core`), so `setup` (detection at `comp init`) and everything above it
(training targets, stacking, the submission) use the same classes.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from comp.core.config import KINDS, Competition
from comp.core.errors import CompError
from comp.kinds.base import RANK_METRICS, REGISTERED, Cells, Kind, Refused, SubmissionFormat
from comp.kinds.multilabel import MultilabelProbs, Tags, split_tags
from comp.kinds.single import Binary, ClassId, ClassName, ClassProbs, TopK, float_digits, positive_index
from comp.kinds.values import is_integer, is_number, normalise_label

__all__ = ["RANK_METRICS", "REGISTRY", "Cells", "Kind", "Refused", "SubmissionFormat", "detect_format",
           "detect_multilabel", "float_digits", "get", "kind_of", "positive_index", "without_sample"]

# Every Kind subclass with a name, in comp.toml's order (config.KINDS validates comp.toml without importing this).
assert set(REGISTERED) == set(KINDS), f"comp.core.config.KINDS {KINDS} must name the kinds {tuple(REGISTERED)}"
REGISTRY: dict[str, Kind] = {name: REGISTERED[name] for name in KINDS}

BINARY = Binary.name  # the kind --positive/--negative set up


def get(name: str) -> Kind:
    if name not in REGISTRY:
        raise CompError(f"kind {name!r} is not one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def kind_of(comp: Competition) -> Kind:
    """The behaviour of `comp.kind`."""
    return get(comp.kind)


def without_sample(classes: list[str], forced: str = "", multilabel: bool = False) -> Kind:
    """The kind when no sample submission says how to write predictions (init then writes one)."""
    if forced:
        return get(forced)
    if multilabel:
        return REGISTRY[Tags.name]
    return REGISTRY[ClassId.name if all(c.isdigit() for c in classes) else ClassName.name]


# ---------------------------------------------------------------------------------------------------------------
# Multi-label training labels


def detect_multilabel(labels: pd.Series | list[str]) -> tuple[list[str], Counter] | None:
    """(tag vocabulary, count of images per tag) when the label cells are sets of tags, else None.

    Tags recombine: in Planet's `agriculture clear primary` every word also labels other images in other company
    (`clear primary water`, `agriculture haze primary`). Class names with spaces do not: `Common Chickweed` and
    `golden retriever` each hold a word no other class has. So the cells are tag sets when at least two thirds of
    the distinct multi-word cells consist only of words found in some other distinct cell."""
    cells = [str(v).strip() for v in labels]
    distinct = {c: split_tags(c) for c in set(cells)}
    multi = [words for words in distinct.values() if len(words) > 1]
    if not multi:
        return None
    cells_with: Counter = Counter(t for words in distinct.values() for t in set(words))
    recombined = sum(all(cells_with[t] > 1 for t in words) for words in multi)
    if recombined * 3 < 2 * len(multi):
        return None
    counts: Counter = Counter(t for c in cells for t in set(split_tags(c)))
    return sorted(counts), counts


# ---------------------------------------------------------------------------------------------------------------
# Detection from the sample submission


def detect_format(sample: pd.DataFrame, id_column: str, classes: list[str], kind: str = "",
                  where: str = "sample submission", positive: str = "", multilabel: bool = False) -> SubmissionFormat:
    """Decide the submission kind and how each class is spelled in it.

    The sample's values are often placeholders (every row the same class, or 0), so the header speaks first (several
    prediction columns -> class_probs, or multilabel_probs for multi-label training labels; a column named after a
    class of a 2-class problem -> binary), the values second (space-separated lists -> topk, or tags for multi-label
    training labels; fractions -> binary, class names -> class_name, integers -> class_id), the training labels
    third. `kind` forces the kind; the spelling is still read from the sample. `positive` (from
    --positive/--negative) names the class a binary column holds.
    """
    # Trailing commas give pandas "Unnamed: n" columns with nothing in them; they are not predictions.
    label_columns = [c for c in sample.columns
                     if c != id_column and not (c.startswith("Unnamed:") and not sample[c].str.strip().any())]
    if not label_columns:
        raise CompError(f"{where}: no prediction column besides the id column {id_column!r} "
                        f"(columns: {', '.join(sample.columns)}); pass --id-column if the id is another column")
    values = [v.strip() for c in label_columns for v in sample[c] if v.strip()]
    forced = bool(kind)
    note = ""
    if not kind:
        kind, note = _guess(label_columns, values, classes, where, multilabel)
    chosen = get(kind)
    if len(label_columns) != 1 and not chosen.per_class_columns:
        raise CompError(f"{where}: kind {kind} needs one prediction column, the sample has {len(label_columns)} "
                        f"({', '.join(label_columns)}); use --kind class_probs or fix --id-column")
    fmt = chosen.spell(label_columns, values, classes, where, forced, positive)
    notes = ((note,) if note else ()) + fmt.notes
    return SubmissionFormat(fmt.kind, fmt.label_columns, fmt.submission_labels, fmt.positive_class, fmt.top_k, notes)


def _guess(label_columns: list[str], values: list[str], classes: list[str], where: str,
           multilabel: bool) -> tuple[str, str]:
    if multilabel:
        return (MultilabelProbs.name if len(label_columns) > 1 else Tags.name), ""
    if len(label_columns) > 1:
        return ClassProbs.name, ""
    column = label_columns[0]
    known = {normalise_label(c) for c in classes}
    if len(classes) == 2 and normalise_label(column) in known:
        return Binary.name, ""
    # "new_whale w_1287fbc" is a top-k list; "golden retriever" is one class spelled with a space.
    if any(len(v.split()) > 1 and normalise_label(v) not in known for v in values):
        return TopK.name, ""
    numeric_classes = all(is_integer(c) for c in classes)
    if values and all(is_number(v) for v in values):
        if len(classes) == 2:
            # A 2-class sample holding numbers is a probability in every Kaggle sample seen (cactus, histopathology,
            # invasive species, dogs vs cats), even when the placeholder is an integer 0.
            return Binary.name, "a 2-class sample with numbers: predicting a probability (--kind class_id to write ids)"
        if not all(is_integer(v) for v in values):
            raise CompError(f"{where}: column {column!r} holds fractions (a probability) but the training labels "
                            f"have {len(classes)} classes, not 2; pass --negative C (C vs the rest) or --positive A,B "
                            "to group them into two, or --kind")
        if numeric_classes:
            return ClassId.name, ""
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
    return (ClassId.name if numeric_classes else ClassName.name), ""
