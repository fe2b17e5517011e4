"""Wheels for an offline kernel: comp's own, and the pure-Python packages a stock Kaggle image lacks or may hold in
another version, each recorded with name, version and sha256.

Which packages travel (`BUNDLED`): ttach (not in Kaggle's image), tomli-w (comp.core.config imports it; not in the
image), tomli (comp reads TOML with it where Python 3.10 lacks tomllib) and timm, pinned to the version the models
were trained with, because a model's definition is timm's code and the image's timm may be older or newer. Never
torch, torchvision, numpy, scikit-learn, pandas, safetensors or pillow: the image has them built for its CUDA, and a
wheel from here could not replace them offline anyway (the kernel reports their versions so a mismatch is visible).

comp's wheel is built with `pip wheel --no-deps --no-build-isolation --no-index` from a copy of its source tree (an
editable checkout); the dependencies are repacked from the installed distributions (their RECORD lists every
file), so the kernel runs exactly the code the models were trained and stacked with, and nothing is downloaded.
Zip entries carry a fixed date, so rebuilding an unchanged bundle gives byte-identical wheels and the dataset's
content hash (`comp submit --kernel` skips the upload when it is unchanged) stays the same.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from comp.core.errors import CompError
from comp.core.provenance import sha256_file

# the packages a Kaggle image lacks (ttach, tomli-w; tomli on Python 3.10 images) or holds in another version (timm)
BUNDLED = ("timm", "ttach", "tomli-w", "tomli")
FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # zip's earliest date; SOURCE_DATE_EPOCH below is the same instant
_SOURCE_DATE_EPOCH = "315532800"
_SKIP_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


@dataclass(frozen=True)
class Wheel:
    file: str  # the wheel's file name under wheels/
    name: str  # distribution name
    version: str
    sha256: str
    packages: tuple[str, ...]  # its top-level import names (hidden from the stand-in image by --run-local)

    def as_dict(self) -> dict:
        return {"file": self.file, "name": self.name, "version": self.version, "sha256": self.sha256,
                "packages": list(self.packages)}


def build_wheels(dest: Path) -> list[Wheel]:
    """comp's wheel and those of `BUNDLED` into `dest` (emptied first); returns them, comp first."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    wheels = [comp_wheel(dest)]
    wheels += [repack(name, dest) for name in BUNDLED]
    return wheels


def comp_wheel(dest: Path) -> Wheel:
    """comp's own wheel: built from the source tree when comp runs from a checkout, else repacked as installed."""
    dist = metadata.distribution("comp")
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "comp" / "__init__.py").is_file():
        return _pip_wheel(root, dest, dist.version)
    return repack("comp", dest)


def _pip_wheel(root: Path, dest: Path, version: str) -> Wheel:
    # A copy of the tree: setuptools writes build/ and *.egg-info beside the sources, which must not appear in a
    # checkout others are working in.
    with tempfile.TemporaryDirectory(prefix="comp-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (root / name).is_file():
                shutil.copy2(root / name, src / name)
        shutil.copytree(root / "comp", src / "comp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        out = Path(tmp) / "out"
        env = {**os.environ, "SOURCE_DATE_EPOCH": _SOURCE_DATE_EPOCH}
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
             "-w", str(out), str(src)],
            capture_output=True, text=True, env=env,
        )
        built = sorted(out.glob("comp-*.whl")) if out.is_dir() else []
        if result.returncode != 0 or len(built) != 1:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise CompError(
                f"building comp's wheel failed (pip wheel, exit {result.returncode}): {' | '.join(tail)}; "
                "the bundle needs setuptools in this environment (`pip install setuptools`)"
            )
        target = dest / built[0].name
        _normalise(built[0], target)
    return Wheel(target.name, "comp", version, sha256_file(target), ("comp",))


def _normalise(source: Path, target: Path) -> None:
    """Rewrite a wheel with sorted entries and a fixed date, so the same sources give the same bytes."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in sorted(zin.namelist()):
            _add(zout, name, zin.read(name))


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def repack(name: str, dest: Path) -> Wheel:
    """A wheel of the installed distribution `name`, rebuilt from the files its RECORD lists (pure Python only)."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise CompError(f"{name} is not installed here, so its wheel cannot be bundled; `pip install {name}`") from None
    files = [f for f in dist.files or [] if not _skipped(f)]
    info_dir = next((str(f).split("/")[0] for f in files if str(f).split("/")[0].endswith(".dist-info")), "")
    wheel_meta = dist.read_text("WHEEL") or ""
    # A mypyc build (tomli, black...) ships each module twice, compiled and as its .py source: without the compiled
    # files it is the same pure-Python package, installable on any Python the kernel meets.
    compiled = _mypyc_compiled(files)
    if compiled:
        files = [f for f in files if f not in compiled]
        wheel_meta = "Wheel-Version: 1.0\nGenerator: comp (mypyc build repacked as its .py sources)\n" \
                     "Root-Is-Purelib: true\nTag: py3-none-any\n"
    if not info_dir or "Root-Is-Purelib: true" not in wheel_meta:
        raise CompError(f"{name} {dist.version} is not an installed pure-Python wheel; it cannot be repacked for "
                        "the bundle")
    binary = [str(f) for f in files if str(f).endswith((".so", ".pyd", ".dylib"))]
    if binary:
        raise CompError(f"{name} has compiled files ({binary[0]}); only pure-Python packages are bundled")
    record_name = f"{info_dir}/RECORD"
    target = dest / f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}-py3-none-any.whl"
    rows = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in sorted(files, key=str):
            data = Path(entry.locate()).read_bytes()
            if compiled and str(entry) == f"{info_dir}/WHEEL":
                data = wheel_meta.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            _add(archive, str(entry), data)
            rows.append((str(entry), f"sha256={digest}", str(len(data))))
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([*rows, (record_name, "", "")])
        _add(archive, record_name, out.getvalue().encode())
    return Wheel(target.name, dist.metadata["Name"], dist.version, sha256_file(target), _top_level(dist, files))


def _mypyc_compiled(files: list) -> set:
    """The compiled files of a mypyc build, when every one of them is either mypyc's runtime (`<hash>__mypyc.*`) or
    a module whose .py source sits beside it; empty otherwise (a genuinely compiled package)."""
    names = {str(f) for f in files}
    compiled = {f for f in files if str(f).endswith((".so", ".pyd"))}
    if not compiled:
        return set()
    for f in compiled:
        stem = str(f).split(".")[0]
        if not (stem.endswith("__mypyc") or f"{stem}.py" in names):
            return set()
    return compiled if any(str(f).split(".")[0].endswith("__mypyc") for f in compiled) else set()


def _skipped(entry: metadata.PackagePath) -> bool:
    parts = entry.parts
    if parts[0] == ".." or "__pycache__" in parts or entry.suffix == ".pyc":  # scripts in bin/, byte code
        return True
    return parts[0].endswith(".dist-info") and parts[-1] in _SKIP_DIST_INFO


def _top_level(dist: metadata.Distribution, files: list) -> tuple[str, ...]:
    names = (dist.read_text("top_level.txt") or "").split()
    if not names:
        names = sorted({f.parts[0].removesuffix(".py") for f in files if not f.parts[0].endswith(".dist-info")})
    return tuple(names)
