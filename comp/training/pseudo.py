"""Pseudo-labels: confident test predictions of a stack, added to the training rows of every fold.

The rows are built one layer up (comp.ensemble.pseudo reads the stack); training only needs them as extra labelled
items. They carry fold -1, so `fold != k` puts them in every fold's training rows and `fold == k` never puts them
among the held-out rows: the OOF scores stay on real labels only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from comp.core.config import Competition
from comp.core.workspace import Workspace

PSEUDO_FOLD = -1  # the fold value of pseudo-labelled rows: in no fold's held-out set


@dataclass(frozen=True)
class PseudoLabels:
    """Test images the stack labels with probability >= threshold."""

    stack: str  # the submission name
    threshold: float
    source: str  # what provenance records: the stack's name and the sha256 of its CSV
    frame: pd.DataFrame  # id (the test id), path, label (class name), prob
    n_test: int  # test images considered

    def per_class(self, classes: list[str]) -> dict[str, int]:
        counts = self.frame["label"].value_counts()
        return {c: int(counts.get(c, 0)) for c in classes}

    def describe(self, classes: list[str] | None = None) -> str:
        counts = self.per_class(classes or sorted(self.frame["label"].unique()))
        per = ", ".join(f"{c} {n}" for c, n in counts.items())
        return (f"pseudo-labels from stack {self.stack!r}: {len(self.frame)} of {self.n_test} test images at "
                f"probability >= {self.threshold:g} join every fold's training rows ({per or 'none'})")


# What train() calls to turn the recipe's `pseudo` stack name into rows: (competition, workspace, stack, threshold).
PseudoSource = Callable[[Competition, Workspace, str, float], PseudoLabels]


def add_pseudo_rows(items: pd.DataFrame, pseudo: PseudoLabels) -> pd.DataFrame:
    """`items` (id, path, label, fold, ...) plus the pseudo-labelled rows in fold PSEUDO_FOLD."""
    rows = pd.DataFrame({
        "id": "pseudo:" + pseudo.frame["id"].astype(str),  # never mistaken for a training id
        "path": pseudo.frame["path"].to_numpy(),
        "label": pseudo.frame["label"].to_numpy(),
        "fold": PSEUDO_FOLD,
    })
    return pd.concat([items, rows], ignore_index=True)
