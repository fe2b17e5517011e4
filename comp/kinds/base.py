"""What every submission kind answers, and the plain data the answers travel in.

A kind is one way a competition writes its predictions (a class name per row, a probability per class, a list of
tags, ...). Everything that differs between kinds is a method of its class here; write, check, fix, warnings,
scoring, stacking, training and `comp init` ask the kind and never test its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from comp.core.config import Competition

RANK_METRICS = ("roc_auc", "weighted_auc", "mean_column_auc")  # metrics that read only the order of a score


@dataclass(frozen=True)
class SubmissionFormat:
    """What the sample submission says about how predictions are written (the matching comp.toml fields)."""

    kind: str
    label_columns: list[str]
    submission_labels: list[str]
    positive_class: str = ""
    top_k: int = 5
    notes: tuple[str, ...] = ()


class Refused(Exception):
    """`comp check --fix`: one problem that cannot be fixed without guessing (nothing is written)."""


@dataclass
class Cells:
    """A submission's prediction cells as check, fix and the warnings see them, after the structural checks."""

    cols: list[str]  # the prediction columns, in the file's order
    values: np.ndarray  # (n, len(cols)) text
    ids: list[str]
    lines: list[int]  # each row's line in the file
    numbers: np.ndarray | None = None  # `values` as the grader's numbers (NaN: not one), for numeric kinds

    def at(self, i: int) -> str:
        return f"line {self.lines[i]} (id {self.ids[i]!r})"


REGISTERED: dict[str, Kind] = {}  # name -> the kind's one instance, filled as the classes are defined


class Kind:
    """One submission kind. Subclasses set the class attributes and override what differs; a subclass with a
    `name` registers itself (comp.kinds.REGISTRY), so a new kind is one class (and its name in config.KINDS)."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            REGISTERED[cls.name] = cls()

    name: ClassVar[str] = ""
    metric: ClassVar[str] = "accuracy"  # the default metric `comp init` writes
    numeric: ClassVar[bool] = False  # its cells are numbers (check parses them once)
    per_class_columns: ClassVar[bool] = False  # one prediction column per class (else one column in all)
    multilabel: ClassVar[bool] = False  # a row may hold several classes: sigmoid per class, BCE, multi-hot targets
    thresholded: ClassVar[bool] = False  # writes decisions per class (tags): stack fits a threshold per class
    takes_positive: ClassVar[bool] = False  # --positive/--negative set it up (one probability of one class)
    example: ClassVar[tuple[str, str]] = ("", "")  # a header and a row, for the README and the tests

    # -- comp init
    def spell(self, columns: list[str], values: list[str], classes: list[str], where: str, forced: bool,
              positive: str) -> SubmissionFormat:
        """The comp.toml fields of this kind from the sample's prediction `columns` and their non-empty `values`."""
        raise NotImplementedError

    def placeholder(self, header: tuple[str, str], ids: list[str], classes: list[str]) -> pd.DataFrame:
        """A made-up sample (no sample is shipped): the id column and this kind's columns, any valid values."""
        return pd.DataFrame({header[0]: ids, header[1]: classes[0]})

    def describe(self, comp: Competition) -> str:
        """The kind as `comp init` shows it."""
        return self.name

    # -- training and blending
    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Model logits (n, C) -> probabilities as the submission writes them (float64)."""
        from comp.core.metrics import softmax  # sklearn behind it: loaded when training or stacking needs it

        return softmax(logits, axis=1)

    def loss(self, logits: np.ndarray, y: np.ndarray) -> float:
        """The mean training loss of `logits` against targets `y` (from `targets`), for the validation curve."""
        from comp.core.metrics import log_softmax

        logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
        return float(-logp[np.arange(len(y)), y].mean()) if len(y) else float("nan")

    def merge(self, asked: str) -> str:
        """The TTA merge (comp.vision.tta.MERGES) that does what `asked` means for this kind: `prob` averages
        probabilities as the kind makes them."""
        return asked

    def targets(self, classes: list[str], labels: list[str]) -> tuple[np.ndarray, list[str]]:
        """Training labels -> (targets: class indices (n,), or multi-hot (n, C) for multi-label; unknown labels)."""
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({v for v in labels if v not in index})
        return np.array([index.get(v, -1) for v in labels], dtype=np.int64), unknown

    # -- the submission file
    def encode(self, comp: Competition, columns: list[str], probs: np.ndarray,
               sample: np.ndarray) -> dict[str, np.ndarray]:
        """Probabilities (n, C) in comp.classes order -> the sample's prediction `columns` (text or numbers);
        `sample` holds the sample's own prediction cells (text), for kinds whose rules the sample sets."""
        raise NotImplementedError

    def decode(self, comp: Competition, columns: dict[str, list[str]]) -> np.ndarray:
        """A submission's prediction columns (name -> cells) -> per-class values (n, C) as the graders read them,
        which `comp.core.metrics.score(..., written=True)` scores: numbers as written (never clipped), 1/0 for a
        written tag, minus the position in the row for a written label (-inf where a class is not written).
        Raises ValueError on a cell that is not a number or not a class."""
        raise NotImplementedError

    def as_scored(self, comp: Competition, values: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The decoded values and the answers' targets in the form the metric takes them (default: as they are)."""
        return values, y

    def empty_allowed(self, sample: np.ndarray) -> bool:
        """Whether an empty prediction cell is a prediction (given the sample's prediction cells)."""
        return False

    def check(self, comp: Competition, cells: Cells) -> tuple[list[str], list[str]]:
        """(errors, warnings) about the values of a structurally sound file."""
        raise NotImplementedError

    def fix(self, comp: Competition, cells: Cells, changes: list[str]) -> np.ndarray:
        """The values rewritten where one rewrite is right (each said in `changes`); `Refused` where a guess."""
        raise NotImplementedError

    def predicted(self, comp: Competition, cells: Cells) -> np.ndarray | None:
        """The class index each row predicts, for the class-mix warnings; None when a row is no single class."""
        return None

    def warnings(self, comp: Competition, cells: Cells) -> list[str]:
        """This kind's own warnings about a valid file (besides the class-mix ones every kind gets)."""
        return []
