"""A competition's files as items: which images are labelled training data, which are test data, with what label.

`train_items` and `test_items` are the contract every later stage reads (see DEVELOPERS.md); `comp init`
(comp/init.py) decides the fields of `comp.toml` they follow. Nothing here decodes pixels and nothing checks that
an image file exists: a labelled id whose file is missing keeps its row with the expected path, and `comp verify`
reports it, so a user sees every problem of the data in one list instead of one exception at a time.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from comp.config import Competition, Workspace
from comp.data import IMAGE_EXTENSIONS
from comp.errors import CompError

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

    def junk(self, folder: Path) -> list[Path]:
        """The files directly in `folder` that are not images (README, .DS_Store, .gif placeholders...)."""
        self.file_keys(folder)
        return self._junk[folder]

    def class_dirs(self, folder: Path) -> list[Path]:
        """Sub-folders of `folder` holding images (class folders), when there are at least two of them."""
        if folder not in self._classes:
            with_images = [d for d in _subdirs(folder) if any(is_image_file(f) for f in d.rglob("*") if f.is_file())]
            self._classes[folder] = with_images if len(with_images) >= 2 else []
        return self._classes[folder]


def _subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted; scandir's cached entry types avoid a stat per file in 100k-file folders."""
    names = [e.name for e in os.scandir(folder)
             if e.is_dir() and not e.name.startswith(".") and e.name not in SKIP_DIRS]
    return [folder / name for name in sorted(names)]


def read_table(path: Path, header: bool = True) -> pd.DataFrame:
    """A CSV as text columns (ids like "007" and labels like "3" stay strings); headerless files get id, label, ..."""
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, header=0 if header else None, skipinitialspace=True
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


def file_for(folder: Path, image_id: str, image_ext: str) -> Path:
    """The file of `image_id`: the id itself, plus `image_ext` unless the id already ends with it."""
    if image_ext and not image_id.lower().endswith(image_ext.lower()):
        return folder / f"{image_id}{image_ext}"
    return folder / image_id


def _require_columns(frame: pd.DataFrame, columns: list[str], path: Path, keys: str) -> None:
    missing = [c for c in columns if c and c not in frame.columns]
    if missing:
        raise CompError(
            f"{path}: no column {', '.join(repr(c) for c in missing)} (it has {', '.join(map(repr, frame.columns))}); "
            f"set {keys} in comp.toml to the right column, or re-run `comp init DATA_DIR --force`"
        )


def _check_labels(labels: pd.Series, comp: Competition, where: str) -> None:
    unknown = sorted(set(labels) - set(comp.classes))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise CompError(
            f"{where}: {len(unknown)} label(s) not in comp.toml's classes: {shown}; the data changed since "
            "`comp init` - run `comp init DATA_DIR --force` (or add them to classes and submission_labels)"
        )


def train_items(comp: Competition, ws: Workspace) -> pd.DataFrame:
    """One row per labelled training image: columns id, path (absolute), label (a class of `comp.classes`) and
    group when `comp.group_column` is set.

    csv layout: `id` is the labels-CSV id as written; folders layout: `id` is the image path relative to
    `data_dir` (e.g. `train/ants/0013035.jpg`), unique even when every class folder reuses the same file names.
    Rows whose image file is missing are kept (with the expected path) for `comp verify` to report.
    """
    if comp.layout == "folders":
        return _folder_train_items(comp, ws)
    return _csv_train_items(comp, ws)


def _csv_train_items(comp: Competition, ws: Workspace) -> pd.DataFrame:
    if not comp.labels_csv:
        raise CompError("comp.toml: layout is csv but labels_csv is empty; set it to the labels file")
    if len(comp.train_dirs) != 1:
        raise CompError(
            f"comp.toml: the csv layout needs exactly one image folder in train_dirs, got {comp.train_dirs}"
        )
    path = ws.path(comp.labels_csv)
    frame = read_table(path, comp.labels_header)
    id_col = comp.train_id_column if comp.labels_header else "id"
    label_col = comp.train_label_column if comp.labels_header else "label"
    _require_columns(frame, [id_col, label_col], path, "train_id_column/train_label_column")
    _require_columns(frame, [comp.group_column], path, "group_column")
    ids = frame[id_col].str.strip()
    labels = frame[label_col].str.strip()
    _check_labels(labels, comp, str(path))
    folder = ws.path(comp.train_dirs[0])
    out = pd.DataFrame({
        "id": ids.astype(str).to_numpy(),
        "path": [str(file_for(folder, i, comp.image_ext)) for i in ids],
        "label": labels.astype(str).to_numpy(),
    })
    if comp.group_column:
        out["group"] = frame[comp.group_column].astype(str).to_numpy()
    return out


def _folder_train_items(comp: Competition, ws: Workspace) -> pd.DataFrame:
    if not comp.train_dirs:
        raise CompError("comp.toml: layout is folders but train_dirs is empty; list the class-folder roots")
    data_dir = ws.path(comp.data_dir)
    # Class folders may sit at the top of data_dir beside test/ and val/ (alaska2: Cover/, JMiPOD/, Test/): those
    # are other roots, not classes.
    not_classes = {ws.path(d).resolve() for d in [*comp.train_dirs, comp.test_dir] if d}
    rows = []
    for rel in comp.train_dirs:
        root = ws.path(rel)
        if not root.is_dir():
            raise CompError(f"{root} (train_dirs in comp.toml) is not a folder; fix the path or run `comp init`")
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                            and p.resolve() not in not_classes)
        _check_labels(pd.Series([p.name for p in class_dirs], dtype=object), comp, str(root))
        for class_dir in class_dirs:
            images, _ = scan_images(class_dir)
            rows += [(_relative_id(p, data_dir), str(p), class_dir.name) for p in images]
    return pd.DataFrame(rows, columns=["id", "path", "label"])


def _relative_id(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:  # a train_dir outside data_dir: fall back to the absolute path, still unique
        return path.as_posix()


def test_items(comp: Competition, ws: Workspace) -> pd.DataFrame:
    """One row per test image: columns id (exactly as the submission writes it) and path (absolute), in the
    sample submission's row order. Empty when the competition has no test images (no submission possible)."""
    if not comp.sample_submission:
        if comp.test_dir:
            raise CompError("comp.toml: test_dir is set but sample_submission is empty; run `comp init --force`")
        return pd.DataFrame({"id": pd.Series([], dtype=str), "path": pd.Series([], dtype=str)})
    if not comp.test_dir:
        raise CompError(
            "comp.toml: sample_submission is set but test_dir is empty; set test_dir to the folder of test images"
        )
    path = ws.path(comp.sample_submission)
    sample = read_table(path)
    _require_columns(sample, [comp.id_column], path, "id_column")
    ids = sample[comp.id_column].str.strip()
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise CompError(
            f"{path}: id {duplicated.iloc[0]!r} appears more than once (row {duplicated.index[0] + 2}); "
            "submissions are matched by id, so each test id must be unique - check id_column in comp.toml"
        )
    folder = ws.path(comp.test_dir)
    # Sample ids usually lack the extension exactly when training ids do; `file_for` adds image_ext only when the
    # id does not already end with it, so one image_ext serves both files.
    ext = comp.image_ext
    return pd.DataFrame({
        "id": ids.astype(str).to_numpy(),
        "path": [str(file_for(folder, i, ext)) for i in ids],
    })


test_items.__test__ = False  # a library function, not a pytest test, even when a test module imports it


# ---------------------------------------------------------------------------------------------------------------
# Classes and the submission's format, read from the sample and the training labels


def sort_classes(names: set[str] | list[str]) -> list[str]:
    """Class names in logits-column order: numerically when every name is a number ("2" before "10"), else as text."""
    names = sorted(set(names))
    try:
        return sorted(names, key=float)
    except ValueError:
        return names


def normalise_label(label: str) -> str:
    """The spelling-insensitive form used to pair class names across files: `golden_retriever` == `Golden Retriever`."""
    return " ".join(label.replace("_", " ").lower().split())


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _is_integer(value: str) -> bool:
    return _is_number(value) and float(value).is_integer()


@dataclass(frozen=True)
class SubmissionFormat:
    """What the sample submission says about how predictions are written (the matching comp.toml fields)."""

    kind: str
    label_columns: list[str]
    submission_labels: list[str]
    positive_class: str = ""
    top_k: int = 5
    notes: tuple[str, ...] = ()


def detect_format(sample: pd.DataFrame, id_column: str, classes: list[str], kind: str = "",
                  where: str = "sample submission") -> SubmissionFormat:
    """Decide the submission kind and how each class is spelled in it.

    The sample's values are often placeholders (every row the same class, or 0), so the header speaks first (several
    prediction columns -> class_probs; a column named after a class of a 2-class problem -> binary), the values
    second (space-separated lists -> topk, fractions -> binary, class names -> class_name, integers -> class_id),
    the training labels third. `kind` forces the kind; the spelling is still read from the sample.
    """
    # Trailing commas give pandas "Unnamed: n" columns with nothing in them; they are not predictions.
    label_columns = [c for c in sample.columns
                     if c != id_column and not (c.startswith("Unnamed:") and not sample[c].str.strip().any())]
    if not label_columns:
        raise CompError(f"{where}: no prediction column besides the id column {id_column!r} "
                        f"(columns: {', '.join(sample.columns)}); pass --id-column if the id is another column")
    values = [v.strip() for c in label_columns for v in sample[c] if v.strip()]
    notes: list[str] = []
    forced = bool(kind)
    if not kind:
        kind, note = _guess_kind(label_columns, values, classes, where)
        if note:
            notes.append(note)
    if kind == "class_probs":
        return SubmissionFormat(kind, label_columns, _pair_columns(label_columns, classes, where), notes=tuple(notes))
    if len(label_columns) != 1:
        raise CompError(f"{where}: kind {kind} needs one prediction column, the sample has {len(label_columns)} "
                        f"({', '.join(label_columns)}); use --kind class_probs or fix --id-column")
    column = label_columns[0]
    if kind == "binary":
        if len(classes) != 2:
            raise CompError(f"{where}: kind binary needs exactly 2 classes, the training labels have {len(classes)}; "
                            "pass --kind with another kind")
        named = [c for c in classes if normalise_label(c) == normalise_label(column)]
        positive = named[0] if named else classes[1]
        notes.append(f"binary: column {column!r} holds the probability of class {positive!r}")
        return SubmissionFormat(kind, label_columns, list(classes), positive_class=positive, notes=tuple(notes))
    if kind == "class_id":
        if all(_is_integer(c) for c in classes):
            return SubmissionFormat(kind, label_columns, list(classes), notes=tuple(notes))
        notes.append("class_id with named classes: class i (in sorted order) is written as the integer i")
        return SubmissionFormat(kind, label_columns, [str(i) for i in range(len(classes))], notes=tuple(notes))
    tokens = [t for v in values for t in v.split()] if kind == "topk" else values
    top_k = max((len(v.split()) for v in values), default=0) if kind == "topk" else 5
    # A forced kind says the sample's values are placeholders: only values that are classes teach a spelling.
    spelled = _spell_like_sample(tokens, classes, where, strict=not forced)
    return SubmissionFormat(kind, label_columns, spelled, top_k=top_k or 5,
                            notes=tuple(notes))


def _guess_kind(label_columns: list[str], values: list[str], classes: list[str], where: str) -> tuple[str, str]:
    if len(label_columns) > 1:
        return "class_probs", ""
    column = label_columns[0]
    known = {normalise_label(c) for c in classes}
    if len(classes) == 2 and normalise_label(column) in known:
        return "binary", ""
    # "new_whale w_1287fbc" is a top-k list; "golden retriever" is one class spelled with a space.
    if any(len(v.split()) > 1 and normalise_label(v) not in known for v in values):
        return "topk", ""
    numeric_classes = all(_is_integer(c) for c in classes)
    if values and all(_is_number(v) for v in values):
        if len(classes) == 2:
            # A 2-class sample holding numbers is a probability in every Kaggle sample seen (cactus, histopathology,
            # invasive species, dogs vs cats), even when the placeholder is an integer 0.
            return "binary", "a 2-class sample with numbers: predicting a probability (--kind class_id to write ids)"
        if not all(_is_integer(v) for v in values):
            raise CompError(f"{where}: column {column!r} holds fractions (a probability) but the training labels "
                            f"have {len(classes)} classes, not 2; pass --kind")
        if numeric_classes:
            return "class_id", ""
        raise CompError(f"{where}: column {column!r} holds integers but the training labels are names "
                        f"({', '.join(classes[:5])}...); comp cannot tell which integer is which class. Pass "
                        "--kind class_id (class i in sorted order -> i) or --kind class_name")
    if values and not {normalise_label(v) for v in values} <= known:
        unknown = sorted({v for v in values if normalise_label(v) not in known})
        raise CompError(f"{where}: column {column!r} holds value(s) that are not training labels: "
                        f"{', '.join(map(repr, unknown[:5]))}; training labels are {', '.join(classes[:10])}. "
                        "Pass --label-column for the right training column, or --kind")
    return ("class_id" if numeric_classes else "class_name"), ""


def _pair_columns(columns: list[str], classes: list[str], where: str) -> list[str]:
    by_norm = {normalise_label(c): c for c in columns}
    paired = [by_norm.get(normalise_label(c)) for c in classes]
    unmatched_classes = [c for c, p in zip(classes, paired, strict=True) if p is None]
    unmatched_columns = sorted(set(columns) - set(p for p in paired if p))
    if unmatched_classes or unmatched_columns:
        raise CompError(
            f"{where}: the probability columns do not pair with the training labels (ignoring case and _ vs space): "
            f"classes without a column: {', '.join(unmatched_classes[:10]) or '-'}; columns without a class: "
            f"{', '.join(unmatched_columns[:10]) or '-'}. Check --label-column (the training labels) or --sample"
        )
    return [p for p in paired if p]


def _spell_like_sample(tokens: list[str], classes: list[str], where: str, strict: bool = True) -> list[str]:
    """Each class as the sample spells it (`golden retriever` for folder `golden_retriever`), else as trained."""
    spelled = {normalise_label(t): t for t in tokens}
    known = {normalise_label(c) for c in classes}
    unknown = sorted({t for t in tokens if normalise_label(t) not in known})
    if unknown and strict:
        raise CompError(f"{where}: label(s) {', '.join(map(repr, unknown[:5]))} in the sample are not training "
                        f"labels ({', '.join(classes[:10])}); pass --label-column or --kind")
    return [spelled.get(normalise_label(c), c) for c in classes]
