"""What made an artifact: content hashes and the code version, so later stages can refuse stale inputs by name."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import comp


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_obj(obj: Any) -> str:
    """Hash of a JSON-able object in canonical form (sorted keys), e.g. a resolved recipe or comp.toml."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


@cache
def code_version() -> str:
    """`<package version>+<git short sha>[.dirty]` when in a git checkout, else `<version>+src.<hash of sources>`."""
    pkg = Path(comp.__file__).parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(pkg), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if sha.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(pkg), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=5
            )
            return f"{comp.__version__}+{sha.stdout.strip()}{'.dirty' if dirty.stdout.strip() else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        h.update(f.read_bytes())
    return f"{comp.__version__}+src.{h.hexdigest()[:10]}"


# comp.toml fields that decide what a model learns and predicts. Edits to the others (metric, platform, the
# submission's spelling, local answers) leave trained logits valid, so they must not force a retrain.
_IDENTITY_FIELDS = (
    "name", "data_dir", "layout", "train_dirs", "labels_csv", "labels_header", "train_id_column", "train_label_column",
    "image_ext", "test_dir", "id_column", "id_has_extension", "classes",
)


# Identity fields added later: hashed only when set, so workspaces that do not use them keep their hash (and their
# trained models stay valid).
_IDENTITY_FIELDS_WHEN_SET = ("train_label_columns", "label_pattern", "class_depth", "train_subfolders")


def competition_hash(comp) -> str:
    """Hash of the competition's identity (its data and classes), recorded by training and checked by every later
    stage: logits made for another competition, or before its classes or data files were changed, are refused."""
    fields = dataclasses.asdict(comp)
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(comp) if f.name in _IDENTITY_FIELDS_WHEN_SET}
    identity = {name: fields[name] for name in _IDENTITY_FIELDS}
    identity |= {name: fields[name] for name in _IDENTITY_FIELDS_WHEN_SET if fields[name] != defaults[name]}
    return sha256_obj(identity)
