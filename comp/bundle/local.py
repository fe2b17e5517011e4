"""`comp bundle NAME --run-local`: run the kernel as Kaggle would, in a fresh process, and compare its submission
with `submissions/NAME.csv`.

Under `bundles/NAME/local-run/` it builds:
  kaggle/input/<competition>   the competition's files (a symlink to data_dir; a variant test set for `variant`)
  kaggle/input/<dataset>       the bundle's dataset/ (a symlink)
  kaggle/working/              empty; the kernel's cwd, where submission.csv must appear
  venv/                        a fresh virtual environment; the notebook's own install cell puts the bundle's
                               wheels (comp, timm, ttach, tomli-w, tomli) into it with --no-index --no-deps
  image/                       the stand-in for Kaggle's image: links to this environment's packages (or, with
                               `python=`, those of another interpreter or venv) *minus* comp and the bundled ones,
                               so those can only come from the wheels
  home/, tmp/                  an empty HOME (no Kaggle credentials reachable) and TMPDIR

What is isolated and what is not: comp, timm, ttach, tomli-w and tomli are importable only from the wheels (the
kernel records `comp.__file__`, and the run fails unless it lies in venv/); the process starts with only the
notebook's environment variables; every IPv4/IPv6 socket connection and name lookup raises (a start-up hook in
venv/), and each attempt is logged to `network.log`, which fails the run even when the code caught the error. Not
isolated: torch, numpy and the other packages come from this machine's environment standing in for Kaggle's image
(installing torch offline into a fresh venv is impossible here), or from the interpreter given as `python`
(`--python PATH`: a venv with, say, Python 3.10 or 3.12, numpy 1.26, pandas 2.2 and scikit-learn 1.2, to rehearse an
older image), the file system outside the layout is readable, and Unix sockets (local IPC, which a Kaggle session
also has) are allowed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from comp.bundle import notebook
from comp.core import atomic
from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace
from comp.kinds import kind_of
from comp.setup.scan import file_for

TOLERANCE = 1e-5  # probabilities may differ by this much (BN folding and batch shapes change float rounding)

OFFLINE = '''\
"""comp bundle --run-local: no network, as in a Kaggle code-competition session (internet off)."""
import os
import socket

_LOG = os.environ.get("COMP_NETWORK_LOG", "")
_REAL_CONNECT = socket.socket.connect


def _refuse(what, target):
    if _LOG:
        with open(_LOG, "a") as fh:
            fh.write(f"{what} {target!r}\\n")
    raise OSError(f"network access is disabled in this kernel (internet off): {what} {target!r}")


def _connect(self, address, *args):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refuse("connect", address)
    return _REAL_CONNECT(self, address, *args)


def _connect_ex(self, address):
    _connect(self, address)
    return 0


def _getaddrinfo(host, *args, **kwargs):
    _refuse("getaddrinfo", host)


socket.socket.connect = _connect
socket.socket.connect_ex = _connect_ex
socket.getaddrinfo = _getaddrinfo
socket.gethostbyname = lambda host: _refuse("gethostbyname", host)
'''


@dataclass
class LocalRun:
    submission: Path
    seconds: float  # wall time of the fresh process (install + prediction)
    per_image_s: float  # the kernel's own measure of prediction time per image
    n_rows: int
    max_abs_diff: float  # largest probability difference against the reference, on shared ids
    compared: int  # ids compared with the reference
    extra_ids: list[str] = field(default_factory=list)  # ids the test set had that the reference did not
    missing_ids: list[str] = field(default_factory=list)  # reference ids the test set lacked
    log: str = ""
    versions: dict = field(default_factory=dict)  # python and the main packages' versions the kernel ran with


def run_local(comp: Competition, ws: Workspace, name: str, variant: bool = False, timeout: float = 3600.0,
              say=print, python: str | os.PathLike | None = None) -> LocalRun:
    """Run the bundle's notebook in a fresh process on a Kaggle-like layout and compare with submissions/NAME.csv.

    With `variant`, the competition folder holds a test set with some of the local test images left out and
    training images added as new test ids (with a sample to match), to show the kernel follows the test set given.
    `python`: the interpreter whose packages stand in for Kaggle's image (default: this one)."""
    paths = ws.bundle(name)
    if not paths.manifest.is_file():
        raise CompError(f"no bundle {name!r} ({paths.manifest}); build it first: `comp bundle {name}`")
    manifest = json.loads(paths.manifest.read_text(encoding="utf-8"))
    reference = ws.submission_csv(name)
    if not reference.is_file():
        raise CompError(f"{reference} is missing; re-run `comp stack --name {name}` to compare against it")
    root = paths.local_run / ("variant" if variant else "same")
    if root.exists():
        shutil.rmtree(root)
    input_dir, working = root / "kaggle" / "input", root / "kaggle" / "working"
    working.mkdir(parents=True)
    dataset_slug = json.loads(paths.dataset_metadata.read_text(encoding="utf-8"))["id"].split("/")[1]
    (input_dir).mkdir(parents=True)
    os.symlink(paths.dataset.resolve(), input_dir / dataset_slug, target_is_directory=True)
    removed, added = [], []
    if variant:
        removed, added = _variant_competition(ws, comp, manifest, input_dir / comp.name)
    else:
        os.symlink(ws.path(comp.data_dir).resolve(), input_dir / comp.name, target_is_directory=True)

    base = base_interpreter(python)
    python = _fresh_venv(root, manifest, base)
    nb = json.loads(next(paths.kernel.glob("*.ipynb")).read_text(encoding="utf-8"))
    script = root / "notebook.py"
    atomic.write_text(script, "\n\n".join(notebook.code_cells(nb)))
    env = _kernel_env(root, input_dir, working, python)
    say(f"running the kernel in a fresh process ({python}, packages of {base.executable}: Python {base.version}), "
        f"input {input_dir}, no network...")
    t0 = time.perf_counter()
    try:
        result = subprocess.run([str(python), str(script)], cwd=working, env=env, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CompError(f"the local kernel run took more than {timeout:g} s and was stopped") from None
    seconds = time.perf_counter() - t0
    log = (result.stdout or "") + (result.stderr or "")
    atomic.write_text(root / "kernel.log", log)
    network = root / "network.log"
    if network.is_file() and network.read_text().strip():
        raise CompError(f"the kernel tried to reach the network, which Kaggle's offline run forbids: "
                        f"{network.read_text().strip().splitlines()[0]} (all attempts: {network})")
    if result.returncode != 0:
        tail = "\n".join(log.strip().splitlines()[-15:])
        raise CompError(f"the kernel failed (exit {result.returncode}); the last lines of {root / 'kernel.log'}:\n"
                        f"{tail}")
    report = json.loads((working / "comp-kernel.json").read_text(encoding="utf-8"))
    _require_wheel_comp(report, root)
    submission = working / "submission.csv"
    diff, compared = compare(comp, submission, reference, expect_ids=None if not variant else
                             _expected_ids(reference, comp, removed, added))
    copy = paths.local_run / ("submission-variant.csv" if variant else "submission.csv")
    atomic.write_bytes(copy, submission.read_bytes())
    return LocalRun(copy, seconds, float(report["per_image_s"]), int(report["n_images"]), diff, compared,
                    added, removed, log, dict(report.get("versions") or {}))


def verify_bundle(comp: Competition, ws: Workspace, name: str, say=print, done=None,
                  python: str | os.PathLike | None = None) -> list[LocalRun]:
    """Both local runs (the local test set, then the variant with images left out and added), each handed to
    `done(variant, run)` as it ends; when both pass, `local-run/passed.json` records the dataset's content hash,
    which `comp submit --kernel` requires."""
    from comp.bundle.build import dataset_hash

    runs = []
    for variant in (False, True):
        runs.append(run_local(comp, ws, name, variant=variant, say=say, python=python))
        if done is not None:
            done(variant, runs[-1])
    same = runs[0]
    paths = ws.bundle(name)
    if paths.record.is_file():  # the whole local test set in a fresh process: a better time per image than the sample
        record = json.loads(paths.record.read_text(encoding="utf-8"))
        estimate = same.per_image_s * int(record.get("n_test") or same.n_rows)
        atomic.write_json(paths.record, {**record, "local_run_s": round(same.seconds, 2),
                                         "local_run_per_image_s": same.per_image_s, "local_run_estimate_s": estimate})
        limit = float(record.get("time_limit_h") or 9.0)
        if estimate > limit * 3600:
            say(f"[yellow]warning:[/] the local run predicted at {1000 * same.per_image_s:.1f} ms/image: about "
                f"{estimate / 3600:.1f} h for {record.get('n_test')} test images, over the {limit:g} h limit")
    atomic.write_json(ws.bundle(name).local_run / "passed.json", {
        "dataset_hash": dataset_hash(ws.bundle(name)), "compared": same.compared, "max_abs_diff": same.max_abs_diff,
        "seconds": round(same.seconds, 2), "per_image_s": same.per_image_s, "versions": same.versions,
        "variant": {"rows": runs[1].n_rows, "extra": runs[1].extra_ids, "missing": runs[1].missing_ids},
    })
    return runs


def compare(comp: Competition, produced: Path, reference: Path, expect_ids: list[str] | None = None,
            tolerance: float = TOLERANCE) -> tuple[float, int]:
    """Check `produced` against `reference` on their shared ids: the same labels and probabilities within
    `tolerance`; the ids must be the reference's (or `expect_ids`). Returns (largest difference, ids compared)."""
    mine = pd.read_csv(produced, dtype=str, keep_default_na=False)
    ref = pd.read_csv(reference, dtype=str, keep_default_na=False)
    if list(mine.columns) != list(ref.columns):
        raise CompError(f"{produced} has columns {list(mine.columns)}, {reference} has {list(ref.columns)}")
    id_col = comp.id_column
    want = list(ref[id_col]) if expect_ids is None else expect_ids
    if sorted(mine[id_col]) != sorted(want):
        extra = sorted(set(mine[id_col]) - set(want))[:3]
        lacking = sorted(set(want) - set(mine[id_col]))[:3]
        raise CompError(f"{produced} has other ids than expected (extra {extra}, missing {lacking})")
    shared = mine.merge(ref, on=id_col, suffixes=("", "_ref"))
    worst = 0.0
    for col in (c for c in mine.columns if c != id_col):
        if kind_of(comp).numeric:
            delta = np.abs(shared[col].astype(float).to_numpy() - shared[f"{col}_ref"].astype(float).to_numpy())
            worst = max(worst, float(delta.max(initial=0.0)))
        else:
            differ = shared[shared[col] != shared[f"{col}_ref"]]
            if len(differ):
                row = differ.iloc[0]
                raise CompError(f"{produced}: id {row[id_col]!r} has {col} {row[col]!r}, {reference} has "
                                f"{row[f'{col}_ref']!r} ({len(differ)} row(s) differ)")
    if worst > tolerance:
        raise CompError(f"{produced}: probabilities differ from {reference} by up to {worst:.2e} (> {tolerance:g})")
    return worst, len(shared)


def _variant_competition(ws: Workspace, comp: Competition, manifest: dict, target: Path) -> tuple[list, list]:
    """A copy of the competition folder (links) whose test set lacks the first third of the local test images
    and has three training images as new test ids, with a sample submission to match."""
    from comp.setup.items import test_items, train_items

    data = ws.path(comp.data_dir).resolve()
    rel = manifest["competition"]["relative"]
    test_dir, sample_rel = rel["test_dir"], rel["sample_submission"]
    # Every top-level entry linked, except those on the way to the test folder and the sample, rebuilt below.
    rebuilt = {Path(test_dir).parts[0], Path(sample_rel).parts[0]}
    target.mkdir(parents=True)
    for entry in data.iterdir():
        if entry.name not in rebuilt:
            os.symlink(entry, target / entry.name)
    test = test_items(comp, ws)
    n_drop = max(1, len(test) // 3)
    removed, kept = test.iloc[:n_drop], test.iloc[n_drop:]
    new_dir = target / test_dir
    new_dir.mkdir(parents=True, exist_ok=True)
    for _, row in kept.iterrows():
        link = file_for(new_dir, row["id"], comp.image_ext)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(row["path"], link)
    train = train_items(comp, ws)
    added = []
    ext = Path(str(kept["path"].iloc[0])).suffix if len(kept) else comp.image_ext
    for i, (_, row) in enumerate(train.head(3).iterrows()):
        new_id = f"extra_{i}" + (ext if comp.id_has_extension else "")
        os.symlink(row["path"], file_for(new_dir, new_id, comp.image_ext or ext))
        added.append(new_id)
    sample = pd.read_csv(ws.path(comp.sample_submission), dtype=str, keep_default_na=False)
    sample = sample[~sample[comp.id_column].isin(set(removed["id"]))]
    template = sample.iloc[[0] * len(added)].copy()
    template[comp.id_column] = added
    sample_path = target / sample_rel
    sample_path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(sample_path, pd.concat([sample, template]).to_csv(index=False, lineterminator="\n").encode())
    return list(removed["id"]), added


def _expected_ids(reference: Path, comp: Competition, removed: list[str], added: list[str]) -> list[str]:
    ids = pd.read_csv(reference, dtype=str, keep_default_na=False)[comp.id_column]
    return [i for i in ids if i not in set(removed)] + added


@dataclass(frozen=True)
class Interpreter:
    executable: str
    version: str  # e.g. "3.12.1"
    site_dirs: tuple[str, ...]  # where its packages live (purelib, platlib, site-packages), first wins


_PROBE = ("import json, site, sys, sysconfig; p = sysconfig.get_paths(); "
          "print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], 'executable': sys.executable, "
          "'dirs': [p['purelib'], p['platlib'], *site.getsitepackages()]}))")


def base_interpreter(python: str | os.PathLike | None = None) -> Interpreter:
    """The interpreter whose packages stand in for Kaggle's image: `python` (a path, or a command on PATH), else
    this one. Refused when it cannot run or is older than the kernel supports (Python 3.10)."""
    exe = str(python) if python else sys.executable
    if python and os.sep not in exe:
        exe = shutil.which(exe) or exe
    if not Path(exe).is_file() or not os.access(exe, os.X_OK):
        raise CompError(f"--python {python}: no such interpreter; give the path of a python executable, e.g. "
                        ".venv-kaggle/bin/python")
    try:
        probe = subprocess.run([exe, "-c", _PROBE], capture_output=True, text=True, timeout=60)
        info = json.loads(probe.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        raise CompError(f"--python {python}: could not run it as a Python interpreter") from None
    if tuple(int(x) for x in info["version"].split(".")[:2]) < (3, 10):
        raise CompError(f"--python {python} is Python {info['version']}; the kernel needs Python 3.10 or newer "
                        "(the oldest on Kaggle's images of the last two years)")
    dirs = tuple(dict.fromkeys(d for d in info["dirs"] if Path(d).is_dir()))
    return Interpreter(exe, info["version"], dirs)


def _fresh_venv(root: Path, manifest: dict, base: Interpreter) -> Path:
    """venv/ made from `base`, with the stand-in image (its packages) on its path and the network blocked; returns
    its python."""
    venv = root / "venv"
    # No pip of its own: the notebook's `python -m pip` finds the stand-in image's, as a Kaggle session finds the
    # image's, and installs into this venv.
    made = subprocess.run([base.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        raise CompError(f"could not make a virtual environment with {base.executable} "
                        f"({(made.stderr or made.stdout).strip()[-300:]}); on Debian/Ubuntu install its venv package")
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip())
    image = root / "image"
    _stand_in_image(image, {p for w in manifest["wheels"] for p in w["packages"]},
                    {w["name"] for w in manifest["wheels"]}, [Path(d) for d in base.site_dirs])
    # A plain path line (not `import site`): the stand-in comes after venv's own site-packages, where the
    # notebook installs the wheels, so those win.
    (site / "kaggle-image.pth").write_text(f"{image}\n")
    # An `import` line of a .pth file runs at start-up whatever sitecustomize the base Python ships (Debian's would
    # shadow ours); "00-" sorts it before every other .pth.
    (site / "comp_offline.py").write_text(OFFLINE)
    (site / "00-comp-offline.pth").write_text("import comp_offline\n")
    return venv / "bin" / "python"


def _stand_in_image(image: Path, packages: set[str], dists: set[str], sources: list[Path]) -> None:
    """Links to every entry of the image's site-packages folders except the bundled packages and comp itself."""
    hidden_dists = {d.lower().replace("-", "_") for d in dists}
    image.mkdir(parents=True)
    for source in sources:
        for entry in sorted(source.iterdir()):
            lowered = entry.name.lower()
            dist = lowered.split("-")[0] if lowered.endswith((".dist-info", ".egg-info")) else ""
            if (entry.name in packages or dist in hidden_dists or lowered.startswith("__editable__")
                    or lowered.endswith(".pth") or entry.name == "comp_offline.py"
                    or (image / entry.name).exists() or (image / entry.name).is_symlink()):
                continue
            os.symlink(entry, image / entry.name)


def _kernel_env(root: Path, input_dir: Path, working: Path, python: Path) -> dict[str, str]:
    """Only what a kernel process would have: no credentials, no workspace, a fresh HOME and TMPDIR."""
    home, tmp = root / "home", root / "tmp"
    home.mkdir()
    tmp.mkdir()
    keep = {k: os.environ[k] for k in ("LANG", "LC_ALL", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES") if k in os.environ}
    return {**keep, "PATH": f"{python.parent}:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(tmp),
            "COMP_KAGGLE_INPUT": str(input_dir), "COMP_KAGGLE_WORKING": str(working),
            "COMP_NETWORK_LOG": str(root / "network.log"), "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull,
            "PYTHONNOUSERSITE": "1", "MPLBACKEND": "Agg", "KAGGLE_KERNEL_RUN_TYPE": "Batch"}


def _require_wheel_comp(report: dict, root: Path) -> None:
    where = Path(report.get("comp_file", ""))
    if (root / "venv") not in where.parents:
        raise CompError(f"the kernel imported comp from {where}, not from the bundle's wheel in {root / 'venv'}; "
                        "the local run is not isolated")
