"""Discovery for `comp init`: from a competition folder to the fields of comp.toml, writing nothing.

It answers fastai's DataBlock questions once, from the files: where the labelled images are (class folders, or a
labels CSV + a flat folder), where the test images are, what the sample submission looks like. Whatever it cannot
decide (two labels CSVs, two plausible id columns, labels that do not match the sample) is refused with a message
naming what it saw and the flag that settles it.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from comp.core.config import KINDS, Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.kinds import BINARY, detect_format, detect_multilabel, get, without_sample
from comp.setup import groups
from comp.setup.scan import (
    FolderIndex,
    naming_share,
    normalise_label,
    read_table,
    scan_images,
    sort_classes,
    subdirs_with_images,
)
from comp.vision.images import IMAGE_EXTENSIONS


@dataclass
class InitOptions:
    """The `comp init` flags; empty strings mean "detect it"."""

    name: str = ""
    platform: str = "none"
    kind: str = ""
    metric: str = ""
    metric_source: str = ""  # where `metric` came from when not from --metric (Kaggle's competition record)
    id_column: str = ""  # the id column of the sample and of the labels CSV
    label_column: str = ""  # the label column of the labels CSV; "a,b,c" names one-hot label columns
    labels_csv: str = ""
    sample: str = ""
    test_dir: str = ""
    group_column: str = ""
    groups: str = ""  # a second CSV holding group_column (StateFarm: driver_imgs_list.csv)
    label_pattern: str = ""  # regex with a group `label` reading the class from a training file name
    class_depth: int = 0  # folders layout: the folder level that names the class; 0: detect
    positive: list[str] = field(default_factory=list)  # binary: the training labels that count as positive
    negative: list[str] = field(default_factory=list)  # binary: the training labels that count as negative
    n_folds: int = 5
    seed: int = 42
    force: bool = False


@dataclass
class Findings:
    """What discovery decided (`competition`) and saw, for the summary; `generated` are files init must write."""

    competition: Competition
    n_train: int = 0
    n_test: int = 0
    skipped: list[str] = field(default_factory=list)
    unused_csvs: list[str] = field(default_factory=list)  # CSVs in the data that no comp.toml field reads
    class_counts: dict[str, int] = field(default_factory=dict)  # training images per class (init counts them)
    n_groups: int = 0  # distinct groups when group_column is set
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    copied_recipes: list[str] = field(default_factory=list)
    generated: dict[str, pd.DataFrame] = field(default_factory=dict)  # workspace-relative path -> CSV content
    backup: str = ""  # init --force: where the replaced comp.toml was kept ("" when none was replaced)
    diff: list[str] = field(default_factory=list)  # init --force: unified diff, replaced comp.toml -> new one


SEARCH_DEPTH = 2  # Kaggle zips often unpack one level deeper (data/train/train/*.jpg)
# Labels only in file names (dogs-vs-cats: cat.123.jpg; Oxford pets: Abyssinian_12.jpg): the class, a separator,
# a number, the extension. Each is tried on the training folder; it must fit nearly every file with few classes.
NAME_PATTERNS = (r"(?P<label>.+)\.\d+\.[^.]+", r"(?P<label>.+)_\d+\.[^.]+", r"(?P<label>.+)-\d+\.[^.]+")
NAME_MATCH_SHARE = 0.95  # files a name pattern must fit (all but one in a small folder); the rest (a stray
# README.jpg) are left out, and listed
GENERIC_PREFIXES = ("img", "image", "images", "dsc", "dscn", "dscf", "pxl", "photo", "pic", "frame", "file", "sample",
                    "train", "test", "val", "scan", "screenshot")
FILES_PER_CLASS = 3  # a pattern whose "classes" hold fewer files each on average is reading ids, not labels
LABEL_COLUMN_NAMES = ("label", "labels", "class", "category", "target", "y", "breed", "species", "diagnosis")
VAL_NAMES = ("val", "valid", "validation", "dev")


def discover(data: Path, ws: Workspace, options: InitOptions) -> Findings:
    """Decide every comp.toml field for the competition in `data` (an existing folder); raise CompError if unsure.
    Nothing is written: `Findings.generated` holds the files `comp init` writes on the competition's behalf."""
    if options.kind and options.kind not in KINDS:
        raise CompError(f"--kind {options.kind!r} is not one of {', '.join(KINDS)}")
    return _Discovery(data, ws, options).run()


def binary_groups(classes: list[str], positive: list[str],
                  negative: list[str]) -> tuple[list[str], dict[str, str], str]:
    """--positive/--negative -> (classes [negative, positive], class_map, the positive class).

    Either side may be left out (it is then every other label). A side of one label keeps its name; a side of
    several is named by its labels joined with '+' ("JMiPOD+JUNIWARD+UERD"), so comp.toml shows what it holds."""
    unknown = [x for x in [*positive, *negative] if x not in classes]
    if unknown:
        raise CompError(f"--positive/--negative: {', '.join(map(repr, unknown))} is not a training label "
                        f"({', '.join(classes)}); labels are case-sensitive")
    both = sorted(set(positive) & set(negative))
    if both:
        raise CompError(f"--positive/--negative: {', '.join(map(repr, both))} is on both sides; put each label on one")
    pos = [c for c in classes if c in positive] if positive else [c for c in classes if c not in negative]
    neg = [c for c in classes if c in negative] if negative else [c for c in classes if c not in positive]
    left = [c for c in classes if c not in pos and c not in neg]
    if left:
        raise CompError(f"--positive/--negative: {', '.join(map(repr, left))} is on neither side; list it, or give "
                        "only one of --positive/--negative (the other side is then every other label)")
    if not pos or not neg:
        raise CompError("--positive/--negative leave one side empty; a binary task needs a label on each side")
    names = ["+".join(side) for side in (neg, pos)]
    class_map = {c: names[side] for side, group in enumerate((neg, pos)) for c in group if c != names[side]}
    return names, class_map, names[1]


def relative(path: Path, ws: Workspace) -> str:
    """A path as comp.toml stores it: relative to the workspace (with .. when the data lives elsewhere)."""
    return Path(os.path.relpath(path, ws.root)).as_posix()


def _listing(paths: list[Path], base: Path, limit: int = 8) -> str:
    names = [p.relative_to(base).as_posix() if p.is_relative_to(base) else str(p) for p in paths[:limit]]
    return ", ".join(names) + (f" (+{len(paths) - limit} more)" if len(paths) > limit else "")


def _named(folder: Path, *words: str) -> bool:
    """`train_images`, `Train`, `test1`, `training` are named train/test; `latest` is not named test."""
    name = folder.name.lower()
    return any(name.startswith(w) or w in re.split(r"[^a-z]+", name) for w in words)


def _has_extension(value: str) -> bool:
    return os.path.splitext(value)[1].lower() in IMAGE_EXTENSIONS


class _Discovery:
    """One pass over a competition folder, asking the questions in order; `run()` returns the Findings."""

    def __init__(self, data: Path, ws: Workspace, options: InitOptions) -> None:
        self.data, self.ws, self.opt = data, ws, options
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.skipped: list[Path] = []
        self.generated: dict[str, pd.DataFrame] = {}
        self.multilabel = False  # the training labels are sets of tags (a multi-label competition)
        # When DATA_DIR is the workspace itself, comp's own folders (submissions/*.csv...) are not the competition's.
        own = {ws.folds_dir, ws.models_dir, ws.submissions_dir, ws.reports_dir}
        self.index = FolderIndex(data, SEARCH_DEPTH, exclude=own)

    def _given(self, value: str, flag: str, want_dir: bool) -> Path:
        for base in (Path.cwd(), self.data):
            path = (base / value).resolve()
            if path.is_dir() if want_dir else path.is_file():
                return path
        raise CompError(f"{flag} {value!r}: no such {'folder' if want_dir else 'file'} (looked in {Path.cwd()} "
                        f"and {self.data})")

    # -- the questions, in order
    def run(self) -> Findings:
        sample_path = self._find_sample()
        fields = self._find_train()
        classes = fields["classes"]
        if len(classes) < 2:
            raise CompError(f"the training labels hold {len(classes)} class(es) ({', '.join(classes)}); a classifier "
                            "needs at least 2 - check --label-column / --labels-csv")
        positive = ""
        if (self.opt.positive or self.opt.negative) and self.opt.kind and not get(self.opt.kind).takes_positive:
            raise CompError(f"--positive/--negative set up a binary submission; --kind {self.opt.kind} contradicts it")
        if self.opt.positive or self.opt.negative:
            fields["classes"], class_map, positive = binary_groups(classes, self.opt.positive, self.opt.negative)
            fields["class_map"] = class_map or None
            classes = fields["classes"]
            if fields["class_map"]:
                self.notes.append(f"binary: {classes[1]!r} (positive) vs {classes[0]!r}; training labels grouped "
                                  "by class_map in comp.toml")
        fields.update(self._groups(fields))
        sample = read_table(sample_path) if sample_path else None
        test_dir, answers = self._find_test(fields["train_dirs"], sample)
        if sample is None and test_dir is not None:
            sample_path, sample, answers = self._generate_sample(test_dir, answers, fields)
        elif answers is not None:
            self.warnings.append(f"{relative(test_dir, self.ws)} has class folders but a sample is shipped; "
                                 "its labels are not used for local scoring")
            answers = None
        fields.update(self._submission_fields(sample, sample_path, test_dir, classes, positive))
        if test_dir is not None and not fields["id_has_extension"] and not fields.get("image_ext"):
            # Test ids without extension while training ids carry one (or class folders): find it from the files.
            exts = self.index.file_keys(test_dir)[1] or Counter(p.suffix for p in scan_images(test_dir)[0])
            fields["image_ext"] = exts.most_common(1)[0][0] if exts else ""
        if answers is not None:
            rel = relative(self.ws.generated_dir / "test_answers.csv", self.ws)
            self.generated[rel] = answers
            fields["test_answers"] = rel
            self.notes.append(f"the test folder has class folders: their labels go to {rel} for local scoring")
        if test_dir is None:
            self.warnings.append(f"no test images found in {self.data}: you can train and cross-validate, but "
                                 "not build a submission (pass --test-dir if they are elsewhere)")
        comp = Competition(
            name=self.opt.name or self.data.name,
            platform=self.opt.platform,
            data_dir=relative(self.data, self.ws),
            test_dir=relative(test_dir, self.ws) if test_dir else "",
            metric=self.opt.metric or get(fields["kind"]).metric,
            n_folds=self.opt.n_folds,
            seed=self.opt.seed,
            **fields,
        )
        if self.opt.id_column and self.opt.id_column not in (comp.id_column, comp.train_id_column,
                                                             comp.groups_id_column):
            raise CompError(f"--id-column {self.opt.id_column!r} is not a column of the sample submission, the "
                            "labels CSV or the groups CSV; check its spelling (it is case-sensitive)")

        return Findings(comp, skipped=[_listing([p], self.data) for p in sorted(set(self.skipped))],
                        unused_csvs=self._unused_csvs(comp), notes=self.notes, warnings=self.warnings,
                        generated=self.generated)

    # -- groups (rows that must share a fold)
    def _groups(self, fields: dict) -> dict:
        """groups_csv, groups_id_column and group_column when the groups come from a second CSV: --groups FILE, or
        the one CSV holding --group-column when the labels CSV does not (StateFarm: driver_imgs_list.csv)."""
        column = self.opt.group_column
        if fields.get("group_column") or not (self.opt.groups or column):
            return {}
        if self.opt.groups:
            path = self._given(self.opt.groups, "--groups", want_dir=False)
            frame = read_table(path)
            if not column:
                raise CompError(f"--groups {path.name} needs --group-column: the column whose rows share a fold "
                                f"(columns: {', '.join(frame.columns)})")
        else:
            labels = self.ws.path(fields["labels_csv"]).resolve() if fields.get("labels_csv") else None
            having = [p for p in self.index.csvs if p != labels and column in groups.columns_of(p)]
            if len(having) != 1:
                where = "the labels CSV" if labels else f"this {fields['layout']} layout (it has no labels CSV)"
                found = f"several CSVs have it ({_listing(having, self.data)})" if having else "no CSV here has it"
                raise CompError(f"--group-column {column!r}: not a column of {where}, and {found}; pass --groups FILE "
                                "naming the CSV that holds it")
            path = having[0]
            frame = read_table(path)
        id_col = groups.groups_id_column(path, frame, column, self._train_keys(fields["train_dirs"]),
                                         self.opt.id_column)
        self.notes.append(f"groups: {column!r} of {relative(path, self.ws)}, matched to the images by {id_col!r}")
        return {"group_column": column, "groups_csv": relative(path, self.ws), "groups_id_column": id_col}

    def _train_keys(self, train_dirs: list[str]) -> set[str]:
        """File names and stems of every training image (what a second CSV may name them by)."""
        keys: set[str] = set()
        for rel in train_dirs:
            keys |= self.index.tree_keys(self.ws.path(rel).resolve())[0]
        return keys

    def _unused_csvs(self, comp: Competition) -> list[str]:
        """The CSVs in the data that comp.toml does not read; a note for each that could hold groups."""
        used = {self.ws.path(f).resolve() for f in (comp.labels_csv, comp.groups_csv, comp.sample_submission) if f}
        unused = [p for p in self.index.csvs if p.resolve() not in used]
        keys = self._train_keys(comp.train_dirs) if unused and not comp.group_column else set()
        for path in unused if keys else []:
            found = groups.grouping_in(path, keys, comp.classes)
            if found:
                id_col, column, values = found
                self.notes.append(f"{path.name} names the training images ({id_col!r}) beside {column!r} "
                                  f"({values} values): if images sharing it must stay in one fold (a driver, "
                                  f"patient, site), run `comp init {relative(self.data, self.ws)} --force --groups "
                                  f"{relative(path, self.ws)} --group-column {column}`")
        return [_listing([p], self.data) for p in unused]

    def _find_sample(self) -> Path | None:
        if self.opt.sample:
            return self._given(self.opt.sample, "--sample", want_dir=False)
        found = [p for p in self.index.csvs if "sample" in p.name.lower() or "submission" in p.name.lower()]
        if len(found) > 1:
            raise CompError(f"more than one sample submission in {self.data}: {_listing(found, self.data)}; "
                            "pass --sample FILE")
        return found[0] if found else None

    def _find_train(self) -> dict:
        if self.opt.labels_csv:
            return self._csv_train(self._given(self.opt.labels_csv, "--labels-csv", want_dir=False))
        if self.opt.label_pattern:
            return self._name_train(self._name_folders(), self.opt.label_pattern)
        roots = [d for d in self.index.dirs if _named(d, "train") and self.index.class_dirs(d)]
        if roots:
            shallowest = min(len(r.parts) for r in roots)
            roots = [r for r in roots if len(r.parts) == shallowest]
            if len(roots) > 1:
                raise CompError(f"several training folders with class sub-folders: {_listing(roots, self.data)}; "
                                "pass DATA_DIR as the one to use")
            labels = self._csv_naming_nested(roots[0])
            if labels is not None:
                return self._csv_train(labels)
            if self._label_csvs():
                self.notes.append(f"class folders used; {_listing(self._label_csvs(), self.data)} ignored "
                                  "(--labels-csv to use it instead)")
            return self._folder_train(roots[0])
        candidates = self._label_csvs()
        if len(candidates) > 1:
            candidates = [c for c in candidates if self._id_column(c, quiet=True)] or candidates
        if len(candidates) > 1:
            raise CompError(f"several candidate labels CSVs in {self.data}: {_listing(candidates, self.data)}; "
                            "pass --labels-csv FILE")
        if candidates:
            return self._csv_train(candidates[0])
        if len(self._top_level_classes()) >= 2:
            return self._folder_train(self.data)
        named = self._detect_name_pattern()
        if named:
            return self._name_train(*named)
        zips = sorted(self.data.glob("*.zip"))
        seen = _listing(self.index.dirs[1:] + self.index.csvs, self.data)
        raise CompError(
            f"found no training labels in {self.data}: no labels CSV (train.csv, labels.csv, trainLabels.csv...) and "
            f"no class folders (train/<class>/*.jpg). Saw: {seen}. "
            + (f"Unzip {_listing(zips, self.data)} first. " if zips else "")
            + "Pass --labels-csv FILE, --label-pattern REGEX when the class is in the file names, or point "
            "DATA_DIR at the folder holding train/"
        )

    def _csv_naming_nested(self, root: Path) -> Path | None:
        """A labels CSV that names the images below the class-like folders of `root` and labels them with something
        other than the folder names: then the folders are an intermediate level, not the classes (hotel-id:
        train_images/<chain>/<image>.jpg with train.csv's hotel_id), and the CSV is the labels."""
        folder_names = {normalise_label(d.name) for d in self._dirs_at(root, 1)}
        for path in self._label_csvs():
            try:  # a CSV that cannot be read, or has no clear label column, leaves the folders the classes
                found = self._id_column(path, quiet=True)
                if found is None or found[0] != root or not found[3]:
                    continue
                frame = read_table(path, header=not found[2])
                id_col = frame.columns[found[1]]
                label_cols = self._label_columns(frame, path, id_col)
            except CompError:
                continue
            # Only a column named as a label (or as the sample's prediction), or one-hot columns, outranks folders:
            # a metadata CSV's lone repeating column (source, camera) is no reason to drop the class folders.
            named = (len(label_cols) > 1 or self.opt.label_column or label_cols[0].lower() in LABEL_COLUMN_NAMES
                     or label_cols[0] in self._sample_columns())
            if not named:
                continue
            values = label_cols if len(label_cols) > 1 else frame[label_cols[0]].str.strip().unique()
            if not {normalise_label(v) for v in values} <= folder_names:
                self.notes.append(f"the folders in {relative(root, self.ws)} are not the classes: {path.name} labels "
                                  f"their images by {', '.join(label_cols[:4])}")
                return path
        return None

    def _sample_columns(self) -> list[str]:
        """The sample submission's columns after the first (its predictions), or [] without a sample."""
        sample = self._find_sample()
        return list(read_table(sample, nrows=5).columns[1:]) if sample else []

    def _label_csvs(self) -> list[Path]:
        def looks_like_labels(name: str) -> bool:
            name = name.lower()
            return ("train" in name or "label" in name) and not any(w in name for w in ("sample", "submission", "test"))

        return [p for p in self.index.csvs if looks_like_labels(p.name)]

    # -- class folders
    def _top_level_classes(self) -> list[Path]:
        """Class folders right in DATA_DIR (alaska2: Cover/, JMiPOD/...), without its train/test/val folders."""
        return [d for d in self.index.class_dirs(self.data) if not _named(d, "train", "test", *VAL_NAMES)]

    def _folder_train(self, root: Path) -> dict:
        # A val/ beside the training root is more labelled data: the folds re-split everything.
        roots = [root] + [d for d in sorted(root.parent.iterdir() if root != self.data else root.iterdir())
                          if d.is_dir() and d.name.lower() in VAL_NAMES and self.index.class_dirs(d)]
        depth = 1 if root == self.data else self._class_depth(root)
        classes: set[str] = set()
        for r in roots:
            for class_dir in self._top_level_classes() if r == self.data else self._dirs_at(r, depth):
                classes.add(class_dir.name)
                self.skipped += scan_images(class_dir)[1]
            if r != self.data:  # DATA_DIR's own files (CSVs, READMEs) are the competition's, not junk
                self.skipped += [p for p in r.iterdir() if p.is_file()]
        if len(roots) > 1:
            self.notes.append(f"{', '.join(relative(r, self.ws) for r in roots[1:])} pooled into training")
        return {"layout": "folders", "train_dirs": [relative(r, self.ws) for r in roots],
                "classes": sort_classes(classes), "class_depth": depth}

    def _dirs_at(self, root: Path, depth: int) -> list[Path]:
        """The folders `depth` levels below `root` that hold images (at any depth below them)."""
        level = [root]
        for _ in range(depth):
            level = [d for parent in level for d in subdirs_with_images(parent)]
        return level

    def _class_depth(self, root: Path) -> int:
        """Which folder level below `root` names the class. The rule: the first level does, unless a deeper level
        splits its folders further - some folder there holds two or more image folders. A level that only wraps
        (tiny-imagenet's <class>/images/, a zip's <class>/<class>/) is structure. When images lie directly in the
        first-level folders, or no deeper level splits, it is 1; when one does, <chain>/<hotel>/ and
        <class>/<session>/ look alike, so --class-depth decides and init refuses to guess."""
        parents = self.index.image_dirs(root)
        parents.discard(())  # images right in the root belong to no class; they are listed as ignored
        if not parents:
            return 1
        shallowest = min(len(parts) for parts in parents)
        names = [sorted({parts[level] for parts in parents}) for level in range(shallowest)]
        if self.opt.class_depth:
            if self.opt.class_depth > shallowest:
                raise CompError(f"--class-depth {self.opt.class_depth}: some images of {relative(root, self.ws)} "
                                f"sit only {shallowest} folder level(s) down; use 1..{shallowest}")
            return self.opt.class_depth
        levels = [1]
        for level in range(1, shallowest):
            children: dict[tuple[str, ...], set[str]] = defaultdict(set)
            for parts in parents:
                children[parts[:level]].add(parts[level])
            if any(len(names) >= 2 for names in children.values()):
                levels.append(level + 1)
        if levels == [1]:
            return 1
        listed = "; ".join(f"level {level}: {len(names[level - 1])} folders ({', '.join(names[level - 1][:4])}"
                           f"{', ...' if len(names[level - 1]) > 4 else ''})" for level in levels)
        raise CompError(f"{relative(root, self.ws)} holds its images {shallowest} folder levels down and more than "
                        f"one level could be the class ({listed}). Pass --class-depth N for the level that names "
                        "the class (1 = the folders right below it), or --labels-csv FILE when a CSV holds the labels")

    # -- labels in file names
    def _name_folders(self) -> list[Path]:
        """Folders holding images directly, shallowest first (a names layout's candidates): the ones named train,
        else any not named test (images/ or DATA_DIR itself)."""
        found = [d for d in self.index.dirs if self.index.file_keys(d)[0]]
        named = [d for d in found if _named(d, "train")]
        found = named or [d for d in found if not _named(d, "test")]
        return sorted(found, key=lambda d: (len(d.parts), str(d)))

    def _detect_name_pattern(self) -> tuple[list[Path], str] | None:
        """(folder, pattern) when the training images' names carry their class in one of NAME_PATTERNS."""
        for folder in self._name_folders():
            names = [p.name for p in scan_images(folder, recursive=False)[0]]
            for pattern in NAME_PATTERNS:
                labels = [m["label"] for m in map(re.compile(pattern).fullmatch, names) if m]
                n_classes = len(set(labels))
                if {label.lower() for label in labels} & set(GENERIC_PREFIXES):
                    continue  # IMG_0001.jpg, DSC_0002.jpg: a camera's numbering, not a class
                if (len(names) - len(labels) <= max(1, (1 - NAME_MATCH_SHARE) * len(names)) and n_classes >= 2
                        and n_classes * FILES_PER_CLASS <= len(labels)):
                    return [folder], pattern
        return None

    def _name_train(self, folders: list[Path], pattern: str) -> dict:
        if not folders:
            raise CompError("--label-pattern: found no training folder holding images (a folder named train...); "
                            "point DATA_DIR at the folder holding it")
        if len(folders) > 1 and len(folders[0].parts) == len(folders[1].parts):
            raise CompError(f"several training folders: {_listing(folders, self.data)}; pass DATA_DIR as the one "
                            "holding the one to use")
        from comp.setup.items import label_regex

        folder, regex = folders[0], label_regex(pattern)
        images = scan_images(folder, recursive=False)[0]
        labels = Counter(m["label"] for m in map(regex.fullmatch, (p.name for p in images)) if m)
        if not labels:
            raise CompError(f"--label-pattern {pattern!r} fits no file name in {relative(folder, self.ws)} "
                            f"(e.g. {images[0].name if images else 'no images'}); check the pattern")
        unmatched = len(images) - sum(labels.values())
        if unmatched:
            self.warnings.append(f"{unmatched} image(s) in {relative(folder, self.ws)} do not fit the file-name "
                                 "pattern and are left out of training (`comp verify` lists them)")
        example = next(p.name for p in images if regex.fullmatch(p.name))
        self.notes.append(f"labels from file names: {example} -> {regex.fullmatch(example)['label']!r} "
                          f"(label_pattern {pattern!r})")
        self.skipped += self.index.junk(folder)
        return {"layout": "names", "train_dirs": [relative(folder, self.ws)], "label_pattern": pattern,
                "classes": sort_classes(set(labels))}

    # -- labels CSV + flat image folder
    def _id_column(self, path: Path, quiet: bool = False) -> tuple[Path, int, bool, bool] | None:
        """(image folder, id column index, headerless, nested) of a labels CSV; None when nothing matches and
        `quiet`. `nested`: the ids are file names found in sub-folders of the image folder, not directly in it."""
        raw = read_table(path, header=False)
        if raw.shape[0] < 2:
            raise CompError(f"{path} has no data rows")
        scores = []
        # Images right in a folder first; then, unless they matched nearly every id, images anywhere below a folder
        # with image sub-folders: a CSV may name images that sit in folders which are not their classes (hotel-id:
        # train_images/<chain>/<image>). The second pass lists whole trees, so it runs only when needed.
        for nested in (False, True):
            if nested and max((s[0] for s in scores), default=0) >= 0.99:
                break
            for folder in self.index.dirs:
                if _named(folder, "test") or (nested and not self.index.class_dirs(folder)):
                    continue
                keys = (self.index.tree_keys if nested else self.index.file_keys)(folder)[0]
                if not keys:
                    continue
                for j in range(raw.shape[1]):
                    column = raw.iloc[1:, j]
                    # Ids are unique: a label column of small integers must not win against "1.png, 2.png, ...".
                    score = naming_share(column, keys) * column.nunique() / len(column)
                    if score >= 0.5:
                        scores.append((score, _named(folder, "train"), not nested, -len(folder.parts), folder, j,
                                       nested))
        if not scores:
            # Ids may be paths from DATA_DIR ("train_images/abc.jpg", "images/abc"): match those once, as a fallback
            # (it lists every image below DATA_DIR).
            keys, exts = self.index.file_keys(self.data)
            for p in scan_images(self.data)[0]:
                rel = p.relative_to(self.data).as_posix()
                keys |= {rel, rel.rsplit(".", 1)[0]}  # extends the cached keys of DATA_DIR: ids are paths from it
                exts[p.suffix] += p.parent != self.data
            for j in range(raw.shape[1]):
                column = raw.iloc[1:, j]
                score = naming_share(column, keys) * column.nunique() / len(column)
                if score >= 0.5:
                    scores.append((score, False, True, 0, self.data, j, False))
        if not scores:
            if quiet:
                return None
            raise CompError(f"{path}: no column holds the names of image files (first row: "
                            f"{', '.join(raw.iloc[1, :4])}); pass --labels-csv for another file, or check that "
                            "the training images were unzipped")
        scores.sort(key=lambda s: s[:4], reverse=True)
        best = scores[0]
        rivals = [s for s in scores[1:] if s[4] == best[4] and s[6] == best[6] and s[0] >= 0.9 * best[0]]
        id_given = self.opt.id_column and self.opt.id_column in raw.iloc[0].tolist()
        if rivals and not id_given:
            names = [raw.iloc[0, s[5]] for s in (best, *rivals)]
            raise CompError(f"{path}: several columns name the image files ({', '.join(names)}); "
                            "pass --id-column C")
        folder, j, nested = best[4], best[5], best[6]
        first = str(raw.iloc[0, j]).strip()
        keys = self.index.tree_keys(folder)[0] if nested else self.index.file_keys(folder)[0]
        headerless = first in keys or _has_extension(first)
        return folder, j, headerless, nested

    def _csv_train(self, path: Path) -> dict:
        folder, j, headerless, nested = self._id_column(path)
        frame = read_table(path, header=not headerless)
        if headerless:
            if j != 0 or frame.shape[1] < 2:
                raise CompError(f"{path} has no header and its ids are not in the first column; add a header "
                                "line (e.g. id,label) and run again")
            id_col, label_cols = "id", ["label"]
            self.notes.append(f"{path.name} has no header: column 1 = image id, column 2 = label")
        else:
            id_col = self.opt.id_column if self.opt.id_column in frame.columns else frame.columns[j]
            label_cols = self._label_columns(frame, path, id_col)
        if len(label_cols) > 1:
            from comp.setup.items import onehot_labels

            forced = get(self.opt.kind) if self.opt.kind else None
            self.multilabel = bool(forced and forced.multilabel)
            # refuses multi-label rows, naming the kind, unless --kind names a multi-label one
            labels = onehot_labels(frame, label_cols, path, self.multilabel)
            classes = sort_classes(label_cols)
            counts = Counter(t for v in labels for t in v.split())
            self.notes.append(f"multi-hot labels: columns {', '.join(label_cols)} ({len(frame)} rows), the tags of "
                              f"an image = the columns holding a 1 (images per tag: "
                              f"{', '.join(f'{c} {counts[c]}' for c in label_cols[:12])})" if self.multilabel else
                              f"one-hot labels: columns {', '.join(label_cols)} ({len(frame)} rows, one 1 each); "
                              "class = the column holding the 1")
            unmarked = [c for c in label_cols if counts[c] == 0]
            if unmarked:
                self.warnings.append(f"one-hot column(s) marking no row: {', '.join(unmarked)}")
        else:
            labels = frame[label_cols[0]].str.strip()
            if (labels == "").any():
                line = int((labels == "").to_numpy().argmax()) + (1 if headerless else 2)
                raise CompError(f"{path}: empty label in column {label_cols[0]!r}, line {line}; fix the file or pass "
                                "--label-column")
            classes = self._classes(labels)
        ids = frame[id_col].str.strip()
        keys, exts = self.index.tree_keys(folder) if nested else self.index.file_keys(folder)
        image_ext = "" if ids.map(_has_extension).all() else (exts.most_common(1)[0][0] if exts else "")
        self.skipped += scan_images(folder)[1] if nested else self.index.junk(folder)
        if nested:
            self.notes.append(f"images are found by file name in the sub-folders of {relative(folder, self.ws)}")
        missing = int((~ids.isin(keys)).sum())
        if missing:
            self.warnings.append(f"{missing} labelled id(s) have no image file in {relative(folder, self.ws)} "
                                 "(`comp verify` lists them)")
        in_labels = self.opt.group_column in frame.columns and not self.opt.groups
        if not (self.opt.group_column or self.opt.groups):
            self.notes += [f"{path.name} has {column!r} ({n} values over {len(frame)} rows): if images sharing it must "
                           f"stay in one fold, run init again with --force --group-column {column}"
                           for column, n in groups.named_like_groups(frame, [id_col, *label_cols])]
        return {"layout": "csv", "train_dirs": [relative(folder, self.ws)], "labels_csv": relative(path, self.ws),
                "labels_header": not headerless, "train_id_column": id_col,
                "train_label_column": label_cols[0] if len(label_cols) == 1 else "",
                "train_label_columns": label_cols if len(label_cols) > 1 else [],
                "group_column": self.opt.group_column if in_labels else "", "train_subfolders": nested,
                "image_ext": image_ext, "classes": classes}

    def _classes(self, labels: pd.Series) -> list[str]:
        """The classes of a label column: its values, or the tags its cells split into (multi-label)."""
        forced = get(self.opt.kind) if self.opt.kind else None
        found = None if forced and not forced.multilabel else detect_multilabel(labels)
        if found is None and forced and forced.multilabel:  # --kind tags: split even when no image has two
            found = (sorted({t for v in labels for t in v.split()}), Counter(t for v in labels for t in set(v.split())))
        if found is None:
            return sort_classes(set(labels))
        self.multilabel = True
        tags, counts = found
        shown = ", ".join(f"{t} {counts[t]}" for t in sorted(tags, key=lambda t: -counts[t])[:12])
        self.notes.append(f"multi-label: the labels are sets of {len(tags)} tags in {labels.nunique()} combinations "
                          f"(images per tag: {shown}{', ...' if len(tags) > 12 else ''}); --kind class_name to "
                          "treat each combination as one class")
        return sort_classes(tags)

    def _label_columns(self, frame: pd.DataFrame, path: Path, id_col: str) -> list[str]:
        """The label column of a labels CSV, or its one-hot label columns (one 0/1 column per class)."""
        if self.opt.label_column:
            wanted = [c.strip() for c in self.opt.label_column.split(",") if c.strip()]
            absent = [c for c in wanted if c not in frame.columns]
            if absent:
                raise CompError(f"--label-column {', '.join(map(repr, absent))}: not a column of {path} "
                                f"(columns: {', '.join(frame.columns)})")
            return wanted
        others = [c for c in frame.columns if c not in (id_col, self.opt.group_column)
                  and not c.startswith("Unnamed:") and frame[c].str.strip().ne("").all()]
        sample_columns = self._sample_columns()
        onehot = self._onehot_columns(frame, others, sample_columns)
        if onehot:
            return onehot
        for wanted in (sample_columns if len(sample_columns) == 1 else [], LABEL_COLUMN_NAMES):
            named = [c for c in others if c in wanted or c.lower() in wanted]
            if len(named) == 1:
                return [named[0]]
        # Otherwise the one column that repeats values (a class), unlike free text or ids.
        repeating = [c for c in others if frame[c].nunique() < len(frame)]
        if len(repeating) == 1:
            return [repeating[0]]
        raise CompError(f"{path}: cannot tell which column is the label (candidates: "
                        f"{', '.join(repeating or others) or 'none'}; id column {id_col!r}); pass --label-column C")

    @staticmethod
    def _onehot_columns(frame: pd.DataFrame, others: list[str], sample_columns: list[str]) -> list[str]:
        """One-hot label columns: the sample's prediction columns when the labels CSV has each of them holding only
        0/1 (plant-pathology-2020), else every candidate column when all of them (two or more) hold only 0/1."""
        from comp.setup.items import ONES, ZEROS

        binary = [c for c in others if frame[c].str.strip().isin(ONES | ZEROS).all()]
        if len(sample_columns) >= 2 and set(sample_columns) <= set(binary):
            return [c for c in binary if c in sample_columns]
        if len(binary) >= 2 and binary == others:
            return binary
        return []

    # -- test images and the submission
    def _find_test(self, train_dirs: list[str],
                   sample: pd.DataFrame | None) -> tuple[Path | None, pd.DataFrame | None]:
        """The test folder and, when it holds class folders, its answers (id, label)."""
        if self.opt.test_dir:
            found = [self._given(self.opt.test_dir, "--test-dir", want_dir=True)]
        else:
            train = {self.ws.path(t).resolve() for t in train_dirs}
            found = [d for d in self.index.dirs if _named(d, "test") and d.resolve() not in train
                     and (self.index.file_keys(d)[0] or self.index.class_dirs(d))]
            shallowest = min((len(d.parts) for d in found), default=0)
            found = [d for d in found if len(d.parts) == shallowest]
            if not found and sample is not None:
                # No folder called test (leaf-classification keeps every image in images/): the folder holding
                # the sample's ids is the test folder.
                found = [d for d in self.index.dirs if self.index.file_keys(d)[0]
                         and any(naming_share(sample[c], self.index.file_keys(d)[0]) >= 0.9 for c in sample.columns)]
                if len(found) == 1:
                    self.notes.append(f"test images: the sample's ids are files in {relative(found[0], self.ws)}")
        if len(found) > 1:
            raise CompError(f"several test folders: {_listing(found, self.data)}; pass --test-dir DIR")
        if not found:
            return None, None
        test_dir = found[0]
        if self.index.file_keys(test_dir)[0] or not self.index.class_dirs(test_dir):
            self.skipped += self.index.junk(test_dir)
            if not self.index.file_keys(test_dir)[0]:
                raise CompError(f"{test_dir} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
            return test_dir, None
        rows = []
        for class_dir in self.index.class_dirs(test_dir):
            images, skipped = scan_images(class_dir)
            self.skipped += skipped
            rows += [(p.relative_to(test_dir).as_posix(), class_dir.name) for p in images]
        return test_dir, pd.DataFrame(rows, columns=["id", "label"])

    def _generate_sample(self, test_dir: Path, answers: pd.DataFrame | None,
                         fields: dict) -> tuple[Path, pd.DataFrame, pd.DataFrame | None]:
        numeric_folders = fields["layout"] == "folders" and all(c.isdigit() for c in fields["classes"])
        codabench = self.opt.platform == "codabench" or (self.opt.platform != "kaggle" and numeric_folders)
        ids = list(answers["id"]) if answers is not None else [p.name for p in scan_images(test_dir, False)[0]]
        stems = [i.rsplit(".", 1)[0] for i in ids]
        # CodaBench answers (NYCU VRDL) name images without extension: `image_name,pred_label`.
        if codabench and len(set(stems)) == len(stems):
            ids = stems
            answers = answers.assign(id=ids) if answers is not None else None
        header = ("image_name", "pred_label") if codabench else ("id", "label")
        # --kind (else the labels) decides the columns a made-up sample has
        frame = without_sample(fields["classes"], self.opt.kind, self.multilabel).placeholder(header, ids,
                                                                                              fields["classes"])
        rel = relative(self.ws.generated_dir / "sample_submission.csv", self.ws)
        self.generated[rel] = frame
        self.notes.append(f"no sample submission shipped: wrote {rel} ({','.join(frame.columns[:4])}; {len(ids)} rows)")
        return self.ws.path(rel), frame.astype(str), answers

    def _submission_fields(self, sample: pd.DataFrame | None, sample_path: Path | None, test_dir: Path | None,
                           classes: list[str], positive: str = "") -> dict:
        if sample is None:
            kind = without_sample(classes, self.opt.kind, self.multilabel).name
            return {"kind": kind, "submission_labels": list(classes), "positive_class": positive}
        if test_dir is None:
            raise CompError(f"{sample_path} lists test ids but no folder of test images was found in {self.data}; "
                            "pass --test-dir DIR")
        id_col = self._sample_id_column(sample, sample_path, test_dir)
        fmt = detect_format(sample, id_col, classes, BINARY if positive else self.opt.kind, where=str(sample_path),
                            positive=positive, multilabel=self.multilabel)
        self.notes += list(fmt.notes)
        ids = sample[id_col].str.strip()
        return {"sample_submission": relative(sample_path, self.ws), "id_column": id_col,
                "label_columns": fmt.label_columns, "id_has_extension": bool(ids.map(_has_extension).all()),
                "kind": fmt.kind, "top_k": fmt.top_k, "submission_labels": fmt.submission_labels,
                "positive_class": fmt.positive_class}

    def _sample_id_column(self, sample: pd.DataFrame, path: Path, test_dir: Path) -> str:
        if self.opt.id_column and self.opt.id_column in sample.columns:
            return self.opt.id_column
        keys = set(self.index.file_keys(test_dir)[0])
        for p in scan_images(test_dir)[0] if not keys else []:  # labelled test folders: ids like "cat/0001.jpg"
            rel = p.relative_to(test_dir).as_posix()
            keys |= {rel, rel.rsplit(".", 1)[0]}
        matching = [c for c in sample.columns if naming_share(sample[c], keys) >= 0.5]
        if len(matching) == 1:
            return matching[0]
        if not matching and sample.columns[0].lower() in ("id", "image", "image_id", "image_name", "name", "file"):
            self.warnings.append(f"few ids of {path.name} match files in {relative(test_dir, self.ws)}; "
                                 "`comp verify` lists them")
            return sample.columns[0]
        raise CompError(f"{path}: cannot tell which column is the test id (columns matching test files: "
                        f"{', '.join(matching) or 'none'}; all columns: {', '.join(sample.columns)}); "
                        "pass --id-column C")
