"""The code-competition kernel runs on the Kaggle images of the last two years: Python 3.10-3.12 and numpy >= 1.26.

Fast: a scan of comp's sources for numpy-2-only and Python-3.11-only APIs, and the wheel metadata's
requires-python. Slow: the bundle's wheels installed with `pip install --no-index --no-deps` (the notebook's own
command) into Python 3.10 and 3.12 venvs and the checker run there on numpy 1.26 / pandas 2.2; and the kernel run by
`--run-local --python` on a venv with numpy 1.26, pandas 2.2 and scikit-learn 1.2.2 built from the package index.
Each slow test is skipped, naming what was missing, where the interpreter or the package index is not there.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "comp").rglob("*.py"))

# numpy >= 2.0 only (absent from numpy 1.26's namespace): the Array API aliases and the new submodules.
NUMPY2_ONLY = {
    "strings", "trapezoid", "unstack", "concat", "permute_dims", "matrix_transpose", "vecdot", "vecmat", "matvec",
    "astype", "isdtype", "cumulative_sum", "cumulative_prod", "bitwise_count", "pow", "acos", "acosh", "asin",
    "asinh", "atan", "atan2", "atanh", "bitwise_left_shift", "bitwise_right_shift", "bitwise_invert", "long", "ulong",
    "unique_all", "unique_counts", "unique_inverse", "unique_values", "StringDType",
}
NUMPY2_ONLY_DOTTED = {"dtypes.StringDType", "lib.array_utils", "linalg.matrix_norm", "linalg.vector_norm",
                      "linalg.vecdot", "linalg.matrix_transpose", "linalg.diagonal", "linalg.trace", "linalg.outer",
                      "linalg.cross"}
# Python >= 3.11 only, where an import or attribute would break the kernel on a Python 3.10 image.
PY311_MODULES = {"tomllib"}
PY311_NAMES = {("datetime", "UTC"), ("typing", "Self"), ("typing", "LiteralString"), ("typing", "Never"),
               ("typing", "assert_never"), ("typing", "reveal_type"), ("enum", "StrEnum"), ("contextlib", "chdir"),
               ("hashlib", "file_digest"), ("asyncio", "TaskGroup"), ("asyncio", "timeout")}


def _numpy_aliases(tree: ast.AST) -> set[str]:
    names = {"numpy"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name for a in node.names if a.name == "numpy"}
    return names


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def numpy2_uses(source: str, where: str = "<source>") -> list[str]:
    """`where:line np.X` for every numpy-2-only name used in `source`."""
    tree = ast.parse(source)
    aliases = _numpy_aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "numpy":
            rest = node.module.split(".")[1:]
            for alias in node.names:
                dotted = ".".join([*rest, alias.name])
                if dotted in NUMPY2_ONLY or dotted in NUMPY2_ONLY_DOTTED or ".".join(rest) in NUMPY2_ONLY_DOTTED:
                    found.append(f"{where}:{node.lineno} from {node.module} import {alias.name}")
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node).split(".")
            if len(dotted) >= 2 and dotted[0] in aliases:
                if dotted[1] in NUMPY2_ONLY:
                    found.append(f"{where}:{node.lineno} {'.'.join(dotted[:2])}")
                elif ".".join(dotted[1:3]) in NUMPY2_ONLY_DOTTED:
                    found.append(f"{where}:{node.lineno} {'.'.join(dotted[:3])}")
    return sorted(set(found))


def py311_uses(source: str, where: str = "<source>") -> list[str]:
    """`where:line what` for every Python-3.11-only import or name not guarded by `except ModuleNotFoundError`."""
    tree = ast.parse(source)
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            found += [f"{where}:{node.lineno} import {a.name}" for a in node.names if a.name in PY311_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in PY311_MODULES:
                found.append(f"{where}:{node.lineno} from {node.module} import ...")
            found += [f"{where}:{node.lineno} from {node.module} import {a.name}" for a in node.names
                      if (node.module, a.name) in PY311_NAMES]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in PY311_NAMES:
                found.append(f"{where}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_the_scanners_catch_what_they_look_for():
    planted = ("import numpy as np\nfrom numpy.dtypes import StringDType\nx = np.strings.strip(a)\n"
               "y = np.linalg.vector_norm(a)\nz = np.char.strip(a)\n")
    assert numpy2_uses(planted) == ["<source>:2 from numpy.dtypes import StringDType", "<source>:3 np.strings",
                                    "<source>:4 np.linalg.vector_norm"]
    planted = ("import tomllib\nfrom datetime import UTC\ntry:\n    import tomllib\nexcept ModuleNotFoundError:\n"
               "    import tomli as tomllib\nimport datetime\nd = datetime.UTC\n")
    assert py311_uses(planted) == ["<source>:1 import tomllib", "<source>:2 from datetime import UTC",
                                   "<source>:8 datetime.UTC"]


def test_comp_uses_no_numpy_2_only_api():
    """Kaggle images still ship numpy 1.26 (pyproject allows it): np.strings and friends would fail the kernel."""
    found = [hit for path in SOURCES for hit in numpy2_uses(path.read_text(), str(path.relative_to(REPO)))]
    assert not found, f"numpy >= 2 only, breaks the kernel on numpy 1.26 images: {found}"


def test_comp_uses_no_python_311_only_api():
    """Python 3.10 images (Kaggle's of 2023-24) lack tomllib and datetime.UTC; guarded fallbacks are fine."""
    found = [hit for path in SOURCES for hit in py311_uses(path.read_text(), str(path.relative_to(REPO)))]
    assert not found, f"Python >= 3.11 only, breaks the kernel on Python 3.10 images: {found}"


def test_wheel_metadata_admits_the_kaggle_pythons():
    """requires-python travels in comp's wheel; an upper cap made `pip install --no-index` fail on Python 3.12."""
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    spec = SpecifierSet(project["requires-python"])
    assert all(v in spec for v in ("3.10.13", "3.11.7", "3.12.1", "3.13.0")), spec
    assert not any(s.operator in ("<", "<=", "==", "~=") for s in spec), f"no upper cap: {spec}"
    numpy = next(d for d in project["dependencies"] if re.match(r"numpy\b", d))
    assert SpecifierSet(numpy[len("numpy"):]).contains("1.26.4"), numpy


# ---------------------------------------------------------------------------------------------------------------
# Real interpreters and old packages (slow; skipped, with the reason, where missing)

OLD_IMAGE = ("numpy==1.26.4", "pandas==2.2.3")  # Kaggle's images of 2024 (the checker's needs)
OLD_IMAGE_SKLEARN = "scikit-learn==1.2.2"  # the oldest scikit-learn seen on a grader (Python 3.11 wheels exist)
CACHE = Path(os.environ.get("COMP_TEST_CACHE", Path.home() / ".cache" / "comp-tests"))


def find_python(version: str) -> str | None:
    """An interpreter `version` (e.g. "3.12"): on PATH, else under pyenv's versions."""
    found = shutil.which(f"python{version}")
    candidates = [found] if found else []
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += sorted(str(p) for p in pyenv.glob(f"{version}.*/bin/python{version}"))
    for exe in candidates:
        probe = subprocess.run([exe, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return exe
    return None


def venv_with(python: str, packages: tuple[str, ...], name: str) -> Path:
    """A venv of `python` with `packages` from the package index, kept under CACHE (built once); skips the test
    when the index cannot provide them."""
    root = CACHE / name
    exe = root / "bin" / "python"
    done = root / "comp-test-ready"
    if done.is_file() and done.read_text() == " ".join(packages) and exe.is_file():
        return exe
    shutil.rmtree(root, ignore_errors=True)
    made = subprocess.run([python, "-m", "venv", str(root)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"{python} cannot make a venv: {made.stderr.strip()[-200:]}")
    installed = subprocess.run([str(exe), "-m", "pip", "install", "-q", *packages], capture_output=True, text=True,
                               timeout=900)
    if installed.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"the package index did not provide {' '.join(packages)} for {python}: "
                    f"{installed.stderr.strip().splitlines()[-1:] or installed.returncode}")
    done.write_text(" ".join(packages))
    return exe


@pytest.fixture(scope="module")
def bundle_wheels(tmp_path_factory) -> list[Path]:
    from comp.bundle.wheels import build_wheels

    dest = tmp_path_factory.mktemp("wheels")
    return [dest / w.file for w in build_wheels(dest)]


CHECK_SCRIPT = """
import json, sys
import numpy, pandas
from comp.core.config import Competition, tomllib
from comp.core.workspace import Workspace
from comp.submission.check import check_file
from pathlib import Path
ws = Workspace(Path(sys.argv[1]))
comp = Competition(name="toy", data_dir="data", sample_submission="sample.csv", classes=["cat", "dog"],
                   submission_labels=["cat", "dog"], kind="class_name")
report = check_file(comp, ws, sys.argv[2])
print(json.dumps({"errors": report.errors, "numpy": numpy.__version__, "pandas": pandas.__version__,
                  "toml": tomllib.__name__, "python": "%d.%d" % sys.version_info[:2]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.10", "3.12"])
def test_bundle_wheels_install_offline_and_check_on_old_images(version, bundle_wheels, tmp_path):
    """The notebook's `pip install --no-index --no-deps` of the bundle's wheels into Python 3.10 / 3.12 with numpy
    1.26 and pandas 2.2, then comp's checker there: a good file passes, a bad one is refused (empty cell)."""
    python = find_python(version)
    if python is None:
        pytest.skip(f"no Python {version} interpreter here (looked on PATH and under ~/.pyenv/versions)")
    exe = venv_with(python, (*OLD_IMAGE, "pillow", "rich"), f"py{version}-numpy1.26")
    target = tmp_path / "site"
    pip = subprocess.run([str(exe), "-m", "pip", "install", "--no-index", "--no-deps", "-q", "--target", str(target),
                          *map(str, bundle_wheels)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    (tmp_path / "data").mkdir()
    (tmp_path / "sample.csv").write_text("id,label\n1,cat\n2,cat\n")
    (tmp_path / "good.csv").write_text("id,label\n1,dog\n2,cat\n")
    (tmp_path / "bad.csv").write_text("id,label\n1, \n2,cat\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    results = {}
    for name in ("good", "bad"):
        run = subprocess.run([str(exe), "-c", CHECK_SCRIPT, str(tmp_path), str(tmp_path / f"{name}.csv")],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        results[name] = json.loads(run.stdout.strip().splitlines()[-1])
    assert results["good"]["python"] == version and results["good"]["numpy"].startswith("1.26")
    assert results["good"]["toml"] == ("tomli" if version == "3.10" else "tomllib")
    assert results["good"]["errors"] == []
    assert any("empty value" in e for e in results["bad"]["errors"]), results["bad"]


def kaggle_2024_image() -> Path:
    """A venv with numpy 1.26, pandas 2.2 and scikit-learn 1.2.2 from the package index; torch, torchvision and the
    rest linked in from this environment (torch cannot be installed offline), its numpy/pandas/scikit-learn kept."""
    import sysconfig

    exe = venv_with(sys.executable, (*OLD_IMAGE, OLD_IMAGE_SKLEARN), "py311-kaggle-2024")
    site = Path(subprocess.run([str(exe), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())

    def dist(name: str) -> str:
        return re.sub(r"[-_.]+", "_", name.lower().split("-")[0])

    own = {e.name for e in site.iterdir()}
    own_dists = {dist(n) for n in own if n.endswith(".dist-info")}
    own_tops = {t for e in site.glob("*.dist-info") if (e / "top_level.txt").is_file()
                for t in (e / "top_level.txt").read_text().split()}
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name
        if (name in own or name in own_tops or name.endswith(".pth") or name.startswith("__editable__")
                or (name.endswith(".dist-info") and dist(name) in own_dists) or dist(name) == "comp"):
            continue
        os.symlink(entry, site / name)
    return exe


@pytest.mark.slow
def test_run_local_under_an_old_numpy_image(workspace, make_kaggle_competition, bundle_wheels):
    """`comp bundle NAME --run-local --python PATH`: the kernel (the wheels installed offline, prediction, blend,
    writer and checker) in a venv with numpy 1.26.4, pandas 2.2.3 and scikit-learn 1.2.2 reproduces the submission
    made here with this environment's numpy."""
    from comp.bundle import kernel
    from comp.bundle.build import describe_competition
    from comp.bundle.local import base_interpreter, run_local
    from comp.bundle.notebook import kernel_metadata, notebook
    from comp.bundle.wheels import Wheel, build_wheels
    from comp.core import atomic
    from comp.core.config import Competition, save_toml, to_dict
    from comp.core.workspace import Workspace
    from comp.modeling.models import build_model, save_weights
    from comp.modeling.recipe import load_recipe, recipe_dict

    exe = kaggle_2024_image()
    image = base_interpreter(exe)
    assert image.executable == str(exe)
    make_kaggle_competition(workspace / "data" / "toy-comp", n_per_class=2, n_test=5, kind="class_probs")
    ws = Workspace(workspace)
    comp = Competition(name="toy-comp", data_dir="data/toy-comp", test_dir="data/toy-comp/test", image_ext=".png",
                       sample_submission="data/toy-comp/sample_submission.csv", classes=["cat", "dog", "frog"],
                       submission_labels=["cat", "dog", "frog"], kind="class_probs", metric="log_loss")
    save_toml(ws.comp_toml, to_dict(comp))
    paths = ws.bundle("old")
    recipe = load_recipe(ws, "tiny")
    save_weights(paths.dataset / "models" / "a" / "fold0" / "best.safetensors", build_model(recipe, 3, False))
    save_toml(paths.dataset / "models" / "a" / "fold0" / "recipe.toml", recipe_dict(recipe))
    wheels: list[Wheel] = build_wheels(paths.wheels)
    manifest = {"format": 1, "name": "old", "params": {"kind": "weights", "weights": [1.0]},
                "models": [{"alias": "a", "folds": [{"fold": 0, "tta": "hflip", "merge": "mean"}]}],
                "competition": describe_competition(comp, ws), "wheels": [w.as_dict() for w in wheels]}
    atomic.write_json(paths.manifest, manifest)
    atomic.write_json(paths.dataset_metadata, {"id": "me/old-toy-comp-bundle", "title": "old-toy-comp-bundle"})
    atomic.write_text(paths.kernel / "toy-comp-old-inference.ipynb",
                      json.dumps(notebook("old", "toy-comp", [w.file for w in wheels])))
    atomic.write_json(paths.kernel_metadata, kernel_metadata("me/toy-comp-old-inference", "me/old-toy-comp-bundle",
                                                             "toy-comp", gpu=False))
    # The reference: the same kernel in this process (this environment's numpy 2).
    inputs, working = workspace / "ref" / "input", workspace / "ref" / "working"
    working.mkdir(parents=True)
    inputs.mkdir()
    (inputs / "bundle").symlink_to(paths.dataset)
    (inputs / "toy-comp").symlink_to(workspace / "data" / "toy-comp")
    made = kernel.run_kernel(inputs, working, name="old", device="cpu", say=lambda _: None)
    atomic.write_bytes(ws.submission_csv("old"), made.read_bytes())

    done = run_local(ws.load(), ws, "old", python=exe, say=lambda _: None)
    assert done.versions["numpy"] == "1.26.4" and done.versions["pandas"] == "2.2.3"
    assert done.versions["scikit-learn"] == "1.2.2"
    assert done.compared == 5 and done.max_abs_diff <= 1e-5
