"""The kernel's notebook and its kernel-metadata.json (the fields `kaggle kernels push` reads).

The notebook is thin on purpose: one cell installs the bundle's wheels with `--no-index --no-deps` (no network, and
the image's torch and the rest are never touched), the next calls `comp.bundle.kernel.run_kernel`, which is tested
code. Cells are plain Python (no `!pip` magics), so `--run-local` can run exactly these cells in a fresh interpreter.
"""

from __future__ import annotations

from typing import Any

INSTALL = '''\
# Install comp and the packages the image lacks from this bundle's wheels: no index (internet is off) and no
# dependency resolution, so the image's torch, numpy, scikit-learn... stay as they are.
import glob, importlib, json, os, subprocess, sys

BUNDLE_NAME = {name!r}
DATASET_HASH = {dataset_hash!r}  # the content this notebook was built for; the run refuses any other version
WHEELS = {wheels!r}
INPUT = os.environ.get("COMP_KAGGLE_INPUT", "/kaggle/input")
manifests = [m for depth in ("*", "*/*", "*/*/*")
             for m in sorted(glob.glob(os.path.join(INPUT, depth, "comp-bundle.json")))]
bundle = next((os.path.dirname(m) for m in manifests if json.load(open(m)).get("name") == BUNDLE_NAME), None)
if bundle is None:
    raise SystemExit(f"bundle {{BUNDLE_NAME}} not found under {{INPUT}}: add its dataset as an input of this notebook")
subprocess.check_call([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                       *[os.path.join(bundle, "wheels", w) for w in WHEELS]])
importlib.invalidate_caches()
'''

RUN = '''\
# Predict the hidden test set with every fold of every model (each with its recorded TTA), apply the saved blend,
# and write /kaggle/working/submission.csv through comp's writer and checker; any problem raises and fails the run.
from comp.bundle.kernel import run_kernel

run_kernel(name=BUNDLE_NAME, dataset_hash=DATASET_HASH)
'''


def notebook(name: str, competition: str, wheels: list[str], dataset_hash: str = "") -> dict[str, Any]:
    """An nbformat 4 notebook: a title, the install cell, the run cell. Each cell's source is one string, as
    Kaggle's server expects it (the official clients join a list of lines before pushing)."""
    def code(text: str) -> dict[str, Any]:
        return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": text}

    title = (f"# {competition}: comp bundle `{name}`\n\nOffline inference written by `comp bundle {name}`: the "
             "models, their TTA and the blend of `comp stack --name " + name + "`, reproduced on the hidden test set.")
    return {
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": title},
                  code(INSTALL.format(name=name, wheels=wheels, dataset_hash=dataset_hash)), code(RUN)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def code_cells(nb: dict[str, Any]) -> list[str]:
    """The notebook's code, cell by cell, as Kaggle runs it."""
    return ["".join(cell["source"]) for cell in nb["cells"] if cell["cell_type"] == "code"]


def kernel_metadata(kernel_slug: str, dataset_slug: str, competition: str, gpu: bool) -> dict[str, Any]:
    """kernel-metadata.json: internet always written as false (`kernels push` turns it on when the key is missing)."""
    return {
        "id": kernel_slug,
        "title": kernel_slug.split("/")[1],
        "code_file": f"{kernel_slug.split('/')[1]}.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": bool(gpu),
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": [dataset_slug],
        "competition_sources": [competition],
        "kernel_sources": [],
        "model_sources": [],
    }
