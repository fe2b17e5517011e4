"""The one exception type meant for people.

Library code raises `CompError` with a message that says what is wrong, where (file, row, id, column) and how to
fix it; the CLI prints it without a traceback and exits 1. Anything else escaping a command is a bug.
"""

from __future__ import annotations


class CompError(Exception):
    """A problem the user can fix; `str(err)` is the whole message."""


class StaleError(CompError):
    """An artifact was made from other inputs (folds, recipe, competition) than the ones in force now."""

    @classmethod
    def naming(cls, what: str, changes: list[str], fix: str) -> StaleError:
        """The one wording of a refusal: what is stale, each change with both values, and the command that fixes it
        (`comp.runs.require_current` builds the changes of a run; folds.csv names its changed rows)."""
        return cls(f"{what} is stale: {'; '.join(changes)}. {fix}")
