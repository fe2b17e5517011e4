"""The single-label kinds: one class per image, written as its name, its integer id, the probability of the positive
class, a probability per class, or the k likeliest classes."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from comp.core.config import Competition
from comp.core.errors import CompError
from comp.kinds.base import RANK_METRICS, Cells, Kind, Refused, SubmissionFormat
from comp.kinds.values import (
    INTEGER,
    NUMBER,
    first,
    is_integer,
    is_integral_float,
    labels_of,
    natural,
    normalise_label,
    parse_numbers,
)

SUM_WARN = 1e-5  # a probability row whose sum strays further from 1 is rescaled by Kaggle (mirrors may not): warned
# Graders outside Kaggle that re-score Kaggle competitions (mle-bench's) read a binary column as a probability: they
# reject any value outside [0, 1] although Kaggle ranks any real score under AUC.
MIRRORS = ("mle-bench's graders (aerial-cactus-identification, histopathologic-cancer-detection, "
           "siim-isic-melanoma-classification, invasive-species-monitoring)")
SUM_EXACT = 1e-6  # --fix divides rows whose sum is further from 1 than this by their sum


def one_column(comp: Competition, kind: str, columns: list[str]) -> str:
    if len(columns) != 1:
        raise CompError(
            f"comp.toml: kind {kind!r} writes one label column but the sample has {len(columns)} "
            f"({first(columns)}); set kind = \"class_probs\" if it holds one column per class"
        )
    return columns[0]


def spell_like_sample(tokens: list[str], classes: list[str], where: str, strict: bool = True) -> list[str]:
    """Each class as the sample spells it (`golden retriever` for folder `golden_retriever`), else as trained."""
    spelled = {normalise_label(t): t for t in tokens}
    known = {normalise_label(c) for c in classes}
    unknown = sorted({t for t in tokens if normalise_label(t) not in known})
    if unknown and strict:
        raise CompError(f"{where}: label(s) {', '.join(map(repr, unknown[:5]))} in the sample are not training "
                        f"labels ({', '.join(classes[:10])}); pass --label-column or --kind")
    return [spelled.get(normalise_label(c), c) for c in classes]


def pair_columns(columns: list[str], classes: list[str], where: str) -> list[str]:
    """The sample's probability column of each class (ignoring case and _ vs space)."""
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


def column_index(comp: Competition) -> dict[str, int]:
    """A per-class column's name (its submission label, or the class itself) -> its class index."""
    return {c: j for j, c in enumerate(comp.classes)} | {s: j for j, s in enumerate(labels_of(comp))}


def label_index(comp: Competition, integers: bool = False) -> dict[str, int]:
    """A written label (its submission label or the class) -> class index; `integers` also reads '03' as '3'."""
    index = {c: i for i, c in enumerate(comp.classes)} | {s: i for i, s in enumerate(labels_of(comp))}
    if integers:
        index |= {str(int(s)): i for s, i in list(index.items()) if INTEGER.fullmatch(s)}
    return index


def ranked_scores(comp: Competition, lists: list[list[str]], index: dict[str, int]) -> np.ndarray:
    """Rows of labels, best first -> minus each label's position: 0 for the first, -1 for the second, ..., and -inf
    for the classes a row does not list (a grader's MAP@k never ranks them: a short list is not filled up)."""
    out = np.full((len(lists), comp.num_classes), -np.inf)
    for r, row in enumerate(lists):
        for rank, label in enumerate(row):
            if label not in index:
                raise ValueError(f"row {r + 2}: {label!r} is not a class")
            out[r, index[label]] = max(out[r, index[label]], -float(rank))  # best first: higher score
    return out


# ---------------------------------------------------------------------------------------------------------------
# Checking and fixing labels


def check_names(comp: Competition, col: str, cells: list[str], c: Cells) -> list[str]:
    labels = labels_of(comp)
    valid = set(labels)
    bad = [i for i, v in enumerate(cells) if v not in valid]
    if not bad:
        return []
    found = sorted({cells[i] for i in bad}, key=natural)
    at = first([f"{c.at(i)}: {cells[i]!r}" for i in bad])
    if all(v.strip() in valid for v in found):
        return [f"labels in column {col!r} have leading/trailing whitespace ({at}): strip them"]
    if set(found) <= set(comp.classes):
        j = comp.classes.index(found[0])
        return [f"column {col!r} holds folder names ({found[0]!r}...), the sample uses class names "
                f"({labels[j]!r}): write each class's submission label ({at})"]
    if all(INTEGER.fullmatch(v) for v in found) and not all(INTEGER.fullmatch(x) for x in labels):
        shown = repr(found[0]) if len(found) == 1 else f"{found[0]!r}..{found[-1]!r}"
        return [f"column {col!r} holds folder names or class indices {shown}, the sample uses "
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


def id_span(ids: set[int]) -> str:
    """Known class ids as a reader checks them: '0..14' only when no id in between is missing, else each id."""
    ordered = sorted(ids)
    if not ordered:
        return "none"
    if len(ordered) > 2 and ordered[-1] - ordered[0] + 1 == len(ordered):
        return f"{ordered[0]}..{ordered[-1]}"
    return first([str(i) for i in ordered])


def check_class_ids(comp: Competition, col: str, cells: list[str], c: Cells) -> list[str]:
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
        elif is_integral_float(v):
            floats.append(i)
        elif v.lower() in names_lower:
            names.append(i)
        else:
            other.append(i)
    errors = []
    show = lambda rows: first([f"{c.at(i)}: {cells[i]!r}" for i in rows])  # noqa: E731
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
        v = cells[padded[0]]
        errors.append(f"column {col!r} writes class ids with leading zeros or signs ({show(padded)}); write plain "
                      f"integers like {str(int(v))!r}, not {v!r}")
    if unknown:
        errors.append(f"unknown class id(s) in column {col!r} ({show(unknown)}); the known ids are {id_span(known)}")
    if other:
        errors.append(f"column {col!r} must hold integer class ids; not integers: {show(other)}")
    return errors


def check_label_lists(comp: Competition, col: str, cells: list[str], c: Cells, most: int, what: str) -> list[str]:
    """Space-separated label lists (top-k, tags): separators, spacing, length, repeats, unknown labels."""
    valid = set(labels_of(comp))
    problems: dict[str, list[str]] = {}
    for i, v in enumerate(cells):
        at = f"{c.at(i)}: {v!r}"
        if any(sep in v for sep in (",", ";", "|", "\t")):
            problems.setdefault("sep", []).append(at)
            continue
        tokens = v.split(" ")
        if "" in tokens and v:
            problems.setdefault("space", []).append(at)
        tokens = [t for t in tokens if t]
        if len(tokens) > most:
            problems.setdefault("many", []).append(at)
        if len(set(tokens)) < len(tokens):
            problems.setdefault("dup", []).append(at)
        unknown = [t for t in tokens if t not in valid]
        if unknown:
            problems.setdefault("unknown", []).append(f"{c.at(i)}: {unknown[0]!r}")
            problems.setdefault("tokens", []).extend(unknown)
    messages = {
        "sep": f"column {col!r} separates labels with something other than single spaces ({{}}); write "
               "' '.join(labels)",
        "space": f"column {col!r} has extra spaces between or around labels ({{}}); separate with single spaces",
        "many": f"column {col!r} lists more than {what} ({{}}); keep the {most} best",
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


def respeller(comp: Competition, integers: bool = False) -> Callable[[str, dict[str, str]], str]:
    """A written label -> the sample's spelling of its class (folder name, case, '_' vs space, and with `integers`
    '03', '+3' or '3.0' for id 3); `Refused` when it is no class."""
    labels = labels_of(comp)
    valid = set(labels)
    folder = {c: labels[j] for j, c in enumerate(comp.classes)}
    norm: dict[str, set[str]] = {}
    for x in labels:
        norm.setdefault(normalise_label(x), set()).add(x)
    ints = {int(x): x for x in labels if INTEGER.fullmatch(x)}

    def respell(cell: str, seen: dict[str, str]) -> str:
        if cell in valid:
            return cell
        new = folder.get(cell)
        if new is None and integers:
            if INTEGER.fullmatch(cell) and int(cell) in ints:
                new = ints[int(cell)]  # '03' or '+3'
            elif NUMBER.fullmatch(cell) and np.isfinite(v := float(cell)) and v == int(v) and int(v) in ints:
                new = ints[int(v)]  # '3.0'
        if new is None and len(norm.get(normalise_label(cell), ())) == 1:
            (new,) = norm[normalise_label(cell)]
        if new is None:
            raise Refused(f"label {cell!r} is not a class the sample knows ({first([repr(x) for x in labels])}): "
                          "which class it means would be a guess")
        seen[cell] = new
        return new

    return respell


def fix_labels(comp: Competition, cells: Cells, changes: list[str], integers: bool = False) -> np.ndarray:
    """One label per cell, respelled as the sample's classes."""
    respell = respeller(comp, integers)
    fixed = cells.values.copy()
    respelled: dict[str, str] = {}
    for i, cell in enumerate(cells.values[:, 0].tolist()):
        fixed[i, 0] = respell(cell, respelled)
    _said_respelled(respelled, changes)
    return fixed


def fix_label_lists(comp: Competition, cells: Cells, changes: list[str], most: int, what: str) -> np.ndarray:
    """Label lists: other separators -> single spaces, repeats dropped, at most `most` kept, labels respelled."""
    respell = respeller(comp)
    fixed = cells.values.copy()
    respelled: dict[str, str] = {}
    repeats = longer = 0
    for i, cell in enumerate(cells.values[:, 0].tolist()):
        tokens = cell.replace(",", " ").replace(";", " ").replace("|", " ").split()
        words = [respell(t, respelled) for t in tokens]
        unique = list(dict.fromkeys(words))
        repeats += len(unique) < len(words)
        longer += len(unique) > most
        fixed[i, 0] = " ".join(unique[:most])
    if repeats:
        changes.append(f"dropped repeated labels within {repeats} {what} row(s) (a repeat scores nothing)")
    if longer:
        changes.append(f"kept the first {most} labels of {longer} longer {what} row(s) (they are best first)")
    if not (repeats or longer or respelled) and (fixed != cells.values).any():
        changes.append(f"{what} labels separated by single spaces")
    _said_respelled(respelled, changes)
    return fixed


def _said_respelled(respelled: dict[str, str], changes: list[str]) -> None:
    if respelled:
        shown = first([f"{a!r} -> {b!r}" for a, b in respelled.items()])
        changes.append(f"labels respelled as the sample's classes: {shown}")


# ---------------------------------------------------------------------------------------------------------------
# Checking and fixing numbers


def number_cells(cells: Cells, mask: np.ndarray) -> str:
    rows, columns = np.nonzero(mask)
    return first([f"{cells.at(i)} column {cells.cols[j]!r}: {str(cells.values[i, j])!r}"
                  for i, j in zip(rows, columns, strict=True)])


def check_finite(cells: Cells, what: str, bounded: bool) -> list[str]:
    x = cells.numbers
    if np.isnan(x).any():
        return [f"not a number as the grader (pandas) reads numbers: {number_cells(cells, np.isnan(x))}; the sample "
                f"expects {what}, written with ASCII digits (no '_', no spaces inside)"]
    if not np.isfinite(x).all():
        return [f"infinite value(s): {number_cells(cells, ~np.isfinite(x))}; write {what}"
                + (" in [0, 1]" if bounded else "")]
    return []


def check_range(cells: Cells, high_allowed: bool, squash: str) -> list[str]:
    """Values below 0 (or above 1 unless `high_allowed`): logits, or noise to clip."""
    x = cells.numbers
    low, high = x < 0, (x > 1) if not high_allowed else np.zeros_like(x, dtype=bool)
    if not (low.any() or high.any()):
        return []
    if (low.any() and (high.any() or (x > 1).any())) or (low | high).mean() > 0.25:
        return [f"values outside [0, 1] ({number_cells(cells, low | high)}): looks like logits, not "
                f"probabilities: apply {squash}"]
    if low.any():
        return [f"negative probability ({number_cells(cells, low)}); probabilities lie in [0, 1]: clip them"]
    return [f"probability above 1 ({number_cells(cells, high)}); probabilities lie in [0, 1]: clip them"]


def fix_finite(cells: Cells) -> np.ndarray:
    text = cells.values.astype(str)
    x = parse_numbers(text)
    if np.isnan(x).any():
        bad = text[np.isnan(x)].tolist()
        raise Refused(f"value(s) that are not numbers as the grader reads them ({first([repr(b) for b in bad])}): "
                      "which number was meant would be a guess")
    if not np.isfinite(x).all():
        raise Refused("infinite value(s): which finite value was meant would be a guess")
    return x


def float_digits(num_classes: int) -> int:
    """Significant digits that keep a row of `num_classes` rounded probabilities summing to 1 within 1e-7 (the
    check warns beyond 1e-5, where Kaggle rescales but mirrors may not): each value rounds by at most 0.5e-d."""
    return max(9, math.ceil(math.log10(max(num_classes, 1) * 5e6)))


# ---------------------------------------------------------------------------------------------------------------
# The kinds


class ClassName(Kind):
    name = "class_name"
    metric = "accuracy"
    example = ("id,label", "img_001.jpg,golden retriever")

    def spell(self, columns, values, classes, where, forced, positive):
        return SubmissionFormat(self.name, columns, spell_like_sample(values, classes, where, strict=not forced))

    def encode(self, comp, columns, probs, sample):
        col = one_column(comp, self.name, columns)
        return {col: np.asarray(labels_of(comp), dtype=object)[probs.argmax(axis=1)]}

    def decode(self, comp, columns):
        (cells,) = columns.values()
        return ranked_scores(comp, [[v] for v in cells], label_index(comp))

    def check(self, comp, cells):
        return [e for j, col in enumerate(cells.cols) for e in check_names(comp, col, cells.values[:, j].tolist(),
                                                                            cells)], []

    def fix(self, comp, cells, changes):
        return fix_labels(comp, cells, changes)

    def predicted(self, comp, cells):
        # a class name may hold spaces ('Loose Silky-bent'): the whole cell is the class
        index = {x: j for j, x in enumerate(labels_of(comp))}
        values = cells.values[:, 0].tolist()
        return np.array([index[v] for v in values]) if all(v in index for v in values) else None


class ClassId(ClassName):
    name = "class_id"
    example = ("id,label", "img_001.jpg,3")

    def spell(self, columns, values, classes, where, forced, positive):
        if all(is_integer(c) for c in classes):
            return SubmissionFormat(self.name, columns, list(classes))
        return SubmissionFormat(self.name, columns, [str(i) for i in range(len(classes))],
                                notes=("class_id with named classes: class i (in sorted order) is written as the "
                                       "integer i",))

    def encode(self, comp, columns, probs, sample):
        col = one_column(comp, self.name, columns)
        labels = labels_of(comp)
        not_int = [repr(label) for label in labels if not INTEGER.fullmatch(label)]
        if not_int:
            raise CompError(
                f"comp.toml: kind is class_id but submission_labels {first(not_int)} are not integers; set "
                "submission_labels to the integer id of each class (or kind = \"class_name\")"
            )
        return {col: np.array([int(x) for x in labels], dtype=np.int64)[probs.argmax(axis=1)]}

    def decode(self, comp, columns):
        (cells,) = columns.values()
        return ranked_scores(comp, [[v] for v in cells], label_index(comp, integers=True))

    def check(self, comp, cells):
        return [e for j, col in enumerate(cells.cols)
                for e in check_class_ids(comp, col, cells.values[:, j].tolist(), cells)], []

    def fix(self, comp, cells, changes):
        return fix_labels(comp, cells, changes, integers=True)

    def predicted(self, comp, cells):
        index = {str(int(x)): j for j, x in enumerate(labels_of(comp)) if INTEGER.fullmatch(x)}
        values = [str(int(v)) for v in cells.values[:, 0].tolist()]
        return np.array([index[v] for v in values]) if all(v in index for v in values) else None


class TopK(ClassName):
    name = "topk"
    metric = "map@k"
    example = ("Image,Id", "img_001.jpg,new_whale w_1287fbc w_98baff9 w_7554f44 w_1eafe46")

    def spell(self, columns, values, classes, where, forced, positive):
        tokens = [t for v in values for t in v.split()]
        top_k = max((len(v.split()) for v in values), default=0)
        # A forced kind says the sample's values are placeholders: only values that are classes teach a spelling.
        return SubmissionFormat(self.name, columns, spell_like_sample(tokens, classes, where, strict=not forced),
                                top_k=top_k or 5)

    def describe(self, comp):
        return f"{self.name} (top {comp.top_k})"

    def encode(self, comp, columns, probs, sample):
        col = one_column(comp, self.name, columns)
        labels = labels_of(comp)
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
        return {col: np.array([" ".join(names[row]) for row in best], dtype=object)}

    def decode(self, comp, columns):
        (cells,) = columns.values()
        return ranked_scores(comp, [v.split() for v in cells], label_index(comp))

    def check(self, comp, cells):
        return [e for j, col in enumerate(cells.cols)
                for e in check_label_lists(comp, col, cells.values[:, j].tolist(), cells, comp.top_k,
                                           f"top_k = {comp.top_k} labels")], []

    def fix(self, comp, cells, changes):
        return fix_label_lists(comp, cells, changes, comp.top_k, "top-k")

    def predicted(self, comp, cells):
        index = {x: j for j, x in enumerate(labels_of(comp))}
        values = [v.split(" ")[0] for v in cells.values[:, 0].tolist()]
        return np.array([index[v] for v in values]) if all(v in index for v in values) else None


class Binary(Kind):
    name = "binary"
    metric = "roc_auc"
    numeric = True
    takes_positive = True
    example = ("id,has_cactus", "img_001.jpg,0.93")

    def spell(self, columns, values, classes, where, forced, positive):
        column = columns[0]
        if len(classes) != 2:
            raise CompError(f"{where}: kind binary needs exactly 2 classes, the training labels have {len(classes)} "
                            f"({', '.join(classes[:6])}); pass --negative C (C vs the rest) or --positive A,B to "
                            "group them into two, or --kind with another kind")
        named = [c for c in classes if normalise_label(c) == normalise_label(column)]
        positive = positive or (named[0] if named else classes[1])
        return SubmissionFormat(self.name, columns, list(classes), positive_class=positive,
                                notes=(f"binary: column {column!r} holds the probability of class {positive!r}",))

    def placeholder(self, header, ids, classes):
        return pd.DataFrame({header[0]: ids, header[1]: 0.5})

    def describe(self, comp):
        return self.name + (f" (positive: {comp.positive_class})" if comp.positive_class else "")

    def encode(self, comp, columns, probs, sample):
        col = one_column(comp, self.name, columns)
        return {col: probs[:, positive_index(comp)].astype(np.float64).clip(0, 1)}

    def decode(self, comp, columns):
        # the score as written (AUC ranks it raw, even outside [0, 1]); the other class gets 1 - s
        (cells,) = columns.values()
        s = np.array(cells, dtype=np.float64)
        out = np.repeat((1.0 - s)[:, None], comp.num_classes, axis=1)
        out[:, positive_index(comp)] = s
        return out

    def as_scored(self, comp, values, y):
        """[1 - s, s] against positive-or-not: the graders' one-column scoring, exact (1 - s would tie tiny s)."""
        pos = positive_index(comp)
        s = values[:, pos]
        return np.stack([1.0 - s, s], axis=1), (np.asarray(y) == pos).astype(np.int64)

    def _ranked(self, comp: Competition) -> bool:
        return comp.metric in RANK_METRICS  # AUC reads only the order: any real score

    def check(self, comp, cells):
        what = f"the probability of class {comp.positive_class!r}" if comp.positive_class else "probabilities"
        if self._ranked(comp):
            errors = check_finite(cells, "a real-valued score per row (higher: more likely positive)", False)
            x = cells.numbers
            outside = int(((x < 0) | (x > 1)).sum()) if not errors else 0
            if not outside:
                return errors, []
            return [], [f"{outside} score(s) outside [0, 1] (from {x.min():.6g} to {x.max():.6g}): Kaggle ranks any "
                        f"real score under {comp.metric}, but {MIRRORS} reject values outside [0, 1]; `comp check "
                        "FILE --fix OUT` maps the scores into [0, 1] by rank, which keeps their order and so the AUC"]
        # A binary probability may not exceed 1 (per-class rows may: the grader divides by the row sum).
        return check_finite(cells, what, True) or check_range(cells, False, "a sigmoid"), []

    def fix(self, comp, cells, changes):
        x = fix_finite(cells)
        outside = (x < 0) | (x > 1)
        if not outside.any():
            return cells.values
        if not self._ranked(comp):
            raise Refused(f"values outside [0, 1] (from {x.min():.4g} to {x.max():.4g}) where the metric "
                          f"{comp.metric} needs probabilities: whether they are logits is a guess")
        # Under AUC only the order counts: the dense rank of each score, (rank + 1) / (distinct + 1), lies in (0, 1),
        # keeps every tie and every order, so the AUC is exactly the same (a sigmoid would round far-apart logits
        # to the same 1.0 and tie them).
        distinct, rank = np.unique(x, return_inverse=True)
        digits = max(9, math.ceil(math.log10(len(distinct) + 2)) + 3)
        mapped = (rank.reshape(x.shape) + 1) / (len(distinct) + 1)
        changes.append(f"mapped the scores into (0, 1) by rank ({int(outside.sum())} were outside [0, 1], from "
                       f"{x.min():.6g} to {x.max():.6g}): the order and ties, and so the {comp.metric}, are unchanged, "
                       "and graders that accept only [0, 1] can read it")
        return np.vectorize(lambda v: f"{v:.{digits}g}", otypes=[object])(mapped)

    def predicted(self, comp, cells):
        numbers = cells.numbers
        pos = comp.positive_class if comp.positive_class in comp.classes else comp.classes[-1]
        p = comp.classes.index(pos)
        if comp.num_classes != 2 or self._ranked(comp) or numbers.min() < 0 or numbers.max() > 1:
            return None  # under AUC only the order counts: a 0.5 threshold says nothing about the model
        return np.where(numbers[:, 0] > 0.5, p, 1 - p)

    def warnings(self, comp, cells):
        if self._ranked(comp) and np.isin(cells.numbers, (0.0, 1.0)).all():
            return ["every value is 0 or 1: hard labels throw away the ranking ROC AUC scores; write the "
                    "probabilities instead"]
        return []


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


class ClassProbs(Kind):
    name = "class_probs"
    metric = "log_loss"
    numeric = True
    per_class_columns = True
    example = ("id,cat,dog,frog", "img_001.jpg,0.7,0.2,0.1")

    def spell(self, columns, values, classes, where, forced, positive):
        return SubmissionFormat(self.name, columns, pair_columns(columns, classes, where))

    def placeholder(self, header, ids, classes):
        return pd.DataFrame({header[0]: ids, **{c: 1 / len(classes) for c in classes}})

    def encode(self, comp, columns, probs, sample):
        # the sample's columns, in its order, each matched to a class by its submission label
        labels = labels_of(comp)
        index = {label: j for j, label in enumerate(labels)} | {c: j for j, c in enumerate(comp.classes)}
        unmatched = [repr(c) for c in columns if c not in index]
        if unmatched or len(columns) != len(labels):
            raise CompError(
                f"comp.toml: the sample's probability columns ({len(columns)}) do not pair one to one with the "
                f"{len(labels)} classes" + (f"; no class is written as {first(unmatched)}" if unmatched else "")
                + ": fix submission_labels so each sample column names one class"
            )
        p = probs.astype(np.float64).clip(0, None)
        p /= p.sum(axis=1, keepdims=True)
        return {c: p[:, index[c]] for c in columns}

    def decode(self, comp, columns):
        cols = column_index(comp)
        n = len(next(iter(columns.values())))
        probs = np.zeros((n, comp.num_classes))
        for c, cells in columns.items():
            if c in cols:
                probs[:, cols[c]] = np.array(cells, dtype=np.float64)
        return probs  # as written: sklearn's log loss (the graders') clips at float64's epsilon itself

    def check(self, comp, cells):
        errors = check_finite(cells, "probabilities", True) or check_range(cells, True, "softmax over each row")
        if errors:
            return errors, []
        # Kaggle's multi-class log loss divides each row by its sum: any non-negative row with a positive sum scores.
        sums = cells.numbers.sum(axis=1)
        zero = np.flatnonzero(sums <= 0)
        if len(zero):
            shown = first([cells.at(i) for i in zero])
            return [f"{len(zero)} row(s) are all zero ({shown}): the grader divides each row by its sum, so these "
                    "cannot be scored; write the model's probabilities"], []
        off = np.flatnonzero(np.abs(sums - 1) > SUM_WARN)
        if len(off):
            shown = first([f"{cells.at(i)} sums to {sums[i]:.6g}" for i in off])
            return [], [f"{len(off)} row(s) do not sum to 1 within {SUM_WARN:g} ({shown}): Kaggle rescales each row "
                        "by its sum, so it scores there as if normalised, but other graders (mirrors such as "
                        "mle-bench's) may score the values as written; `comp check FILE --fix OUT` divides each row "
                        "by its sum"]
        return [], []

    def fix(self, comp, cells, changes):
        x = fix_finite(cells)
        if (x < 0).any():
            raise Refused("negative probabilities: whether these are logits or clipped noise is a guess")
        sums = x.sum(axis=1)
        if (sums <= 0).any():
            raise Refused(f"{int((sums <= 0).sum())} all-zero row(s): only the model's probabilities can fill them")
        off = np.flatnonzero(np.abs(sums - 1) > SUM_EXACT)
        if not len(off):
            return cells.values
        digits = float_digits(len(cells.cols))
        fixed = cells.values.copy()
        fixed[off] = np.vectorize(lambda v: f"{v:.{digits}g}", otypes=[object])(x[off] / sums[off, None])
        changes.append(f"divided {len(off)} row(s) by their sum (they summed to {sums[off].min():.6g}.."
                       f"{sums[off].max():.6g}), as Kaggle's scorer does")
        return fixed

    def predicted(self, comp, cells):
        index = {x: j for j, x in enumerate(labels_of(comp))}
        if not all(c in index for c in cells.cols):
            return None
        return np.array([index[cells.cols[j]] for j in cells.numbers.argmax(axis=1)])
