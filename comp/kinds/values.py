"""Text cells as the graders read them, shared by every kind and by the rooms that read submissions and samples:
what counts as a number or an integer, how a label is compared across spellings, how a message lists examples.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from comp.core.config import Competition

SHOW = 3  # examples a message lists; it names the first few, never thousands

INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: `\d` would take '٣' and '３', which pandas reads as text

# A number as pandas' C parser (read_csv, what the graders use) reads one: ASCII digits, an optional exponent,
# inf/infinity in any case, spaces or tabs around it. Python's float() also takes '0.0_5', '３' and a trailing
# no-break space, so a file that float() reads can still be one the grader rejects.
NUMBER = re.compile(r"[ \t]*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf(?:inity)?))[ \t]*")
_PLAIN = np.zeros(128, dtype=bool)  # the characters of an everyday number (and numpy's string padding, 0)
_PLAIN[[0, *map(ord, "0123456789.+-eE")]] = True


def parse_numbers(cells: np.ndarray) -> np.ndarray:
    """Text cells -> float64, NaN where pandas would not read a number (so the grader would reject the file)."""
    if cells.dtype.kind == "U" and cells.size:  # the everyday file: numpy's C parser, fast and exact
        codes = np.ascontiguousarray(cells).view(np.uint32).ravel()  # one code point per character
        if codes.max() < 128 and _PLAIN[np.flatnonzero(np.bincount(codes, minlength=128))].all():
            try:
                return cells.astype(np.float64)
            except ValueError:
                pass
    flat = cells.ravel().tolist()
    out = np.full(len(flat), np.nan)
    for i, value in enumerate(flat):
        if NUMBER.fullmatch(value):
            out[i] = float(value)
    return out.reshape(cells.shape)


def labels_of(comp: Competition) -> list[str]:
    """How each class (in `comp.classes` order) is written in the submission."""
    return list(comp.submission_labels or comp.classes)


def first(items: Sequence[str]) -> str:
    """The first few items for a message, with the total when some are left out."""
    shown = ", ".join(items[:SHOW])
    return shown + (f", ... ({len(items)} in all)" if len(items) > SHOW else "")


def normalise_label(label: str) -> str:
    """The spelling-insensitive form used to pair class names across files: `golden_retriever` == `Golden Retriever`."""
    return " ".join(label.replace("_", " ").lower().split())


def is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def is_integer(value: str) -> bool:
    return is_number(value) and float(value).is_integer()


def natural(value: str) -> tuple:
    """Sort key: integers by value before names."""
    return (0, int(value), "") if INTEGER.fullmatch(value) else (1, 0, value)


def is_integral_float(value: str) -> bool:
    if not NUMBER.fullmatch(value):  # float() would also take '٣' or '3_0'
        return False
    f = float(value)
    return bool(np.isfinite(f) and f == int(f))
