"""The multi-label kinds: an image may hold any number of the classes (Planet's tags, per-class probability columns
as in plant-pathology-2021 or CheXpert). They train one sigmoid per class (BCE), and their targets are multi-hot."""

from __future__ import annotations

import numpy as np
import pandas as pd

from comp.core.errors import CompError
from comp.kinds.base import RANK_METRICS, Kind, Refused, SubmissionFormat
from comp.kinds.single import (
    check_finite,
    check_label_lists,
    check_range,
    column_index,
    fix_finite,
    fix_label_lists,
    one_column,
    pair_columns,
    spell_like_sample,
)
from comp.kinds.values import first, labels_of


def split_tags(cell: str) -> list[str]:
    """One cell of a tags column -> its tags (space-separated; an empty cell is no tag)."""
    return cell.split()


class _MultiLabel(Kind):
    multilabel = True

    def probabilities(self, logits):
        from comp.core.metrics import sigmoid  # sklearn behind it: loaded when training or stacking needs it

        return sigmoid(logits)

    def loss(self, logits, y):
        # binary cross-entropy per (image, class), stable for any logit: log(1 + e^z) - y z
        z = np.asarray(logits, dtype=np.float64)
        return float(np.mean(np.logaddexp(0.0, z) - y * z)) if len(z) else float("nan")

    def merge(self, asked):
        # the mean of the views' sigmoid probabilities (as logits) where a single-label model averages softmax ones;
        # training uses it too: averaging per-class probabilities, not logits
        return "sigmoid" if asked in ("prob", "mean") else asked

    def targets(self, classes, labels):
        index = {c: i for i, c in enumerate(classes)}
        y = np.zeros((len(labels), len(classes)), dtype=np.int64)
        unknown: set[str] = set()
        for r, cell in enumerate(labels):
            for tag in split_tags(cell):
                if tag in index:
                    y[r, index[tag]] = 1
                else:
                    unknown.add(tag)
        return y, sorted(unknown)


class Tags(_MultiLabel):
    name = "tags"
    thresholded = True
    metric = "f2_samples"  # Planet's: F-beta with beta 2 averaged over images; any f<beta>_samples works
    example = ("image_name,tags", "test_0,agriculture clear primary road")

    def spell(self, columns, values, classes, where, forced, positive):
        tokens = [t for v in values for t in split_tags(v)]
        return SubmissionFormat(self.name, columns, spell_like_sample(tokens, classes, where, strict=not forced),
                                notes=(f"tags: column {columns[0]!r} holds the image's tags, space-separated",))

    def empty_allowed(self, sample):
        # The sample writes an image without tags as an empty cell only where the platform takes one.
        return bool(sample.size) and bool((np.char.strip(sample.astype(str)) == "").any())

    def encode(self, comp, columns, probs, sample):
        col = one_column(comp, self.name, columns)
        names = np.asarray(labels_of(comp), dtype=object)
        chosen = probs > 0.5
        if not self.empty_allowed(sample):
            # An empty row is refused by the platform: the likeliest tag is the best single guess.
            none = ~chosen.any(axis=1)
            chosen[none, probs[none].argmax(axis=1)] = True
        return {col: np.array([" ".join(names[row]) for row in chosen], dtype=object)}

    def decode(self, comp, columns):
        (cells,) = columns.values()
        index = column_index(comp)
        out = np.zeros((len(cells), comp.num_classes))  # as written: 1 for a tag in the row, 0 for the rest
        for r, cell in enumerate(cells):
            for tag in split_tags(cell):
                if tag not in index:
                    raise ValueError(f"row {r + 2}: {tag!r} is not a tag")
                out[r, index[tag]] = 1.0
        return out

    def check(self, comp, cells):
        return [e for j, col in enumerate(cells.cols)
                for e in check_label_lists(comp, col, cells.values[:, j].tolist(), cells, comp.num_classes,
                                           f"the {comp.num_classes} known tags")], []

    def fix(self, comp, cells, changes):
        return fix_label_lists(comp, cells, changes, comp.num_classes, "tags")

    def warnings(self, comp, cells):
        column = cells.values[:, 0]
        if len(column) > 1 and (column == column[0]).all():
            return [f"every row holds the same tags ({str(column[0])!r}): a collapsed model, or the sample itself?"]
        return []


class MultilabelProbs(_MultiLabel):
    name = "multilabel_probs"
    metric = "mean_column_auc"
    numeric = True
    per_class_columns = True
    example = ("image_id,healthy,rust,scab", "img_001.jpg,0.05,0.91,0.62")

    def spell(self, columns, values, classes, where, forced, positive):
        return SubmissionFormat(self.name, columns, pair_columns(columns, classes, where),
                                notes=("multilabel_probs: one probability per class column, each on its own "
                                       "(rows need not sum to 1)",))

    def placeholder(self, header, ids, classes):
        return pd.DataFrame({header[0]: ids, **{c: 0.5 for c in classes}})

    def encode(self, comp, columns, probs, sample):
        index = column_index(comp)
        unmatched = [repr(c) for c in columns if c not in index]
        if unmatched or len(columns) != comp.num_classes:
            raise CompError(
                f"comp.toml: the sample's probability columns ({len(columns)}) do not pair one to one with the "
                f"{comp.num_classes} classes" + (f"; no class is written as {first(unmatched)}" if unmatched else "")
                + ": fix submission_labels so each sample column names one class"
            )
        return {c: probs[:, index[c]].astype(np.float64).clip(0, 1) for c in columns}

    def decode(self, comp, columns):
        index = column_index(comp)
        n = len(next(iter(columns.values())))
        out = np.zeros((n, comp.num_classes))
        for c, cells in columns.items():
            if c in index:
                out[:, index[c]] = np.array(cells, dtype=np.float64)  # as written, never clipped
        return out

    def _ranked(self, comp) -> bool:
        return comp.metric in RANK_METRICS

    def check(self, comp, cells):
        if self._ranked(comp):
            return check_finite(cells, "a real-valued score per class (higher: more likely)", False), []
        return (check_finite(cells, "a probability per class", True)
                or check_range(cells, False, "a sigmoid to each value")), []

    def fix(self, comp, cells, changes):
        x = fix_finite(cells)
        if not self._ranked(comp) and (x.min() < 0 or x.max() > 1):
            raise Refused(f"values outside [0, 1] (from {x.min():.4g} to {x.max():.4g}) where the metric "
                          f"{comp.metric} needs probabilities: whether they are logits is a guess")
        return cells.values

    def warnings(self, comp, cells):
        if self._ranked(comp) and np.isin(cells.numbers, (0.0, 1.0)).all():
            return ["every value is 0 or 1: hard labels throw away the ranking the column-wise ROC AUC scores; "
                    "write the probabilities instead"]
        return []
