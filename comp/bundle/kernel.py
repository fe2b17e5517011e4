"""What the code-competition notebook runs, offline, on Kaggle's hidden test set: the bundle's models to a checked
`submission.csv`.

`run_kernel` finds the bundle (its `comp-bundle.json`) and the competition's files under the input folder at run
time (the hidden test set replaces the visible one: other ids, another size), and rebuilds a scratch workspace in
a temporary folder: the competition with its paths pointing at the input folder, `models/` linked to the bundle's
weights and resolved recipes. Each fold of each model then predicts through `comp.predict.fold_test_logits` (the
same cache, evaluation view and TTA as training and `comp predict`), folds are averaged as `comp stack` averages
them, the saved blend (`comp.ensemble.stack.from_params`) is applied, and the result goes through the same writer
and checker as `comp stack`. Any failure raises, so the notebook fails loudly instead of submitting a bad file.

Only the kernel's own output goes to the working folder: `submission.csv` and `comp-kernel.json` (timings, versions).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from comp.core import atomic
from comp.core.config import Competition, from_dict
from comp.core.errors import CompError
from comp.core.workspace import Workspace

MANIFEST = "comp-bundle.json"
KAGGLE_INPUT = "/kaggle/input"
KAGGLE_WORKING = "/kaggle/working"
REPORTED = ("torch", "torchvision", "timm", "ttach", "numpy", "scikit-learn", "pandas", "safetensors", "pillow")


def find_bundle(input_dir: Path, name: str = "") -> Path:
    """The folder under `input_dir` (at most three levels down) holding a comp-bundle.json, of bundle `name`."""
    found = []
    for depth in ("*", "*/*", "*/*/*"):
        for path in sorted(input_dir.glob(f"{depth}/{MANIFEST}")):
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if not name or manifest.get("name") == name:
                found.append(path.parent)
        if found:
            return found[0]
    raise CompError(
        f"no bundle {name or ''} ({MANIFEST}) under {input_dir}: add the bundle's dataset to the notebook as an input "
        "(`comp submit --kernel` sets it as a source)"
    )


def find_competition(input_dir: Path, slug: str, sample_rel: str) -> Path:
    """The competition's input folder: /kaggle/input/<slug> (or competitions/<slug>), else any folder up to three
    levels down holding the sample submission at its relative path."""
    for candidate in (input_dir / slug, input_dir / "competitions" / slug):
        if (candidate / sample_rel).is_file():
            return candidate
    for depth in ("*", "*/*", "*/*/*"):
        for folder in sorted(input_dir.glob(depth)):
            if (folder / sample_rel).is_file():
                return folder
    raise CompError(
        f"the competition's files are not under {input_dir}: no {slug}/{sample_rel}; add the competition "
        f"{slug!r} as a data source of the notebook"
    )


def competition_at(description: dict[str, Any], root: Path) -> Competition:
    """The bundled competition description with its test paths pointing at `root` (training files are not needed)."""
    fields = dict(description["competition"])
    rel = description["relative"]
    fields.update(data_dir=str(root), test_dir=str(root / rel["test_dir"]),
                  sample_submission=str(root / rel["sample_submission"]), train_dirs=[], labels_csv="",
                  test_answers="")
    return from_dict(Competition, fields, MANIFEST)


def scratch_workspace(bundle: Path, manifest: dict[str, Any], root: Path) -> Workspace:
    """A workspace in a temporary folder whose models/ are the bundle's (linked, read only) and whose caches are
    its own: the bundle's folder is read-only on Kaggle."""
    ws = Workspace(Path(tempfile.mkdtemp(prefix="comp-kernel-")))
    ws.models_dir.mkdir()
    for model in manifest["models"]:
        os.symlink(bundle / "models" / model["alias"], ws.model_dir(model["alias"]), target_is_directory=True)
    return ws


def predict_models(ws: Workspace, manifest: dict[str, Any], comp: Competition, paths: list[str],
                   device: str = "auto") -> list[np.ndarray]:
    """Each model's fold-averaged test logits (n, C) on `paths`, as `comp stack` averages the saved ones."""
    from comp.kinds import kind_of
    from comp.predict import fold_test_logits

    kind = kind_of(comp)  # TTA views merge as training merged them (per-class probabilities for multi-label)
    out = []
    for model in manifest["models"]:
        total = None
        for fold in model["folds"]:
            part = fold_test_logits(ws, model["alias"], fold["fold"], comp.num_classes, paths, fold["tta"],
                                    kind.merge(fold["merge"]), device)
            total = part.astype(np.float64) if total is None else total + part
        out.append((total / len(model["folds"])).astype(np.float32))
    return out


def blend_probabilities(manifest: dict[str, Any], comp: Competition, model_logits: list[np.ndarray]) -> np.ndarray:
    """The saved blend applied to the models' logits: probabilities (n, C), as `comp stack` computes them."""
    from comp.ensemble.stack import blend_probabilities as apply
    from comp.ensemble.stack import from_params

    return apply(comp, from_params(manifest["params"], comp.num_classes), model_logits)


def content_entries(folder: Path) -> list[tuple[str, str]]:
    """(relative path, sha256) of every file of a bundle's dataset, dataset-metadata.json excluded (not uploaded)."""
    from comp.core.provenance import sha256_file

    return sorted((p.relative_to(folder).as_posix(), sha256_file(p)) for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).as_posix() != "dataset-metadata.json")


def content_hash(folder: Path) -> str:
    """The dataset's content hash (`comp bundle` records it; the notebook checks the mounted dataset against it)."""
    from comp.core.provenance import sha256_bytes

    return sha256_bytes(json.dumps(content_entries(folder)).encode())


def require_content(bundle: Path, expected: str) -> None:
    """Refuse a mounted dataset whose content is not the one the notebook was built for."""
    found = content_hash(bundle)
    if found != expected:
        raise CompError(
            f"the dataset mounted at {bundle} has content {found[:12]}, but this notebook was built for "
            f"{expected[:12]}: Kaggle attached another version of the dataset (or its files were changed). Nothing "
            "was written. Attach the dataset's latest version, or rebuild and resubmit (`comp bundle NAME "
            "--run-local`, then `comp submit --kernel NAME`)"
        )


def run_kernel(input_dir: str | os.PathLike | None = None, working_dir: str | os.PathLike | None = None,
               name: str = "", device: str = "auto", say=print, dataset_hash: str = "") -> Path:
    """The notebook's body: bundle + competition input -> working/submission.csv, checked; returns its path.
    `dataset_hash`: the content the notebook was built for; another version of the dataset is refused."""
    from comp.setup.items import test_items
    from comp.submission.check import check_file
    from comp.submission.write import to_frame, write

    started = time.perf_counter()
    input_dir = Path(input_dir or os.environ.get("COMP_KAGGLE_INPUT") or KAGGLE_INPUT)
    working = Path(working_dir or os.environ.get("COMP_KAGGLE_WORKING") or KAGGLE_WORKING)
    bundle = find_bundle(input_dir, name)
    if dataset_hash:
        require_content(bundle, dataset_hash)
    manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    description = manifest["competition"]
    root = find_competition(input_dir, description["competition"]["name"], description["relative"]["sample_submission"])
    comp = competition_at(description, root)
    ws = scratch_workspace(bundle, manifest, root)
    here = versions()
    say(f"comp kernel: bundle {manifest['name']} from {bundle}, competition files from {root}")
    say("versions: " + ", ".join(f"{k} {v}" for k, v in here.items()))
    made = manifest.get("environment", {})
    differ = [f"{k} {here[k]} (bundle made with {made[k]})" for k in here if k in made and made[k] != here[k]]
    if differ:  # the models were trained and the stack checked with the bundle's versions
        say("note: this image differs from where the bundle was made: " + ", ".join(differ))
    test = test_items(comp, ws)
    if test.empty:
        raise CompError(f"{comp.sample_submission} lists no test ids; nothing to predict")
    paths = test["path"].astype(str).tolist()
    importlib.import_module("comp.predict")  # torch and timm load here, not inside the timed prediction

    t0 = time.perf_counter()
    model_logits = predict_models(ws, manifest, comp, paths, device)
    predict_s = time.perf_counter() - t0
    probs = blend_probabilities(manifest, comp, model_logits)
    frame = to_frame(comp, ws, test["id"].astype(str).tolist(), probs)
    written = write(comp, ws, "submission", frame)  # the writer checks before writing, as for `comp stack`
    target = working / "submission.csv"
    atomic.write_bytes(target, written.read_bytes())
    written.unlink()  # the check would call the scratch copy an identical earlier submission
    report = check_file(comp, ws, target)
    if report.errors:
        raise CompError(f"{target} failed the check: " + "; ".join(report.errors[:10]))
    for warning in report.warnings:
        say(f"warning: {warning}")
    record = {"bundle": manifest["name"], "n_images": len(paths), "predict_s": round(predict_s, 3),
              "per_image_s": predict_s / len(paths), "total_s": round(time.perf_counter() - started, 3),
              "versions": here, "comp_file": _comp_file(), "device": device, "imported": _imported()}
    atomic.write_json(working / "comp-kernel.json", record)
    say(f"wrote {target}: {len(frame)} rows, {len(manifest['models'])} model(s), {predict_s:.1f} s of prediction "
        f"({1000 * predict_s / len(paths):.1f} ms/image); the check passed")
    return target


def versions() -> dict[str, str]:
    """Python's and the main packages' versions in this environment."""
    found = {"python": platform.python_version()}
    for dist in REPORTED:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "missing"
    return found


def _imported() -> list[str]:
    """Top-level non-standard-library modules the run imported: what Kaggle's image must provide."""
    import sys

    return sorted(m for m in list(sys.modules) if "." not in m and not m.startswith("_")
                  and m not in sys.stdlib_module_names)


def _comp_file() -> str:
    import comp

    return str(Path(comp.__file__).resolve())
