"""Where one `comp train` stands across its folds: "fold k (i/N)" and an ETA over every epoch still to run."""

from __future__ import annotations

import time


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s: short enough for the end of a progress line."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Pace:
    """Epochs left per fold and the mean epoch time so far; resumed and skipped folds count only what is left."""

    def __init__(self, folds: list[int] | None = None, epochs: int = 0) -> None:
        self.folds = list(folds or [])
        self.left = dict.fromkeys(self.folds, epochs)  # fold -> epochs still to train
        self.seconds: list[float] = []
        self.started = time.time()

    def label(self, k: int) -> str:
        """'fold 2 (3/5)' when several runs go, else 'fold 2'; the full fit is 'full fit'."""
        name = "full fit" if k == "full" else f"fold {k}"
        if len(self.folds) > 1 and k in self.folds:
            return f"{name} ({self.folds.index(k) + 1}/{len(self.folds)})"
        return name

    def start(self, k: int, done_epochs: int) -> None:
        if k in self.left:
            self.left[k] = max(0, self.left[k] - done_epochs)

    def epoch_done(self, k: int, seconds: float) -> None:
        self.seconds.append(seconds)
        if k in self.left:
            self.left[k] = max(0, self.left[k] - 1)

    def finish(self, k: int) -> None:  # finished, skipped or stopped early: nothing left of this fold
        if k in self.left:
            self.left[k] = 0

    def eta(self) -> str:
        """'ETA 4m10s for 3 folds' (empty when nothing is left or nothing is timed yet)."""
        epochs_left = sum(self.left.values())
        if not epochs_left or not self.seconds:
            return ""
        folds_left = sum(1 for v in self.left.values() if v)
        where = f" for {folds_left} fold{'s' if folds_left != 1 else ''}" if len(self.folds) > 1 else ""
        return f"ETA {duration(epochs_left * sum(self.seconds) / len(self.seconds))}{where}"
