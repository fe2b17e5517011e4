"""Quality at equal wall time: `comp train --model effnet-lite0 --budget T` + `comp stack` against a plain timm script
(bench/plain_timm.py) given the same T, held-out accuracy side by side, on real photo sets.

    make bench-quality                                    # every set, T = 3, 5 and 8 min; rows go into BENCHMARKS.md
    python -m bench.quality --sets sign-digits --times 3  # some sets / times (rows of other sets are kept)
    python -m bench.quality --quick                       # smoke test: one tiny set, T = 1 min, BENCHMARKS.md untouched

Sets: the real image sets of the shared folder ($COMP_SHARED/data: cifar10-small, cifar10-kaggle-small,
hymenoptera) and two public photo sets that live in git repositories, read from a clone (a work tree or a bare git
directory; nothing is downloaded here, and no image is committed to this repository):

    git clone https://github.com/ardamavi/Sign-Language-Digits-Dataset      # Apache-2.0, 2,062 photos 100x100 px
    git clone https://github.com/alexeygrigorev/clothing-dataset-small      # CC0, 10 classes of clothing photos

    python -m bench.quality --source sign-digits=PATH --source clothing=PATH

(default: the clones under $QUALITY_SOURCES, else /work/.mirror/<owner>+<name>/repo). A set whose source is missing
is skipped with a note. Each set gets a labelled held-out test split that neither arm trains on: the set's own test
split where it has one (cifar10-small test/, hymenoptera val/, clothing test/), else a stratified 20% (30% for the
200-image cifar10-kaggle-small) drawn with seed 0. The clothing set uses a stratified 1,000 of its train + validation
images (37 MB with its test split), to stay under ~50 MB.

Fairness: both arms run AT THE SAME TIME, each pinned to its own core (`taskset -c 0` / `-c 1`, OMP_NUM_THREADS=1,
so torch runs one thread and comp's thread plan sees one core), so load from other processes on the machine falls on
both during the same minutes. The plain script gets `--seconds T` for its whole run (weights, epochs, test pass);
comp's arm runs `init`, `folds`, `train --budget` (T minus what init and folds took, minus a 15 s reserve for
`stack`) and `stack`, and both arms' real wall times are reported beside their scores. The plain arm's image side is
the training images' median short side rounded down to a multiple of 32, kept within [64, 224] px (EfficientNet
downsamples 32x: 32-px CIFAR would leave one pixel; 224 is the backbone's pretrained side).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.common import REPO, SHARED, machine

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
STACK_RESERVE_S = 15.0  # comp stack + scoring on these sets takes well under this
GIT_SOURCES = {  # set name -> (GitHub repository, licence)
    "sign-digits": ("ardamavi/Sign-Language-Digits-Dataset", "Apache-2.0"),
    "clothing": ("alexeygrigorev/clothing-dataset-small", "CC0-1.0"),
}
SETS = ("cifar10-small", "cifar10-kaggle-small", "hymenoptera", "sign-digits", "clothing")


@dataclass
class Split:
    train: list[tuple[Path, str]]
    test: list[tuple[Path, str]]
    note: str  # where the data and its held-out split come from


@dataclass
class Row:
    set: str
    minutes: float
    n_train: int
    n_test: int
    classes: int
    comp_accuracy: float | None
    comp_seconds: float
    comp_plan: str
    plain_accuracy: float | None
    plain_seconds: float
    plain_epochs: int
    plain_size: int
    load: str
    note: str = ""
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------- the sets


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXT)


def _class_folders(root: Path) -> list[tuple[Path, str]]:
    return [(p, p.parent.name) for c in sorted(d for d in root.iterdir() if d.is_dir()) for p in _images(c)]


def _held_out(rows: list[tuple[Path, str]], fraction: float) -> tuple[list, list]:
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(rows, test_size=fraction, stratify=[c for _, c in rows], random_state=0)
    return sorted(train), sorted(test)


def _checkout(name: str, source: Path, cache: Path) -> Path:
    """The files of a git source: its work tree when it has one, else `git archive HEAD` unpacked into cache."""
    if any(p.suffix.lower() in IMAGE_EXT for p in source.rglob("*") if p.is_file() and ".git" not in p.parts):
        return source
    target = cache / "sources" / name
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        git_dir = source / ".git" if (source / ".git").exists() else source
        blob = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "HEAD"], capture_output=True, check=True)
        tarfile.open(fileobj=io.BytesIO(blob.stdout)).extractall(target, filter="data")
        (target / ".complete").write_text("")
    return target


def load_set(name: str, sources: dict[str, Path], cache: Path) -> Split:
    data = SHARED / "data"
    if name == "cifar10-small":
        root = data / name
        return Split(_class_folders(root / "train"), _class_folders(root / "test"), "its own test/ split")
    if name == "cifar10-kaggle-small":
        train, test = _held_out(_class_folders(data / name / "image_data_format_2"), 0.3)
        return Split(train, test, "stratified 30% held out (seed 0)")
    if name == "hymenoptera":
        root = data / name
        return Split(_class_folders(root / "train"), _class_folders(root / "val"), "its own val/ split")
    if name not in GIT_SOURCES:
        raise SystemExit(f"unknown set {name!r}; sets: {', '.join(SETS)}")
    source = sources.get(name)
    if source is None or not source.exists():
        raise FileNotFoundError(
            f"set {name}: no clone of https://github.com/{GIT_SOURCES[name][0]} found (looked at {source}); "
            f"git clone it and pass --source {name}=PATH")
    root = _checkout(name, source, cache)
    if name == "sign-digits":
        train, test = _held_out(_class_folders(root / "Dataset"), 0.2)
        return Split(train, test, "stratified 20% held out (seed 0)")
    # clothing: its test/ split held out; 1,000 of train + validation, stratified, to keep the set small
    pool = _class_folders(root / "train") + _class_folders(root / "validation")
    from sklearn.model_selection import train_test_split

    train, _ = train_test_split(pool, train_size=1000, stratify=[c for _, c in pool], random_state=0)
    return Split(sorted(train), _class_folders(root / "test"), "its own test/ split; 1,000 of train+validation")


def default_sources() -> dict[str, Path]:
    base = os.environ.get("QUALITY_SOURCES")
    out = {}
    for name, (repo, _) in GIT_SOURCES.items():
        owner, repo_name = repo.split("/")
        out[name] = Path(base) / repo_name if base else Path("/work/.mirror") / f"{owner}+{repo_name}" / "repo"
    return out


def build(split: Split, root: Path) -> tuple[Path, Path, Path]:
    """The competition folder comp reads (data/train/<class>/*, a flat data/test/), the held-out answers CSV and the
    same test images in class folders for the plain script's ImageFolder. Files are copied (small sets)."""
    if root.exists():
        shutil.rmtree(root)
    data, plain_test = root / "data", root / "plain_test"
    for i, (src, label) in enumerate(split.train):
        dst = data / "train" / label / f"{i:05d}{src.suffix.lower()}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    (data / "test").mkdir(parents=True)
    answers = root / "answers.csv"
    with answers.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label"])
        for i, (src, label) in enumerate(split.test):
            name = f"t{i:05d}{src.suffix.lower()}"
            shutil.copyfile(src, data / "test" / name)
            (plain_test / label).mkdir(parents=True, exist_ok=True)
            os.link(data / "test" / name, plain_test / label / name)
            writer.writerow([name, label])
    return data, answers, plain_test


def native_side(paths: list[Path]) -> int:
    from PIL import Image

    sides = []
    for p in paths[:: max(1, len(paths) // 200)]:
        with Image.open(p) as im:
            sides.append(min(im.size))
    return int(min(224, max(64, statistics.median(sides) // 32 * 32)))


# ----------------------------------------------------------------------------------------------------- the arms


def _pinned(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None else []


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COMP_WORKSPACE"}
    path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=path, PYTHONWARNINGS="ignore", COLUMNS="200")
    return env


def comp_arm(root: Path, data: Path, answers: Path, seconds: float, core: int | None, log: Path) -> dict:
    """init -> folds -> train --budget -> stack; accuracy of the stack's submission on the held-out answers."""
    ws = root / "ws"
    ws.mkdir()
    start = time.perf_counter()
    comp = [*_pinned(core), sys.executable, "-m", "comp"]
    with log.open("w") as out:
        def run(*args: str) -> int:
            out.write(f"\n$ comp {' '.join(args)}\n")
            out.flush()
            return subprocess.run([*comp, *args], cwd=ws, env=_env(), stdout=out, stderr=subprocess.STDOUT).returncode

        steps = [("init", str(data), "--platform", "none", "--name", root.parent.name), ("folds",)]
        budget = None
        for args in [*steps, ("train",), ("stack", "--name", "quality")]:
            if args == ("train",):
                budget = max(30, int(seconds - (time.perf_counter() - start) - STACK_RESERVE_S))
                args = ("train", "--model", "effnet-lite0", "--budget", f"{budget}s")
            if run(*args):
                out.flush()
                errors = [line for line in log.read_text().splitlines() if line.startswith("error")]
                return {"accuracy": None, "seconds": time.perf_counter() - start,
                        "error": f"comp {args[0]} failed: {errors[-1][:300] if errors else 'see ' + str(log)}"}
    took = time.perf_counter() - start
    truth = dict(_read_csv(answers))
    predicted = dict(_read_csv(ws / "submissions" / "quality.csv"))
    # The sample comp init writes (none ships with these sets) names a test image by its file name without the
    # extension; the answers name the file: match on either, or every row scores wrong.
    found = [predicted.get(k, predicted.get(Path(k).stem)) for k in truth]
    if any(p is None for p in found):  # a format mismatch must not read as a wrong answer
        missing = sum(p is None for p in found)
        return {"accuracy": None, "seconds": took, "error": f"{missing} held-out ids missing from the submission"}
    accuracy = sum(p == v for p, v in zip(found, truth.values(), strict=True)) / len(truth)
    return {"accuracy": accuracy, "seconds": took, "plan": plan_text(log)}


def plan_text(log: Path) -> str:
    """The plan comp printed: its chosen line and its `plan:` summary."""
    lines = [line.strip() for line in log.read_text().splitlines()]
    plan = [line for line in lines if "<- chosen" in line or line.startswith("plan:")]
    return " / ".join(" ".join(line.split()) for line in plan[:2])[:300]


def _read_csv(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return [(r[0], r[1]) for r in rows[1:]]


def plain_cmd(root: Path, data: Path, plain_test: Path, seconds: float, side: int, core: int | None) -> list[str]:
    return [*_pinned(core), sys.executable, str(REPO / "bench" / "plain_timm.py"), str(data / "train"),
            str(plain_test), "--seconds", str(seconds), "--size", str(side), "--out", str(root / "plain.json")]


def run_pair(name: str, split: Split, minutes: float, work: Path, pin: bool) -> Row:
    root = work / name / f"T{minutes:g}"
    data, answers, plain_test = build(split, root)
    side = native_side([p for p, _ in split.train])
    seconds = minutes * 60
    cores = sorted(os.sched_getaffinity(0)) if pin and shutil.which("taskset") else []
    plain_core, comp_core = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    load_before = os.getloadavg()[0]
    with (root / "plain.log").open("w") as plain_log:
        plain = subprocess.Popen(plain_cmd(root, data, plain_test, seconds, side, plain_core), env=_env(),
                                 stdout=plain_log, stderr=subprocess.STDOUT)
        comp = comp_arm(root, data, answers, seconds, comp_core, root / "comp.log")
        plain.wait()
    load_after = os.getloadavg()[0]
    plain_result = json.loads((root / "plain.json").read_text()) if plain.returncode == 0 else {}
    classes = len({c for _, c in split.train})
    return Row(
        set=name, minutes=minutes, n_train=len(split.train), n_test=len(split.test), classes=classes,
        comp_accuracy=comp["accuracy"], comp_seconds=comp["seconds"], comp_plan=comp.get("plan", comp.get("error", "")),
        plain_accuracy=plain_result.get("accuracy"), plain_seconds=plain_result.get("seconds", 0.0),
        plain_epochs=plain_result.get("epochs", 0), plain_size=side,
        load=f"1-min load {load_before:.1f} before, {load_after:.1f} after", note=split.note,
        extra={"pinned": plain_core is not None, "plain_error": "" if plain_result else f"exit {plain.returncode}"},
    )


# ----------------------------------------------------------------------------------------------------- the report


def section(rows: list[dict]) -> list[str]:
    """The BENCHMARKS.md section (bench/__main__.render calls it with the stored rows)."""
    lines = ["## quality (`make bench-quality`: `python -m bench.quality`)", "",
             " ".join((__doc__ or "").split("\n\n")[0].split()), "",
             "Both arms at once, each pinned to its own core with one torch thread (see bench/quality.py); "
             "accuracy on a held-out labelled test split neither arm trains on. Each arm's own wall time is "
             "given beside its score: the plain script always trains at least one epoch, which can run past T.", "",
             "| set | train / test images, classes | T | comp `--budget T` + stack | plain timm script | "
             "difference | comp plan | measured |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["minutes"], r["set"])):
        comp = f"{r['comp_accuracy']:.3f} in {r['comp_seconds'] / 60:.1f} min" if r["comp_accuracy"] is not None \
            else "no submission (see the plan column)"
        epochs = f"{r['plain_epochs']} epoch{'s' if r['plain_epochs'] != 1 else ''}"
        plain = (f"{r['plain_accuracy']:.3f} in {r['plain_seconds'] / 60:.1f} min ({epochs} at "
                 f"{r['plain_size']} px)") if r["plain_accuracy"] is not None else "failed"
        diff = (f"{100 * (r['comp_accuracy'] - r['plain_accuracy']):+.1f} pt"
                if r["comp_accuracy"] is not None and r["plain_accuracy"] is not None else "-")
        lines.append(f"| {r['set']} | {r['n_train']} / {r['n_test']}, {r['classes']} ({r['note']}) | "
                     f"{r['minutes']:g} min | {comp} | {plain} | {diff} | {r['comp_plan']} | "
                     f"{r['measured']}; {r['load']} |")
    lines.append("")
    for minutes in sorted({r["minutes"] for r in rows}):
        pairs = [r for r in rows if r["minutes"] == minutes and r["comp_accuracy"] is not None
                 and r["plain_accuracy"] is not None]
        if pairs:
            mean = statistics.mean(100 * (r["comp_accuracy"] - r["plain_accuracy"]) for r in pairs)
            wins = sum(r["comp_accuracy"] >= r["plain_accuracy"] for r in pairs)
            at_t = [r for r in rows if r["minutes"] == minutes]
            failed = [r["set"] for r in at_t if r["comp_accuracy"] is None]
            lines.append(f"- T = {minutes:g} min: mean difference comp - plain **{mean:+.2f} points** over "
                         f"{len(pairs)} set(s) where both scored; comp >= plain on {wins} of {len(pairs)}"
                         + (f"; comp made no submission on {len(failed)} of {len(at_t)} ({', '.join(failed)})"
                            if failed else "") + ".")
    licences = ", ".join(f"{n}: github.com/{repo} ({lic})" for n, (repo, lic) in GIT_SOURCES.items())
    lines += [f"- Fetched sets and licences: {licences}; the shared sets are described in ../shared/data/*/README*.",
              ""]
    return lines


def write_rows(new: list[Row]) -> None:
    from bench.__main__ import REPORT, load_previous, render
    from comp.core import atomic

    data = load_previous()
    data.setdefault("modules", {})
    stored = {(r["set"], r["minutes"]): r for r in data.get("quality", {}).get("rows", [])}
    info = machine()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    for row in new:
        stored[(row.set, row.minutes)] = {**asdict(row), "measured": f"{info['date']}, {info['cores']} cores, "
                                          f"commit {commit}"}
    data["quality"] = {"rows": list(stored.values())}
    atomic.write_text(REPORT, render(data))
    print(f"wrote {REPORT}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, from {', '.join(SETS)}")
    parser.add_argument("--times", default="3,5,8", help="wall times T in minutes, comma-separated")
    parser.add_argument("--source", action="append", default=[], help="NAME=PATH of a git set's clone")
    parser.add_argument("--work", default=os.environ.get("QUALITY_WORK", "/tmp/comp-quality"),
                        help="scratch folder for the built competitions and logs")
    parser.add_argument("--no-write", action="store_true", help="print the rows, leave BENCHMARKS.md alone")
    parser.add_argument("--no-pin", action="store_true", help="do not pin each arm to its own core")
    parser.add_argument("--quick", action="store_true", help="smoke test: cifar10-kaggle-small, T = 1 min, no write")
    args = parser.parse_args(argv)
    if args.quick:
        args.sets, args.times, args.no_write = "cifar10-kaggle-small", "1", True
    sources = default_sources()
    for item in args.source:
        key, _, value = item.partition("=")
        if key not in GIT_SOURCES or not value:
            parser.error(f"--source {item!r}: write NAME=PATH with NAME one of {', '.join(GIT_SOURCES)}")
        sources[key] = Path(value)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for minutes in (float(t) for t in args.times.split(",")):
        for name in args.sets.split(","):
            try:
                split = load_set(name, sources, work)
            except FileNotFoundError as err:
                print(f"skipped: {err}", flush=True)
                continue
            print(f"{name}: {len(split.train)} train / {len(split.test)} held-out images, "
                  f"{dict(Counter(c for _, c in split.train)).__len__()} classes; T = {minutes:g} min", flush=True)
            row = run_pair(name, split, minutes, work, pin=not args.no_pin)
            rows.append(row)
            print(json.dumps(asdict(row)), flush=True)
            if not args.no_write:
                write_rows([row])  # after each pair, so an interrupted run keeps what it measured
    return 0 if all(r.comp_accuracy is not None and r.plain_accuracy is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
