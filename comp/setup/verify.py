"""Preflight of a competition's files: every train and test image decoded once, before any GPU hour is spent.

`verify(comp, ws)` decodes every image (`comp.vision.images.open_rgb`) in a process pool, lists broken files by path and
kind, cross-checks labels, folders and the sample submission, finds exact train/test duplicates (sha256 of bytes),
and caches the report in `ws.verify_cache` under a fingerprint of comp.toml and the (path, size, mtime) of every
data file. `require_verified(comp, ws)`, called by training, accepts only a passing report with the current
fingerprint; the fingerprint is stat-only so that check costs milliseconds, not a re-decode.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from comp.core import atomic
from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.progress import progress_bar
from comp.core.workspace import Workspace
from comp.vision.images import IMAGE_EXTENSIONS, available_cores, open_rgb

CACHE_VERSION = 1  # bump when the report's meaning changes, so old caches stop counting as verified
# Below this many images a pool costs more to start than it saves.
POOL_MIN_IMAGES = 64
# Workspace folders comp itself writes to: never part of the data fingerprint (else every run would change it).
_ARTIFACT_DIRS = ("models", "folds", "submissions", "reports")


@dataclass(frozen=True)
class Issue:
    """One finding about one file or id."""

    kind: str  # zero-byte | truncated | not-an-image | unreadable | too-large | missing-image | no-label | ...
    path: str  # the file (relative to the workspace when inside it) or the id it concerns
    detail: str  # what exactly, and what to do


@dataclass
class VerifyReport:
    """What `verify` found; `passed` is False when any error was found (warnings do not fail it)."""

    fingerprint: str
    n_train: int
    n_test: int
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)  # train images per class, in comp.classes order
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> min_w, max_w, min_h, max_h
    seconds: float = 0.0  # wall time of the decode pass
    allow_broken_test: bool = False  # `comp verify --allow-broken-test`: truncated test images are let through ...
    broken_test: list[str] = field(default_factory=list)  # ... these, predicted from the part that decodes

    @property
    def passed(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {"version": CACHE_VERSION, "passed": self.passed, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VerifyReport:
        return cls(
            fingerprint=data["fingerprint"],
            n_train=data["n_train"],
            n_test=data["n_test"],
            errors=[Issue(**i) for i in data["errors"]],
            warnings=[Issue(**i) for i in data["warnings"]],
            class_counts=data["class_counts"],
            sizes=data["sizes"],
            seconds=data["seconds"],
            allow_broken_test=bool(data.get("allow_broken_test", False)),
            broken_test=list(data.get("broken_test", [])),
        )


# ---------------------------------------------------------------------------------------------------------------
# The fingerprint: stat only


def _data_roots(comp: Competition, ws: Workspace) -> list[Path]:
    rels = [comp.data_dir, *comp.train_dirs, comp.test_dir, comp.labels_csv, comp.groups_csv, comp.sample_submission]
    return [ws.path(r) for r in rels if r]


def _walk_files(root: Path, skip: set[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file under `root` (or of `root` itself), hidden and artifact dirs skipped."""
    if root.is_file():
        st = root.stat()
        return [(str(root), st.st_size, st.st_mtime_ns)]
    out: list[tuple[str, int, int]] = []
    stack = [root]
    seen: set[Path] = set()  # real paths of visited folders: a symlink loop must not walk forever
    while stack:
        folder = stack.pop()
        real = folder.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=True):
                if Path(entry.path) not in skip:
                    stack.append(Path(entry.path))
            else:
                try:
                    st = entry.stat(follow_symlinks=True)
                except OSError:  # a dangling link still changes the fingerprint, by name
                    out.append((entry.path, -1, -1))
                    continue
                out.append((entry.path, st.st_size, st.st_mtime_ns))
    return out


def fingerprint(comp: Competition, ws: Workspace) -> str:
    """sha256 of comp.toml's bytes plus (path, size, mtime) of every data file; changes when any file does."""
    h = hashlib.sha256()
    h.update(ws.comp_toml.read_bytes() if ws.comp_toml.exists() else b"")
    skip = {ws.root / d for d in _ARTIFACT_DIRS}
    roots: list[Path] = []
    for root in sorted({r.resolve() for r in _data_roots(comp, ws)}):  # parents sort before their children
        if not any(root.is_relative_to(r) for r in roots):  # train/ inside data/ is walked once, with data/
            roots.append(root)
    files = set()
    for root in roots:
        files.update(_walk_files(root, skip))
    for path, size, mtime in sorted(files):
        h.update(f"{path}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Decoding one file (runs in a worker process: top-level, plain return values)


def check_file(path: str) -> tuple[str, str, int, int, str]:
    """Decode `path` once: (kind, detail, width, height, sha256). kind is "" for a good image."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return "missing-image", "file not found", 0, 0, ""
    except OSError as err:
        return "unreadable", f"cannot read: {err.strerror or err}", 0, 0, ""
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return "zero-byte", "the file is empty (0 bytes): download it again or remove its row", 0, 0, digest
    try:
        # open_rgb reads the path again; the page cache makes that nearly free and keeps one decoding code path.
        rgb = open_rgb(path)
        return "", "", rgb.width, rgb.height, digest
    except Image.DecompressionBombError as err:
        return "too-large", f"{err}; raise PIL.Image.MAX_IMAGE_PIXELS if it is genuine", 0, 0, digest
    except Image.UnidentifiedImageError:
        return "not-an-image", _sniff(data), 0, 0, digest
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        if "truncated" in str(err) or isinstance(err, EOFError):
            return "truncated", f"{err}; the file ends after {len(data)} bytes: download it again", 0, 0, digest
        return "corrupt", f"{type(err).__name__}: {err}", 0, 0, digest
    except Exception as err:  # a decoder bug on one odd file must not lose the whole report
        return "corrupt", f"{type(err).__name__}: {err}", 0, 0, digest


def _sniff(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
        return "an HTML/XML page, not an image (a failed download or a login page?): download it again"
    if head.startswith((b"{", b"[")):
        return "JSON text, not an image"
    try:
        head.decode("utf-8")
        return "a text file, not an image"
    except UnicodeDecodeError:
        return f"not a format Pillow can read (starts with {data[:8]!r})"


def decode_all(paths: list[str], workers: int | None = None, console: Console | None = None) -> list[tuple]:
    """`check_file` over `paths` (in order), in a process pool with a progress bar."""
    workers = workers or available_cores()
    columns = (
        TextColumn("verify"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
        TimeRemainingColumn(),
    )
    # progress_bar shows it only where someone watches: a bar in a log file is noise.
    with progress_bar(*columns, console=console or Console()) as progress:
        task = progress.add_task("decode", total=len(paths))
        if workers <= 1 or len(paths) < POOL_MIN_IMAGES:
            results = []
            for p in paths:
                results.append(check_file(p))
                progress.advance(task)
            return results
        chunk = max(1, min(256, len(paths) // (workers * 8)))
        results = []
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_ignore_sigint)
        try:
            for result in pool.map(check_file, paths, chunksize=chunk):
                results.append(result)
                progress.advance(task)
        except BaseException:
            # Ctrl-C: drop the queued chunks instead of decoding the rest of the data set before exiting.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return results


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which cancels them; otherwise each prints its own traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---------------------------------------------------------------------------------------------------------------
# The whole check


def verify(
    comp: Competition, ws: Workspace, workers: int | None = None, use_cache: bool = True,
    console: Console | None = None, allow_broken_test: bool | None = None,
) -> tuple[VerifyReport, bool]:
    """Verify the competition's data; returns (report, from_cache). The report is cached whatever it found.

    `allow_broken_test`: a truncated test image is a warning instead of an error, and training and predict decode it
    as far as it goes (a test image must get a prediction; one that cannot be downloaded again should not block every
    model). None keeps the choice the cached report made."""
    from comp.setup.items import (  # layouts imports heavier helpers; keep `comp --help` fast
        class_counts,
        test_items,
        train_items,
    )

    fp = fingerprint(comp, ws)
    cached = load_cached(ws)
    if allow_broken_test is None:
        allow_broken_test = cached is not None and cached.allow_broken_test
    if use_cache and cached is not None and cached.fingerprint == fp and cached.allow_broken_test == allow_broken_test:
        return cached, True
    train = train_items(comp, ws)
    test = test_items(comp, ws)  # empty when the competition has no test images
    report = VerifyReport(fingerprint=fp, n_train=len(train), n_test=len(test), allow_broken_test=allow_broken_test)
    if train.empty:  # nothing to train on passes no check: say so here, not as a puzzling error in `comp folds`
        where = comp.labels_csv or ", ".join(comp.train_dirs) or "comp.toml"
        report.errors.append(Issue("no-training-images", str(where), "no labelled training image was found; check "
                                   "train_dirs/labels_csv in comp.toml (or re-run `comp init DATA_DIR --force`)"))

    train_paths = [str(p) for p in train["path"]]
    test_paths = [str(p) for p in test["path"]]
    start = time.perf_counter()
    results = decode_all(train_paths + test_paths, workers, console)
    report.seconds = round(time.perf_counter() - start, 3)
    train_res, test_res = results[: len(train_paths)], results[len(train_paths) :]

    dup = train["id"][train["id"].duplicated(keep=False)]
    if len(dup):
        # Every later stage joins on id (folds, OOF logits), so one id with two rows is an error, not a warning.
        listed = ", ".join(repr(i) for i in dict.fromkeys(dup.astype(str).tolist()[:10]))
        report.errors.append(Issue(
            "duplicate-id", str(comp.labels_csv or comp.train_dirs),
            f"{dup.nunique()} id(s) appear in more than one labelled row: {listed}; keep one row per id",
        ))
    _file_issues(report, ws, train, train_res, "labelled id")
    _file_issues(report, ws, test, test_res, "sample id", test=True)
    _folder_issues(report, comp, ws, train_paths, test_paths)
    _duplicate_issues(report, ws, train, train_res, test_paths, test_res)

    # train_items already refuses labels outside comp.classes, so the classes' order covers every count.
    report.class_counts = counts = class_counts(comp, train["label"])
    for c in comp.classes:
        if counts.get(c, 0) == 0:
            report.warnings.append(Issue("empty-class", c, "no training image has this class"))
    _small_class_issues(report, comp, ws, counts)
    report.sizes = {"train": _size_range(train_res), "test": _size_range(test_res)}
    save_report(ws, report)
    return report, False


def _small_class_issues(report: VerifyReport, comp: Competition, ws: Workspace, counts: dict[str, int]) -> None:
    """A class with one image cannot be both trained on and validated: an error. Fewer images than folds: a warning
    (`comp folds` refuses such a split until the fold count drops or the class grows). Each names the fix that fits
    the layout (class folders or a labels CSV)."""
    n_folds = _folds_in_force(comp, ws)
    small = {c: counts[c] for c in comp.classes if 0 < counts.get(c, 0) < max(2, n_folds)}
    if not small:
        return
    fewest = min(small.values())
    fewer = f"; or use {fewest} folds (`comp folds --n-folds {fewest} --force`)" if fewest >= 2 else ""
    for c, n in small.items():
        if comp.layout == "folders" and comp.class_depth == 1:
            where = f"{comp.train_dirs[0]}/{c}/" if comp.train_dirs else f"the {c!r} class folder"
            fix = f"add images to {where}, or move that folder out of the train folder and run `comp init --force`"
        elif comp.layout == "folders":
            fix = (f"add images to the {c!r} folders ({comp.class_depth} levels below {', '.join(comp.train_dirs)}), "
                   "or move them out and run `comp init --force`")
        elif comp.layout == "names":
            fix = (f"add images named like {c!r} (label_pattern {comp.label_pattern!r}) to {comp.train_dirs[0]}, or "
                   "rename or remove its files and run `comp init --force`")
        else:
            fix = (f"add labelled images of {c!r} to {comp.labels_csv or 'the labels CSV'}, or relabel or drop its "
                   "rows there and run `comp init --force`")
        if n == 1:
            detail = f"1 image: a class needs at least 2 (one to train on, one to validate); {fix}"
            report.errors.append(Issue("single-image-class", c, detail))
        else:
            detail = f"{n} images, fewer than the {n_folds} folds (`comp folds` will refuse): {fix}{fewer}"
            report.warnings.append(Issue("too-few-images", c, detail))


def _folds_in_force(comp: Competition, ws: Workspace) -> int:
    """folds.json's fold count when folds exist (they may have been made with --n-folds), else comp.toml's."""
    try:
        data = json.loads(ws.folds_json.read_text(encoding="utf-8"))
        return int(data.get("n_folds") or comp.n_folds)
    except (OSError, ValueError, TypeError, AttributeError):
        return comp.n_folds


def _rel(ws: Workspace, path: str | Path) -> str:
    try:
        return str(Path(path).relative_to(ws.root))
    except ValueError:
        return str(path)


def _file_issues(report: VerifyReport, ws: Workspace, items, results: list[tuple], what: str,
                 test: bool = False) -> None:
    for item_id, path, (kind, detail, *_rest) in zip(items["id"], items["path"], results, strict=True):
        if kind == "missing-image":
            report.errors.append(Issue(kind, _rel(ws, path), f"{what} {item_id!r} has no image at this path"))
        elif kind == "truncated" and test and report.allow_broken_test and _decodes_truncated(path):
            report.broken_test.append(str(path))
            report.warnings.append(Issue(kind, _rel(ws, path), f"{detail}; --allow-broken-test: predicted from the "
                                         "part that decodes (the rest is grey)"))
        elif kind == "truncated" and test:
            report.errors.append(Issue(kind, _rel(ws, path), f"{detail}, or let it through with `comp verify "
                                       "--allow-broken-test` (predicted from the part that decodes)"))
        elif kind:
            report.errors.append(Issue(kind, _rel(ws, path), detail))


def _decodes_truncated(path: str) -> bool:
    try:
        open_rgb(path, truncated_ok=True)
    except Exception:  # noqa: BLE001 - nothing decodes: it stays an error
        return False
    return True


def _folder_issues(report: VerifyReport, comp: Competition, ws: Workspace, train_paths, test_paths) -> None:
    """Images on disk that no label or sample row mentions: training ignores them, the submission omits them."""
    from comp.setup.scan import scan_images

    test_root = ws.path(comp.test_dir).resolve() if comp.test_dir else None
    known_train = {Path(p).resolve() for p in train_paths}
    for rel in comp.train_dirs:
        root = ws.path(rel).resolve()
        if not root.is_dir():
            continue
        images, skipped = scan_images(root)
        for f in images:
            if test_root is not None and f.is_relative_to(test_root):
                continue
            if f.resolve() not in known_train:
                report.warnings.append(Issue("no-label", _rel(ws, f), "image in the train folder with no label row"))
        for f in skipped:
            if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."):
                report.warnings.append(Issue("ignored", _rel(ws, f), f"{f.suffix} files are not used for training"))
    if test_root is not None and test_root.is_dir():
        known_test = {Path(p).resolve() for p in test_paths}
        for f in scan_images(test_root)[0]:
            if f.resolve() not in known_test:
                report.warnings.append(
                    Issue("not-in-sample", _rel(ws, f), "test image with no row in the sample submission")
                )


def _duplicate_issues(report: VerifyReport, ws: Workspace, train, train_res, test_paths, test_res) -> None:
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, res in enumerate(train_res):
        if res[4] and not res[0]:
            by_hash[res[4]].append(i)
    labels = train["label"].astype(str).tolist()
    ids = train["id"].astype(str).tolist()
    for rows in by_hash.values():
        if len({labels[i] for i in rows}) > 1:
            pairs = ", ".join(f"{ids[i]}={labels[i]}" for i in rows[:5])
            detail = f"identical images with different labels: {pairs}"
            report.warnings.append(Issue("conflicting-duplicate", ids[rows[0]], detail))
    for path, res in zip(test_paths, test_res, strict=True):
        if res[4] and not res[0] and res[4] in by_hash:
            twins = ", ".join(ids[i] for i in by_hash[res[4]][:3])
            report.warnings.append(
                Issue("train-test-duplicate", _rel(ws, path), f"byte-identical to train id(s) {twins}")
            )


def _size_range(results: list[tuple]) -> dict[str, int]:
    sizes = [(r[2], r[3]) for r in results if not r[0]]
    if not sizes:
        return {}
    ws_, hs = zip(*sizes, strict=True)
    return {"min_w": min(ws_), "max_w": max(ws_), "min_h": min(hs), "max_h": max(hs)}


# ---------------------------------------------------------------------------------------------------------------
# The cache and the gate training calls


def save_report(ws: Workspace, report: VerifyReport) -> None:
    atomic.write_json(ws.verify_cache, report.to_json())


def load_cached(ws: Workspace) -> VerifyReport | None:
    """The cached report, or None when absent, unreadable or from another cache version (safe to delete)."""
    try:
        data = json.loads(ws.verify_cache.read_text(encoding="utf-8"))
        if data.get("version") != CACHE_VERSION:
            return None
        return VerifyReport.from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_verified(comp: Competition, ws: Workspace, console: Console | None = None) -> VerifyReport:
    """What training calls: the cached verification when it matches the data, else verify now (then cached).
    Raises CompError when the data has errors, naming the first and the command that lists them all."""
    cached = load_cached(ws)
    if cached is None or cached.fingerprint != fingerprint(comp, ws):
        if console is not None:
            why = "not verified yet" if cached is None else "changed since the last `comp verify`"
            console.print(f"verifying the data first ({why}) ...", highlight=False)
        cached, _ = verify(comp, ws, console=console)
        if console is not None and cached.passed:
            console.print(f"verify: ok ({cached.n_train} train, {cached.n_test} test images, "
                          f"{cached.seconds:.1f}s; cached)", highlight=False)
    return require_verified(comp, ws)


def require_verified(comp: Competition, ws: Workspace) -> VerifyReport:
    """Raise CompError unless a cached, passing verification matches the current data; return it otherwise."""
    cached = load_cached(ws)
    if cached is None:
        raise CompError(f"the data in {ws.root} has not been verified: run `comp verify` first")
    if cached.fingerprint != fingerprint(comp, ws):
        raise CompError("the data or comp.toml changed since the last `comp verify`: run `comp verify` again")
    if not cached.passed:
        first = cached.errors[0]
        raise CompError(
            f"verification found {len(cached.errors)} error(s) in the data (first: {first.kind} {first.path}: "
            f"{first.detail}); `comp verify` lists them all; fix them and run it again"
        )
    return cached
