"""A competition folder as files: which are images, folder indexes, label tables, class order and spelling.

Nothing here decodes pixels; `comp verify` does.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pandas as pd

from comp.core.errors import CompError
from comp.kinds.values import normalise_label  # noqa: F401 (how every stage compares spellings)
from comp.vision.images import IMAGE_EXTENSIONS

# GIF is left out on purpose: in the competitions seen so far a .gif among JPEGs is a placeholder ("image not
# found", hymenoptera's train/ants/imageNotFound.gif), and torchvision's ImageFolder skips it the same way.
TRAIN_EXTENSIONS = tuple(ext for ext in IMAGE_EXTENSIONS if ext != ".gif")


SKIP_DIRS = ("__MACOSX",)  # macOS zip debris: AppleDouble copies of every image


def is_image_file(path: Path) -> bool:
    """An image the harness uses: a known extension (not .gif), and not a hidden/AppleDouble file like `._x.jpg`."""
    return is_image_name(path.name)


def is_image_name(name: str) -> bool:
    """`is_image_file` on a bare file name (no Path objects: folders hold 100k+ files)."""
    return os.path.splitext(name)[1].lower() in TRAIN_EXTENSIONS and not name.startswith(".")


def scan_images(folder: Path, recursive: bool = True) -> tuple[list[Path], list[Path]]:
    """(images, skipped) under `folder`, both sorted; `skipped` is every other file (README, .DS_Store, .gif...)."""
    images: list[Path] = []
    skipped: list[Path] = []
    if recursive:
        walker = os.walk(folder, followlinks=True)
    else:
        walker = [(str(folder), [], [e.name for e in os.scandir(folder) if not e.is_dir()])]
    for dirpath, dirnames, filenames in walker:
        dirnames.sort()
        for name in filenames:
            (images if is_image_name(name) else skipped).append(Path(dirpath, name))
    return sorted(images, key=str), sorted(skipped, key=str)  # str keys: sorting 100k Paths directly takes seconds


class FolderIndex:
    """The folders of a competition down to `depth`, each listed at most once: competitions hold 100k+ files."""

    def __init__(self, root: Path, depth: int, exclude: set[Path] | None = None) -> None:
        self.root = root
        self._keys: dict[Path, tuple[set[str], Counter]] = {}
        self._junk: dict[Path, list[Path]] = {}
        self._classes: dict[Path, list[Path]] = {}
        self._tree: dict[Path, tuple[set[str], Counter]] = {}
        self.dirs = [root]
        frontier = [root]
        for _ in range(depth):
            frontier = [c for d in frontier for c in _subdirs(d) if c not in (exclude or set())]
            self.dirs += frontier
        self.csvs = sorted(p for d in self.dirs for p in d.glob("*.csv") if p.is_file())

    def file_keys(self, folder: Path) -> tuple[set[str], Counter]:
        """Names and stems of the images directly in `folder` (what an id may be), and how common each extension is.
        The returned objects are the cache: a caller may extend them (ids that are paths from the root)."""
        if folder not in self._keys:
            keys: set[str] = set()
            exts: Counter = Counter()
            junk = []
            for entry in os.scandir(folder):
                if not entry.is_file():
                    continue
                if is_image_name(entry.name):
                    stem, ext = os.path.splitext(entry.name)
                    keys.update((entry.name, stem))
                    exts[ext] += 1
                else:
                    junk.append(Path(entry.path))
            self._keys[folder] = (keys, exts)
            self._junk[folder] = sorted(junk)
        return self._keys[folder]

    def tree_keys(self, folder: Path) -> tuple[set[str], Counter]:
        """`file_keys` over every image below `folder`, sub-folders included (ids of images nested in non-class
        folders: hotel-id's train_images/<chain>/<image>.jpg)."""
        if folder not in self._tree:
            keys: set[str] = set()
            exts: Counter = Counter()
            for _, _, names in os.walk(folder, followlinks=True):  # names only: no Path per file in 100k-file trees
                for name in names:
                    if is_image_name(name):
                        stem, ext = os.path.splitext(name)
                        keys.update((name, stem))
                        exts[ext] += 1
            self._tree[folder] = (keys, exts)
        return self._tree[folder]

    def image_dirs(self, folder: Path) -> set[tuple[str, ...]]:
        """The folders below `folder` that hold images directly, as path parts relative to it (() is `folder`)."""
        found = set()
        for dirpath, dirnames, names in os.walk(folder, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS]
            if any(is_image_name(n) for n in names):
                found.add(Path(dirpath).relative_to(folder).parts)
        return found

    def junk(self, folder: Path) -> list[Path]:
        """The files directly in `folder` that are not images (README, .DS_Store, .gif placeholders...)."""
        self.file_keys(folder)
        return self._junk[folder]

    def class_dirs(self, folder: Path) -> list[Path]:
        """Sub-folders of `folder` holding images (class folders), when there are at least two of them."""
        if folder not in self._classes:
            with_images = subdirs_with_images(folder)
            self._classes[folder] = with_images if len(with_images) >= 2 else []
        return self._classes[folder]


def subdirs_with_images(folder: Path) -> list[Path]:
    """Visible sub-folders of `folder` holding an image at any depth below them, sorted."""
    return [d for d in _subdirs(folder)
            if any(is_image_name(n) for _, _, names in os.walk(d, followlinks=True) for n in names)]


def _subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted; scandir's cached entry types avoid a stat per file in 100k-file folders."""
    names = [e.name for e in os.scandir(folder)
             if e.is_dir() and not e.name.startswith(".") and e.name not in SKIP_DIRS]
    return [folder / name for name in sorted(names)]


def read_table(path: Path, header: bool = True, nrows: int | None = None) -> pd.DataFrame:
    """A CSV as text columns (ids like "007" and labels like "3" stay strings); headerless files get id, label, ...
    `nrows` reads only the first rows (a glance at a CSV comp may not use)."""
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, header=0 if header else None, skipinitialspace=True, nrows=nrows
        )
    except FileNotFoundError as err:
        raise CompError(f"{path} not found; fix the path in comp.toml or run `comp init DATA_DIR --force`") from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CompError(f"{path} is not a readable CSV ({err}); check the file or re-download it") from err
    except OSError as err:
        raise CompError(f"cannot read {path}: {err.strerror or err}") from err
    if not header:
        names = ["id", "label"] + [f"column{i}" for i in range(3, frame.shape[1] + 1)]
        frame.columns = names[: frame.shape[1]]
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def naming_share(values: pd.Series, keys: set[str]) -> float:
    """The share of non-empty `values` that name an image file (`keys`: file names and stems)."""
    values = values.str.strip()
    values = values[values != ""]
    return float(values.isin(keys).mean()) if len(values) else 0.0


def file_for(folder: Path, image_id: str, image_ext: str) -> Path:
    """The file of `image_id`: the id itself, plus `image_ext` unless the id already ends with it."""
    if image_ext and not image_id.lower().endswith(image_ext.lower()):
        return folder / f"{image_id}{image_ext}"
    return folder / image_id


def sort_classes(names: set[str] | list[str]) -> list[str]:
    """Class names in logits-column order: numerically when every name is a number ("2" before "10"), else as text."""
    names = sorted(set(names))
    try:
        return sorted(names, key=float)
    except ValueError:
        return names

