"""One (model, fold) run's record: what its artifacts were made from (provenance.json).
"""

import json
from typing import Any

from comp.core import atomic
from comp.core.errors import CompError
from comp.core.workspace import RunPaths


def read_provenance(paths: RunPaths) -> dict[str, Any] | None:
    if not paths.provenance.exists():
        return None
    try:
        return json.loads(paths.provenance.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CompError(f"{paths.provenance} is unreadable ({err}); re-run with --force to retrain this fold") from err


def write_provenance(paths: RunPaths, record: dict[str, Any]) -> None:
    atomic.write_json(paths.provenance, record)
