"""`comp download`: a Kaggle competition's files into data/<slug>, whole or not at all.

The zip is streamed to a temp file, unpacked into a temp folder beside the target (zips inside it too: Kaggle often
ships train.zip / test.zip within the bundle), and only then renamed onto data/<slug>. An interrupted or failed
download leaves no folder that `comp init` could mistake for the competition.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from rich.progress import BarColumn, DownloadColumn, TimeRemainingColumn, TransferSpeedColumn

from comp.core.errors import CompError
from comp.core.progress import progress_bar
from comp.core.workspace import Workspace
from comp.platforms.base import safe_name


def download_competition(ws: Workspace, slug: str, dest: Path | None = None, backend=None) -> Path:
    """Download and unpack competition `slug` into `dest` (default ws.root/data/slug); returns the folder."""
    safe_name(slug, "competition slug")
    dest = Path(dest) if dest is not None else ws.root / "data" / slug
    dest = dest if dest.is_absolute() else ws.root / dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CompError(f"{dest} already exists and is not empty; delete it or pass --dir to unpack elsewhere")
    if backend is None:
        from comp.platforms.kaggle import KaggleBackend

        backend = KaggleBackend.from_env(slug)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, zip_name = tempfile.mkstemp(prefix=f".{slug}.", suffix=".zip.part", dir=dest.parent)
    os.close(fd)
    zip_path = Path(zip_name)
    staging = Path(tempfile.mkdtemp(prefix=f".{slug}.", suffix=".unpacking", dir=dest.parent))
    try:
        with progress_bar(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(),
        ) as progress:
            task = progress.add_task(f"downloading {slug}", total=None)
            backend.download(zip_path, lambda done, total: progress.update(task, completed=done, total=total or None))
        unpack(zip_path, staging, f"the download of {slug}")
        if dest.exists():
            dest.rmdir()  # empty (checked above); os.replace cannot replace a directory
        os.replace(staging, dest)
    finally:
        zip_path.unlink(missing_ok=True)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return dest


def kaggle_metric(slug: str, backend=None) -> tuple[str, str]:
    """(comp's metric, a line saying where it came from) from Kaggle's competition record, best effort: ("", why)
    when Kaggle cannot be asked, has no metric on record, or names one comp does not compute (named in `why`)."""
    from comp.platforms.kaggle import comp_metric

    try:
        if backend is None:
            from comp.platforms.kaggle import KaggleBackend

            backend = KaggleBackend.from_env(slug)
        named = backend.evaluation_metric()
    except CompError as err:
        return "", f"Kaggle's competition record could not be read ({err})"
    if not named:
        return "", "Kaggle's competition record names no metric"
    metric = comp_metric(named)
    if not metric:
        return "", (f"Kaggle's competition record names the metric {named!r}, which comp does not compute; score "
                    "with the closest one comp has (--metric)")
    return metric, f"from Kaggle's competition record ({named!r})"


def unpack(zip_path: Path, folder: Path, label: str = "", depth: int = 0) -> None:
    """Unzip into `folder`, refusing members that would land outside it; zips inside are unpacked beside
    themselves into a folder of the same name (train.zip -> train/) and removed."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise CompError(f"{label or zip_path.name} is not a zip file; run `comp download` again") from None
    with archive:
        for member in archive.namelist():
            parts = PurePosixPath(member.replace("\\", "/")).parts
            if member.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
                raise CompError(f"{label or zip_path.name} holds {member!r}, a path outside its folder; not unpacked")
        try:
            archive.extractall(folder)
        except (OSError, zipfile.BadZipFile) as err:
            raise CompError(f"could not unpack {label or zip_path.name} ({err}); check free disk space and retry") \
                from None
    if depth >= 2:
        return
    for inner in sorted(folder.rglob("*.zip")):
        target = inner.with_suffix("")
        if target.exists():
            continue  # the bundle ships both the zip and its contents; keep what is there
        with zipfile.ZipFile(inner) as archive:
            tops = {PurePosixPath(name).parts[0] for name in archive.namelist() if name.strip("/")}
        # train.zip usually holds train/...; unpacking that into train/ would give train/train/.
        unpack(inner, inner.parent if tops == {target.name} else target, inner.name, depth + 1)
        inner.unlink()
