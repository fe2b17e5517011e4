"""`comp bundle NAME`: a stack written by `comp stack --name NAME` as an offline Kaggle code-competition submission.

Writes `bundles/NAME/`:
  dataset/    uploaded as a Kaggle dataset: every fold's best weights and resolved recipe (models/<alias>/fold<k>/),
              the wheels (comp's own and those a Kaggle image lacks, `comp.bundle.wheels`), and `comp-bundle.json`,
              the manifest the kernel reads: models with each fold's TTA, the fitted blend's parameters, the
              competition description (classes, submission labels, kind, id rules, where the test images and the
              sample sit relative to the competition's files) and the wheels with name, version and sha256;
              plus `dataset-metadata.json`.
  kernel/     the notebook (installs the wheels with --no-index --no-deps, then runs `comp.bundle.kernel`) and
              `kernel-metadata.json`: internet off, private, GPU by flag, the competition and the dataset as sources.
  bundle.json what was measured here: size, per-image inference time, the estimate for the test set, the dataset's
              content hash (the manifest and files only, so an unchanged bundle has an unchanged hash).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from comp import logits
from comp.core import atomic
from comp.core.config import Competition, to_dict
from comp.core.errors import CompError
from comp.core.provenance import sha256_file
from comp.core.workspace import FULL, BundlePaths, Workspace
from comp.ensemble.stack import StackRecord, read_record
from comp.platforms.base import safe_name
from comp.runs import LogitsMeta, require_current

DEFAULT_TIME_LIMIT_H = 9.0  # Kaggle's usual runtime limit for a code competition's notebook
TIMED_IMAGES = (8, 32)  # two runs on this many local test images: their difference is the cost per image, the rest
# the fixed cost of a run (building every fold's model), which a per-image mean of one short run would inflate
OWNER_PLACEHOLDER = "your-kaggle-username"


@dataclass
class BundleResult:
    name: str
    paths: BundlePaths
    size_bytes: int
    dataset_hash: str
    per_image_s: float | None  # measured here on `device`
    fixed_s: float | None  # the part of a run that does not grow with the images (models built, probed)
    device: str
    n_test: int  # the test set size the estimate is for
    estimate_s: float | None
    dataset_slug: str  # owner/slug
    kernel_slug: str  # owner/slug
    warnings: list[str] = field(default_factory=list)


def latest_stack(ws: Workspace) -> str:
    """The name of the newest stack sidecar under submissions/ (`comp stack --name NAME` writes NAME.json)."""
    sidecars = [p for p in ws.submissions_dir.glob("*.json") if ws.submission_csv(p.stem).is_file()]
    if not sidecars:
        raise CompError(f"no stack in {ws.submissions_dir}: run `comp stack --name NAME`, then `comp bundle NAME`")
    return max(sidecars, key=lambda p: p.stat().st_mtime).stem


def read_stack(ws: Workspace, name: str) -> dict[str, Any]:
    """The complete stack `name` (its record and the CSV it names: `comp.ensemble.stack.read_record`), as a dict."""
    record = read_record(ws, name, complete=True)
    if not record.params or not record.models:
        raise CompError(
            f"{ws.submission_json(name)} does not hold the fitted blend's parameters (written by an older comp); "
            f"re-run `comp stack --name {name} --models {','.join(record.models) or 'A,B'} --force`"
        )
    return record.to_dict()


def slugs(comp: Competition, name: str, owner: str) -> tuple[str, str]:
    """(dataset slug, kernel slug), each owner/slug: Kaggle wants 6-50 lowercase letters, digits and dashes."""
    def slug(text: str) -> str:
        text = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:50].strip("-")
        return text if len(text) >= 6 else (text + "-comp-bundle")[:50]
    return f"{owner}/{slug(f'{name}-{comp.name}-bundle')}", f"{owner}/{slug(f'{comp.name}-{name}-inference')}"


def describe_competition(comp: Competition, ws: Workspace) -> dict[str, Any]:
    """comp.toml plus where the test images and the sample sit relative to the competition's own files, which is
    how Kaggle mounts them (/kaggle/input/<slug>/...)."""
    if not comp.test_dir or not comp.sample_submission:
        raise CompError("comp.toml has no test_dir/sample_submission: a code competition's kernel predicts the test "
                        "set, so set both (or re-run `comp init`)")
    root = ws.path(comp.data_dir).resolve()
    relative = {}
    for key in ("test_dir", "sample_submission"):
        path = ws.path(getattr(comp, key)).resolve()
        try:
            relative[key] = path.relative_to(root).as_posix()
        except ValueError:
            raise CompError(
                f"comp.toml {key} = {getattr(comp, key)!r} is outside data_dir {comp.data_dir!r}; on Kaggle the "
                "kernel finds it only inside the competition's files, so point it at the competition's own file"
            ) from None
    return {"competition": to_dict(comp), "relative": relative}


def build_bundle(comp: Competition, ws: Workspace, name: str | None = None, *, gpu: bool = False, owner: str = "",
                 time_limit_h: float = DEFAULT_TIME_LIMIT_H, test_size: int | None = None, time_it: bool = True,
                 say=print) -> BundleResult:
    """Write bundles/NAME/ (see the module doc) for the stack `name` (default: the newest); returns what it measured."""
    from comp.bundle.kernel import versions as kernel_versions
    from comp.bundle.notebook import kernel_metadata, notebook
    from comp.bundle.wheels import build_wheels

    name = name or latest_stack(ws)
    safe_name(name, "stack name")
    sidecar = read_stack(ws, name)
    owner = owner or _default_owner()
    safe_name(owner, "Kaggle user name (--owner)")
    description = describe_competition(comp, ws)
    paths = ws.bundle(name)
    for stale in (paths.dataset, paths.kernel, paths.local_run):
        if stale.exists():
            shutil.rmtree(stale)

    models = [_copy_model(ws, comp, sidecar, alias, paths) for alias in sidecar["models"]]
    wheels = build_wheels(paths.wheels)
    dataset_slug, kernel_slug = slugs(comp, name, owner)
    manifest = {
        "format": 1,
        "name": name,
        "stack": {k: sidecar.get(k) for k in ("method", "cv", "metric", "folds_hash", "competition_hash",
                                               "csv_sha256")},
        "models": models,
        "params": sidecar["params"],
        "competition": description,
        "wheels": [w.as_dict() for w in wheels],
        "environment": kernel_versions(),  # where it was made; the kernel names what differs in Kaggle's image
    }
    atomic.write_json(paths.manifest, manifest)
    atomic.write_json(paths.dataset_metadata, {
        "title": dataset_slug.split("/")[1][:50], "id": dataset_slug, "licenses": [{"name": "CC0-1.0"}],
        "description": f"comp bundle {name}: weights, recipes, blend and wheels for {comp.name} (made by comp)",
    })
    # The dataset is complete here (manifest, weights, wheels): the notebook carries its content hash and refuses to
    # run on another version of the dataset (Kaggle mounts whichever version is attached).
    atomic.write_text(paths.kernel / f"{kernel_slug.split('/')[1]}.ipynb",
                      json.dumps(notebook(name, comp.name, [w.file for w in wheels], dataset_hash(paths)), indent=1))
    atomic.write_json(paths.kernel_metadata, kernel_metadata(kernel_slug, dataset_slug, comp.name, gpu))

    warnings = []
    if owner == OWNER_PLACEHOLDER:
        warnings.append(f"no Kaggle user name known: the slugs use {OWNER_PLACEHOLDER!r}; pass --owner NAME (or set "
                        "KAGGLE_USERNAME) before `comp submit --kernel`")
    per_image, fixed, device = (_time_per_image(ws, comp, paths, manifest, description) if time_it
                                else (None, None, ""))
    from comp.setup.items import test_items

    n_test = test_size if test_size is not None else len(test_items(comp, ws))
    estimate = fixed + per_image * n_test if per_image is not None else None
    if estimate is not None and estimate > time_limit_h * 3600:
        warnings.append(
            f"the kernel would need about {estimate / 3600:.1f} h for {n_test} test images ({1000 * per_image:.1f} "
            f"ms/image measured on {device}) but the limit is {time_limit_h:g} h: use fewer folds/models or a "
            "cheaper TTA, or a GPU (--gpu)"
        )
    size = sum(p.stat().st_size for p in paths.dataset.rglob("*") if p.is_file())
    digest = dataset_hash(paths)
    atomic.write_json(paths.record, {
        "name": name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "size_bytes": size,
        "dataset_hash": digest, "per_image_s": per_image, "fixed_s": fixed, "timed_on": device,
        "timed_images": list(TIMED_IMAGES),
        "n_test": n_test, "estimate_s": estimate, "time_limit_h": time_limit_h, "gpu": gpu,
        "dataset": dataset_slug, "kernel": kernel_slug, "warnings": warnings,
    })
    return BundleResult(name, paths, size, digest, per_image, fixed, device, n_test, estimate, dataset_slug,
                        kernel_slug,
                        warnings)


def dataset_hash(paths: BundlePaths) -> str:
    """sha256 over every dataset file's path and sha256 (dataset-metadata.json excluded: it only names the slug)."""
    from comp.bundle.kernel import content_hash

    return content_hash(paths.dataset)


def _default_owner() -> str:
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    try:
        from comp.platforms.kaggle import find_credential

        credential = find_credential()
    except CompError:
        credential = None
    return credential.username if credential is not None and credential.username else OWNER_PLACEHOLDER


def _copy_model(ws: Workspace, comp: Competition, sidecar: dict, alias: str, paths: BundlePaths) -> dict[str, Any]:
    """Copy the best weights and resolved recipe of each run whose test logits the stack averaged (every fold, the
    k of K a --budget plan trained, and the full fit when the stack used it: its record's `test_runs`); each run's
    TTA comes from its test logits (what the stack used), and the recipe hash must be the one the stack
    recorded."""
    folds = []
    runs = (sidecar.get("test_runs") or {}).get(alias) or list(range(comp.n_folds))
    for k in runs:
        run = ws.run(alias, k)
        where = f"model {alias!r} {'full fit' if k == FULL else f'fold {k}'}"
        for path in (run.best, run.recipe, run.test):
            if not path.is_file():
                raise CompError(f"{where}: {path} is missing; the stack {sidecar.get('name')!r} used it - retrain "
                                f"(`comp train --model {alias} --fold {k}`) and re-run `comp stack`")
        meta = _as_dict(logits.load(run.test).meta)
        # The one staleness check: this run's logits against the inputs the stack recorded for the model (a full
        # fit is trained with the folds' settings but its own recipe hash, so only its folds are compared).
        require_current(StackRecord.from_dict(sidecar).run(alias), LogitsMeta.from_dict(meta).run(), where,
                        f"Re-run `comp stack --name {sidecar.get('name')} --force` and bundle again",
                        fields=("folds_hash",) if k == FULL else ("recipe_hash", "folds_hash"), required=(),
                        then="when stacked", now="now")
        target = paths.dataset / "models" / alias / run.dir.name
        for src in (run.best, run.recipe):
            with atomic.atomic_path(target / src.name) as tmp:
                shutil.copyfile(src, tmp)
        folds.append({"fold": k, "tta": str(meta.get("tta", "none")), "merge": str(meta.get("tta_merge", "mean")),
                      "weights_sha256": sha256_file(run.best)})
    return {"alias": alias, "folds": folds}


def _as_dict(meta: Any) -> dict[str, Any]:
    """Logits metadata as a dict (a plain dict, or `comp.runs.LogitsMeta`)."""
    return dict(meta) if isinstance(meta, dict) else meta.to_dict()


def _time_per_image(ws: Workspace, comp: Competition, paths: BundlePaths, manifest: dict,
                    description: dict) -> tuple[float | None, float | None, str]:
    """(seconds per image, fixed seconds per run, device) of the kernel's whole prediction (decode, every fold of
    every model with its TTA), from two runs on TIMED_IMAGES local test images in scratch workspaces like the
    kernel's."""
    from comp.bundle import kernel
    from comp.core.device import resolve_device
    from comp.setup.items import test_items

    test = test_items(comp, ws)["path"].astype(str).tolist()
    if not test:
        return None, None, ""
    root = ws.path(comp.data_dir).resolve()
    local = kernel.competition_at(description, root)
    timings = []
    # An untimed run on one image first: the first pass pays one-off costs (lazy imports, allocator warm-up) that
    # the kernel pays once, not per run; measured, they made the estimate 2.5x too high on the demo.
    for n in [1, *sorted({min(n, len(test)) for n in TIMED_IMAGES})]:
        scratch = kernel.scratch_workspace(paths.dataset, manifest, root)
        try:
            t0 = time.perf_counter()
            kernel.predict_models(scratch, manifest, local, test[:n])
            timings.append((n, time.perf_counter() - t0))
        finally:
            shutil.rmtree(scratch.root, ignore_errors=True)
    (n1, t1), (n2, t2) = timings[1], timings[-1]
    per_image = (t2 - t1) / (n2 - n1) if n2 > n1 else 0.0
    if per_image <= 0:  # one size only, or noise larger than the images' cost: charge everything per image
        per_image, t1, n1 = t2 / n2, 0.0, 0
    return per_image, max(t1 - per_image * n1, 0.0), str(resolve_device("auto"))
