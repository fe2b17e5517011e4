"""submissions/ledger.csv: what was sent, how it was made and how it scored; and its CV-vs-public plot.

One row per submission. The file is rewritten whole through `comp.core.atomic` on every change, so a crash leaves the
previous ledger, never half a row; each read-change-rewrite holds the ledger's lock (`atomic.locked`), so concurrent
`comp submit`, `comp submit --kernel` and `comp submissions --refresh` never lose each other's rows. Every value is
kept as text (scores as the platform wrote them) so nothing is lost to float formatting. Credentials never come
here: rows hold file hashes, messages and platform refs only.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from comp.core import atomic
from comp.core.errors import CompError
from comp.core.provenance import sha256_file
from comp.core.workspace import Workspace

COLUMNS = [
    "time",  # UTC, ISO 8601, when the platform accepted it (or when it was recorded, platform none)
    "file",  # the CSV, relative to the workspace when inside it
    "sha256",  # of the CSV as sent
    "message",
    "models",  # from the submission's sidecar JSON (written by `comp stack`), ";"-joined
    "method",  # how the models were blended
    "cv",  # the blend's cross-validated score on the competition metric
    "platform",  # kaggle | codabench | none
    "ref",  # the platform's submission ref / id ("" for platform none)
    "status",  # recorded | pending | complete | error
    "public_score",
    "private_score",
    "kernel",  # code competitions: the notebook (owner/slug vN) and the dataset it read (owner/slug @content hash)
]
ADDED_LATER = ("kernel",)  # columns older ledgers lack: read as empty, written on the next change


def read(ws: Workspace) -> pd.DataFrame:
    """The ledger as text columns (empty frame with COLUMNS when there is none yet)."""
    if not ws.ledger.exists():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    if not ws.ledger.is_file():
        raise CompError(f"{ws.ledger} is not a file (a folder?); move it away so comp can keep its ledger there")
    try:
        frame = pd.read_csv(ws.ledger, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise CompError(f"{ws.ledger} is not a readable CSV ({err}); restore it from a backup or move it away") from err
    except OSError as err:
        why = err.strerror or err
        raise CompError(f"cannot read {ws.ledger} ({why}); fix its permissions or move it away") from err
    for column in ADDED_LATER:
        if column not in frame.columns:
            frame[column] = ""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise CompError(f"{ws.ledger} lacks column(s) {', '.join(missing)}; it was not written by comp, move it away")
    return frame[COLUMNS].astype(object)


def append(ws: Workspace, row: dict[str, str]) -> None:
    """Add one row (unknown keys are a bug; missing ones are left empty)."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown ledger column(s): {sorted(unknown)}")
    new = pd.DataFrame([{c: _text(row.get(c, "")) for c in COLUMNS}], dtype=object)
    with atomic.locked(ws.ledger_lock):
        frame = read(ws)
        _write(ws, pd.concat([frame, new], ignore_index=True) if len(frame) else new)


def update(ws: Workspace, platform: str, ref: str, **fields: str) -> None:
    """Set `fields` on the rows with this platform and ref (a ref may appear once per platform)."""
    for key in fields:
        if key not in COLUMNS:
            raise ValueError(f"unknown ledger column: {key}")
    with atomic.locked(ws.ledger_lock):
        frame = read(ws)
        match = (frame["platform"] == platform) & (frame["ref"] == str(ref))
        if not match.any():
            raise CompError(f"{ws.ledger} has no {platform} submission {ref}; was the ledger edited by hand?")
        for key, value in fields.items():
            frame.loc[match, key] = _text(value)
        _write(ws, frame)


def sidecar(ws: Workspace, csv_path: Path) -> dict[str, str]:
    """`models`, `method` and `cv` from submissions/<name>.json beside the CSV (written by the stacker), if any."""
    meta_path = ws.submission_json(Path(csv_path).stem)
    if Path(csv_path).resolve().parent != ws.submissions_dir.resolve():
        meta_path = Path(csv_path).with_suffix(".json")
    if not meta_path.is_file():
        return {"models": "", "method": "", "cv": ""}
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        meta = {}  # a broken sidecar must not block a submission: the ledger just lacks its provenance
    if not isinstance(meta, dict):
        meta = {}
    if meta.get("csv_sha256") and meta["csv_sha256"] != sha256_file(csv_path):
        meta = {}  # the record describes another CSV (this one was replaced since): its models and CV are not this
    models = meta.get("models", "")
    if isinstance(models, list | tuple):
        models = ";".join(str(m) for m in models)
    return {"models": _text(models), "method": _text(meta.get("method", "")), "cv": _text(meta.get("cv", ""))}


def sent_files(ws: Workspace) -> set[Path]:
    """The files the ledger says were sent, resolved (CompError when the ledger cannot be read)."""
    return {ws.path(f).resolve() for f in read(ws)["file"] if f}


def refuse_overwrite(ws: Workspace, path: str | os.PathLike, force: bool, instead: str) -> None:
    """The one rule for replacing a file a command would write: a file the ledger holds is never replaced (it is what
    was sent, and its row describes it), an existing one only with `force`, and `force` only while the ledger can
    be read (otherwise a sent file could not be told apart). `instead` is the advice, e.g. "choose another --name"."""
    path = Path(path)
    try:
        sent = path.resolve() in sent_files(ws)
    except CompError as err:
        if force and path.exists():
            raise CompError(f"{path} exists and {ws.ledger} cannot be read, so comp cannot tell whether it was "
                            f"submitted; --force is refused until the ledger is readable ({err}); or {instead}"
                            ) from None
        sent = False
    if sent:
        raise CompError(f"{path} was already submitted (it is in {ws.ledger}), so it is kept as sent, even with "
                        f"--force; {instead}")
    if path.exists() and not force:
        raise CompError(f"{path} exists; {instead}, or add --force to replace it")


def plot(ws: Workspace, frame: pd.DataFrame | None = None) -> Path | None:
    """Scatter of CV vs public score for rows that have both; writes ws.ledger_plot. None when nothing to plot."""
    frame = read(ws) if frame is None else frame
    cv = pd.to_numeric(frame["cv"], errors="coerce")
    public = pd.to_numeric(frame["public_score"], errors="coerce")
    keep = cv.notna() & public.notna()
    if not keep.any():
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window from a CLI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(cv[keep], public[keep])
    for x, y, label in zip(cv[keep], public[keep], frame.loc[keep, "ref"], strict=True):
        ax.annotate(str(label), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    low = float(min(cv[keep].min(), public[keep].min()))
    high = float(max(cv[keep].max(), public[keep].max()))
    ax.plot([low, high], [low, high], linestyle="--", linewidth=0.8, color="grey", label="public = CV")
    ax.margins(0.15)  # keep the labels of points at the edges inside the figure
    ax.set_xlabel("CV score")
    ax.set_ylabel("public leaderboard score")
    ax.set_title("Does CV predict the leaderboard?")
    ax.legend(loc="best")
    fig.tight_layout()
    with atomic.atomic_path(ws.ledger_plot) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return ws.ledger_plot


def _write(ws: Workspace, frame: pd.DataFrame) -> None:
    atomic.write_csv(ws.ledger, frame[COLUMNS])


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)
