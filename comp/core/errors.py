"""The one exception type meant for people.

Library code raises `CompError` with a message that says what is wrong, where (file, row, id, column) and how to
fix it; the CLI prints it without a traceback and exits 1. Anything else escaping a command is a bug.
"""


class CompError(Exception):
    """A problem the user can fix; `str(err)` is the whole message."""


class StaleError(CompError):
    """An artifact was made from other inputs (folds, recipe, competition) than the ones in force now."""
