"""The first narrow waist: logits keyed by id, one column per class, with the hashes of what made them.

Train and predict write these; stack, report and status read only these. Stored as `.npz` (ids as a fixed-width
unicode array, float32 logits, the class list, and a JSON string of `comp.runs.LogitsMeta`) so loading never needs
pickle.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from comp.core import atomic
from comp.core.errors import CompError
from comp.runs import LogitsMeta


@dataclass
class Logits:
    ids: np.ndarray  # (n,) str
    values: np.ndarray  # (n, C) float32
    classes: list[str]
    meta: LogitsMeta = field(default_factory=LogitsMeta)  # what made them (a plain dict is read as one)

    def __post_init__(self) -> None:
        if isinstance(self.meta, Mapping):
            self.meta = LogitsMeta.from_dict(dict(self.meta))
        self.ids = np.asarray(self.ids).astype(str)
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim != 2 or self.values.shape != (len(self.ids), len(self.classes)):
            raise CompError(
                f"logits shape {self.values.shape} does not match {len(self.ids)} ids x {len(self.classes)} classes"
            )

    def reindex(self, ids) -> np.ndarray:
        """Values in the order of `ids` (join on id, never position); a missing id is an error naming it."""
        pos = {k: i for i, k in enumerate(self.ids)}
        missing = [k for k in ids if k not in pos]
        if missing:
            raise CompError(f"{len(missing)} id(s) have no logits, e.g. {missing[:3]}")
        return self.values[[pos[k] for k in ids]]


def save(path: str | os.PathLike, logits: Logits) -> None:
    buf = io.BytesIO()
    np.savez(
        buf,
        ids=np.asarray(logits.ids, dtype=str),
        values=logits.values,
        classes=np.asarray(logits.classes, dtype=str),
        meta=np.asarray(json.dumps(logits.meta.to_dict(), default=str)),
    )
    atomic.write_bytes(path, buf.getvalue())


def load(path: str | os.PathLike) -> Logits:
    path = Path(path)
    if not path.exists():
        raise CompError(f"{path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            classes = [str(c) for c in z["classes"]]
            meta = LogitsMeta.from_dict(json.loads(str(z["meta"])))
            return Logits(ids=z["ids"], values=z["values"], classes=classes, meta=meta)
    except (OSError, ValueError, KeyError, CompError) as err:
        raise CompError(f"{path} is not a readable logits file ({err}); re-create it with `comp predict`") from err
