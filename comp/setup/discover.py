"""Discovery for `comp init`: from a competition folder to the fields of comp.toml, writing nothing.

It answers fastai's DataBlock questions once, from the files: where the labelled images are (class folders, or a
labels CSV + a flat folder), where the test images are, what the sample submission looks like. Whatever it cannot
decide (two labels CSVs, two plausible id columns, labels that do not match the sample) is refused with a message
naming what it saw and the flag that settles it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from comp.core.config import DEFAULT_METRIC, KINDS, Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.setup.formats import detect_format
from comp.setup.scan import FolderIndex, read_table, scan_images, sort_classes
from comp.vision.images import IMAGE_EXTENSIONS


@dataclass
class InitOptions:
    """The `comp init` flags; empty strings mean "detect it"."""

    name: str = ""
    platform: str = "none"
    kind: str = ""
    metric: str = ""
    id_column: str = ""  # the id column of the sample and of the labels CSV
    label_column: str = ""  # the label column of the labels CSV
    labels_csv: str = ""
    sample: str = ""
    test_dir: str = ""
    group_column: str = ""
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
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    copied_recipes: list[str] = field(default_factory=list)
    generated: dict[str, pd.DataFrame] = field(default_factory=dict)  # workspace-relative path -> CSV content


SEARCH_DEPTH = 2  # Kaggle zips often unpack one level deeper (data/train/train/*.jpg)
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


def _match(values: pd.Series, keys: set[str]) -> float:
    """The share of non-empty `values` that name an image file (with or without its extension)."""
    values = values.str.strip()
    values = values[values != ""]
    return float(values.isin(keys).mean()) if len(values) else 0.0


class _Discovery:
    """One pass over a competition folder, asking the questions in order; `run()` returns the Findings."""

    def __init__(self, data: Path, ws: Workspace, options: InitOptions) -> None:
        self.data, self.ws, self.opt = data, ws, options
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.skipped: list[Path] = []
        self.generated: dict[str, pd.DataFrame] = {}
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
        if (self.opt.positive or self.opt.negative) and self.opt.kind not in ("", "binary"):
            raise CompError(f"--positive/--negative set up a binary submission; --kind {self.opt.kind} contradicts it")
        if self.opt.positive or self.opt.negative:
            fields["classes"], class_map, positive = binary_groups(classes, self.opt.positive, self.opt.negative)
            fields["class_map"] = class_map or None
            classes = fields["classes"]
            if fields["class_map"]:
                self.notes.append(f"binary: {classes[1]!r} (positive) vs {classes[0]!r}; training labels grouped "
                                  "by class_map in comp.toml")
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
            metric=self.opt.metric or DEFAULT_METRIC[fields["kind"]],
            n_folds=self.opt.n_folds,
            seed=self.opt.seed,
            **fields,
        )
        if self.opt.id_column and self.opt.id_column not in (comp.id_column, comp.train_id_column):
            raise CompError(f"--id-column {self.opt.id_column!r} is neither a column of the sample submission nor "
                            "of the labels CSV; check its spelling (it is case-sensitive)")

        return Findings(comp, skipped=[_listing([p], self.data) for p in sorted(set(self.skipped))],
                        notes=self.notes, warnings=self.warnings, generated=self.generated)

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
        roots = [d for d in self.index.dirs if _named(d, "train") and self.index.class_dirs(d)]
        if roots:
            shallowest = min(len(r.parts) for r in roots)
            roots = [r for r in roots if len(r.parts) == shallowest]
            if len(roots) > 1:
                raise CompError(f"several training folders with class sub-folders: {_listing(roots, self.data)}; "
                                "pass DATA_DIR as the one to use")
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
        zips = sorted(self.data.glob("*.zip"))
        seen = _listing(self.index.dirs[1:] + self.index.csvs, self.data)
        raise CompError(
            f"found no training labels in {self.data}: no labels CSV (train.csv, labels.csv, trainLabels.csv...) and "
            f"no class folders (train/<class>/*.jpg). Saw: {seen}. "
            + (f"Unzip {_listing(zips, self.data)} first. " if zips else "")
            + "Pass --labels-csv FILE, or point DATA_DIR at the folder holding train/"
        )

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
        if self.opt.group_column:
            raise CompError("--group-column needs a labels CSV; this competition has class folders")
        # A val/ beside the training root is more labelled data: the folds re-split everything.
        roots = [root] + [d for d in sorted(root.parent.iterdir() if root != self.data else root.iterdir())
                          if d.is_dir() and d.name.lower() in VAL_NAMES and self.index.class_dirs(d)]
        classes: set[str] = set()
        for r in roots:
            for class_dir in self._top_level_classes() if r == self.data else self.index.class_dirs(r):
                classes.add(class_dir.name)
                self.skipped += scan_images(class_dir)[1]
            if r != self.data:  # DATA_DIR's own files (CSVs, READMEs) are the competition's, not junk
                self.skipped += [p for p in r.iterdir() if p.is_file()]
        if len(roots) > 1:
            self.notes.append(f"{', '.join(relative(r, self.ws) for r in roots[1:])} pooled into training")
        return {"layout": "folders", "train_dirs": [relative(r, self.ws) for r in roots],
                "classes": sort_classes(classes)}

    # -- labels CSV + flat image folder
    def _id_column(self, path: Path, quiet: bool = False) -> tuple[Path, int, bool] | None:
        """(image folder, id column index, headerless) of a labels CSV; None when nothing matches and `quiet`."""
        raw = read_table(path, header=False)
        if raw.shape[0] < 2:
            raise CompError(f"{path} has no data rows")
        scores = []
        for folder in self.index.dirs:
            if _named(folder, "test") or not self.index.file_keys(folder)[0]:
                continue
            keys = self.index.file_keys(folder)[0]
            for j in range(raw.shape[1]):
                column = raw.iloc[1:, j]
                # Ids are unique: a label column of small integers must not win against "1.png, 2.png, ...".
                score = _match(column, keys) * column.nunique() / len(column)
                if score >= 0.5:
                    scores.append((score, _named(folder, "train"), -len(folder.parts), folder, j))
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
                score = _match(column, keys) * column.nunique() / len(column)
                if score >= 0.5:
                    scores.append((score, False, 0, self.data, j))
        if not scores:
            if quiet:
                return None
            raise CompError(f"{path}: no column holds the names of image files (first row: "
                            f"{', '.join(raw.iloc[1, :4])}); pass --labels-csv for another file, or check that "
                            "the training images were unzipped")
        scores.sort(key=lambda s: s[:3], reverse=True)
        best = scores[0]
        rivals = [s for s in scores[1:] if s[3] == best[3] and s[0] >= 0.9 * best[0]]
        id_given = self.opt.id_column and self.opt.id_column in raw.iloc[0].tolist()
        if rivals and not id_given:
            names = [raw.iloc[0, s[4]] for s in (best, *rivals)]
            raise CompError(f"{path}: several columns name the image files ({', '.join(names)}); "
                            "pass --id-column C")
        folder, j = best[3], best[4]
        first = str(raw.iloc[0, j]).strip()
        headerless = first in self.index.file_keys(folder)[0] or _has_extension(first)
        return folder, j, headerless

    def _csv_train(self, path: Path) -> dict:
        folder, j, headerless = self._id_column(path)
        frame = read_table(path, header=not headerless)
        if headerless:
            if j != 0 or frame.shape[1] < 2:
                raise CompError(f"{path} has no header and its ids are not in the first column; add a header "
                                "line (e.g. id,label) and run again")
            id_col, label_col = "id", "label"
            self.notes.append(f"{path.name} has no header: column 1 = image id, column 2 = label")
        else:
            id_col = self.opt.id_column if self.opt.id_column in frame.columns else frame.columns[j]
            label_col = self._label_column(frame, path, id_col)
        if self.opt.group_column and self.opt.group_column not in frame.columns:
            raise CompError(f"--group-column {self.opt.group_column!r} is not a column of {path} "
                            f"(columns: {', '.join(frame.columns)})")
        labels = frame[label_col].str.strip()
        if (labels == "").any():
            line = int((labels == "").to_numpy().argmax()) + (1 if headerless else 2)
            raise CompError(f"{path}: empty label in column {label_col!r}, line {line}; fix the file or pass "
                            "--label-column")
        ids = frame[id_col].str.strip()
        exts = self.index.file_keys(folder)[1]
        image_ext = "" if ids.map(_has_extension).all() else (exts.most_common(1)[0][0] if exts else "")
        self.skipped += self.index.junk(folder)
        missing = int((~ids.isin(self.index.file_keys(folder)[0])).sum())
        if missing:
            self.warnings.append(f"{missing} labelled id(s) have no image file in {relative(folder, self.ws)} "
                                 "(`comp verify` lists them)")
        return {"layout": "csv", "train_dirs": [relative(folder, self.ws)], "labels_csv": relative(path, self.ws),
                "labels_header": not headerless, "train_id_column": id_col, "train_label_column": label_col,
                "group_column": self.opt.group_column, "image_ext": image_ext, "classes": sort_classes(set(labels))}

    def _label_column(self, frame: pd.DataFrame, path: Path, id_col: str) -> str:
        if self.opt.label_column:
            if self.opt.label_column not in frame.columns:
                raise CompError(f"--label-column {self.opt.label_column!r} is not a column of {path} "
                                f"(columns: {', '.join(frame.columns)})")
            return self.opt.label_column
        others = [c for c in frame.columns if c not in (id_col, self.opt.group_column)
                  and not c.startswith("Unnamed:") and frame[c].str.strip().ne("").all()]
        sample = self._find_sample()
        sample_columns = list(read_table(sample).columns[1:]) if sample else []
        for wanted in (sample_columns if len(sample_columns) == 1 else [], LABEL_COLUMN_NAMES):
            named = [c for c in others if c in wanted or c.lower() in wanted]
            if len(named) == 1:
                return named[0]
        # Otherwise the one column that repeats values (a class), unlike free text or ids.
        repeating = [c for c in others if frame[c].nunique() < len(frame)]
        if len(repeating) == 1:
            return repeating[0]
        raise CompError(f"{path}: cannot tell which column is the label (candidates: "
                        f"{', '.join(repeating or others) or 'none'}; id column {id_col!r}); pass --label-column C")

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
                         and any(_match(sample[c], self.index.file_keys(d)[0]) >= 0.9 for c in sample.columns)]
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
        classes = fields["classes"]
        if self.opt.kind == "class_probs":  # --kind decides the columns a made-up sample has
            frame = pd.DataFrame({header[0]: ids, **{c: 1 / len(classes) for c in classes}})
        else:
            frame = pd.DataFrame({header[0]: ids, header[1]: 0.5 if self.opt.kind == "binary" else classes[0]})
        rel = relative(self.ws.generated_dir / "sample_submission.csv", self.ws)
        self.generated[rel] = frame
        self.notes.append(f"no sample submission shipped: wrote {rel} ({','.join(frame.columns[:4])}; {len(ids)} rows)")
        return self.ws.path(rel), frame.astype(str), answers

    def _submission_fields(self, sample: pd.DataFrame | None, sample_path: Path | None, test_dir: Path | None,
                           classes: list[str], positive: str = "") -> dict:
        if sample is None:
            kind = self.opt.kind or ("class_id" if all(c.isdigit() for c in classes) else "class_name")
            return {"kind": kind, "submission_labels": list(classes), "positive_class": positive}
        if test_dir is None:
            raise CompError(f"{sample_path} lists test ids but no folder of test images was found in {self.data}; "
                            "pass --test-dir DIR")
        id_col = self._sample_id_column(sample, sample_path, test_dir)
        fmt = detect_format(sample, id_col, classes, "binary" if positive else self.opt.kind, where=str(sample_path),
                            positive=positive)
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
        matching = [c for c in sample.columns if _match(sample[c], keys) >= 0.5]
        if len(matching) == 1:
            return matching[0]
        if not matching and sample.columns[0].lower() in ("id", "image", "image_id", "image_name", "name", "file"):
            self.warnings.append(f"few ids of {path.name} match files in {relative(test_dir, self.ws)}; "
                                 "`comp verify` lists them")
            return sample.columns[0]
        raise CompError(f"{path}: cannot tell which column is the test id (columns matching test files: "
                        f"{', '.join(matching) or 'none'}; all columns: {', '.join(sample.columns)}); "
                        "pass --id-column C")
