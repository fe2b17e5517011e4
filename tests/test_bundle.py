"""`comp bundle`: the stack's fitted blend saved and rebuilt exactly, the kernel's input discovery, the comparison,
the offline sandbox, and (slow) the whole round trip: two tiny models, a logistic stack, a bundle, the kernel run
in a fresh process on the local test set and on one with images left out and added, and the dry-run submit."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from comp.bundle import kernel
from comp.bundle.local import _fresh_venv, base_interpreter, compare
from comp.bundle.notebook import code_cells, notebook
from comp.core.config import Competition
from comp.core.errors import CompError
from comp.ensemble import blend
from comp.ensemble.stack import fitted_params, from_params


def _blend_input(seed: int = 0, n: int = 60, models: int = 2, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    logits = [rng.normal(size=(n, classes)).astype(np.float32) + 2.0 * np.eye(classes)[y] * (m + 1)
              for m in range(models)]
    return blend.as_log_probs(logits), y


@pytest.mark.parametrize("estimator", [
    blend.MeanBlend(), blend.HillClimbBlend(metric="accuracy"), blend.LogisticStacker(),
    blend.LogisticStacker(per_class=True), blend.TemperatureScaled(blend.MeanBlend()),
    blend.TemperatureScaled(blend.HillClimbBlend(metric="log_loss")),
], ids=["mean", "weights", "logreg", "logreg-per-class", "mean+T", "weights+T"])
def test_saved_blend_parameters_rebuild_the_same_predictions(estimator):
    X, y = _blend_input()
    fitted = estimator.fit(X, y)
    saved = json.loads(json.dumps(fitted_params(fitted)))  # as the sidecar stores it
    rebuilt = from_params(saved, X.shape[2])
    X_new, _ = _blend_input(seed=1, n=25)
    np.testing.assert_array_equal(rebuilt.predict_log_proba(X_new), fitted.predict_log_proba(X_new))


def test_unknown_blend_parameters_are_refused():
    with pytest.raises(CompError, match="re-run `comp stack`"):
        from_params({"kind": "gbm"}, 3)


def _comp(**fields) -> Competition:
    base = dict(name="toy-comp", data_dir="data/toy", test_dir="data/toy/test", classes=["a", "b"],
                sample_submission="data/toy/sample_submission.csv", submission_labels=["a", "b"])
    return Competition(**{**base, **fields})


def test_kernel_finds_the_bundle_and_the_competition_wherever_kaggle_mounts_them(tmp_path):
    inputs = tmp_path / "input"
    for name in ("one", "two"):
        (inputs / "datasets" / "me" / name).mkdir(parents=True)
        (inputs / "datasets" / "me" / name / kernel.MANIFEST).write_text(json.dumps({"name": name}))
    assert kernel.find_bundle(inputs, "two") == inputs / "datasets" / "me" / "two"
    with pytest.raises(CompError, match="add the bundle's dataset"):
        kernel.find_bundle(inputs, "three")
    (inputs / "competitions" / "toy-comp" / "test").mkdir(parents=True)
    (inputs / "competitions" / "toy-comp" / "sample.csv").write_text("id,label\n")
    assert kernel.find_competition(inputs, "toy-comp", "sample.csv") == inputs / "competitions" / "toy-comp"
    (inputs / "renamed").mkdir()
    (inputs / "renamed" / "other.csv").write_text("id,label\n")
    assert kernel.find_competition(inputs, "toy-comp", "other.csv") == inputs / "renamed"
    with pytest.raises(CompError, match="as a data source"):
        kernel.find_competition(inputs, "toy-comp", "missing.csv")


def test_competition_paths_point_at_the_input_folder(tmp_path):
    description = {"competition": {"name": "toy-comp", "classes": ["a", "b"], "labels_csv": "data/toy/train.csv",
                                   "train_dirs": ["data/toy/train"], "test_answers": "answers.csv"},
                   "relative": {"test_dir": "test", "sample_submission": "sample_submission.csv"}}
    comp = kernel.competition_at(description, tmp_path / "toy-comp")
    assert comp.test_dir == str(tmp_path / "toy-comp" / "test")
    assert comp.sample_submission == str(tmp_path / "toy-comp" / "sample_submission.csv")
    assert (comp.train_dirs, comp.labels_csv, comp.test_answers) == ([], "", "")


def test_bundle_needs_a_stack_with_its_parameters(workspace, cli, make_kaggle_competition):
    make_kaggle_competition(workspace / "data" / "toy", n_per_class=3, n_test=3)
    from comp.core.workspace import Workspace

    Workspace(workspace).save(_comp(train_dirs=["data/toy/train"], labels_csv="data/toy/train.csv",
                                    image_ext=".png", classes=["cat", "dog", "frog"],
                                    submission_labels=["cat", "dog", "frog"]))
    code, out = cli("bundle")
    assert code == 1 and "comp stack --name NAME" in out
    (workspace / "submissions").mkdir()
    (workspace / "submissions" / "old.csv").write_text("id,label\n")
    (workspace / "submissions" / "old.json").write_text(json.dumps({"models": ["a", "b"], "method": "mean"}))
    code, out = cli("bundle", "old")
    assert code == 1 and "re-run `comp stack --name old --models a,b --force`" in out  # old.csv exists


def test_sample_outside_the_competition_files_is_refused(workspace):
    from comp.bundle.build import describe_competition
    from comp.core.workspace import Workspace

    with pytest.raises(CompError, match="outside data_dir"):
        describe_competition(_comp(sample_submission=".comp/sample_submission.csv"), Workspace(workspace))
    relative = describe_competition(_comp(), Workspace(workspace))["relative"]
    assert relative == {"test_dir": "test", "sample_submission": "sample_submission.csv"}


def test_compare_catches_probability_and_label_differences(tmp_path):
    comp = _comp(kind="class_probs", label_columns=["a", "b"])
    ref = tmp_path / "ref.csv"
    ref.write_text("id,a,b\nx,0.25,0.75\ny,0.5,0.5\n")
    close = tmp_path / "close.csv"
    close.write_text("id,a,b\ny,0.500004,0.499996\nx,0.25,0.75\n")  # row order does not matter
    assert compare(comp, close, ref) == (pytest.approx(4e-6), 2)
    far = tmp_path / "far.csv"
    far.write_text("id,a,b\nx,0.2501,0.7499\ny,0.5,0.5\n")
    with pytest.raises(CompError, match="differ .* by up to 1.00e-04"):
        compare(comp, far, ref)
    with pytest.raises(CompError, match="other ids"):
        compare(comp, close, ref, expect_ids=["x", "z"])
    names = _comp()
    ref.write_text("id,label\nx,a\ny,b\n")
    far.write_text("id,label\nx,a\ny,a\n")
    with pytest.raises(CompError, match="id 'y' has label 'a'"):
        compare(names, far, ref)


def test_notebook_cells_are_plain_python_with_the_bundle_name():
    nb = notebook("blend_v2", "toy-comp", ["comp-0.1.0-py3-none-any.whl"], "ab" * 32)
    install, run = code_cells(nb)
    compile(install, "install", "exec")
    compile(run, "run", "exec")
    assert "BUNDLE_NAME = 'blend_v2'" in install and '"--no-index", "--no-deps"' in install
    assert f"DATASET_HASH = '{'ab' * 32}'" in install
    assert "run_kernel(name=BUNDLE_NAME, dataset_hash=DATASET_HASH)" in run
    assert all(isinstance(c["source"], str) for c in nb["cells"])  # one string per cell, as Kaggle expects


def test_the_kernel_refuses_another_version_of_its_dataset(one_model_bundle):
    inputs, working, _ = one_model_bundle
    built_for = kernel.content_hash(inputs / "my-bundle")
    kernel.require_content(inputs / "my-bundle", built_for)
    (inputs / "my-bundle" / "models" / "a" / "fold0" / "recipe.toml").write_text("# changed\n")
    with pytest.raises(CompError, match="another version of the dataset"):
        kernel.run_kernel(inputs, working, name="one", device="cpu", say=lambda _: None, dataset_hash=built_for)
    assert not (working / "submission.csv").exists()


# ---------------------------------------------------------------------------------------------------------------
# Processes: the sandbox, the wheels, the round trip


@pytest.mark.slow
def test_the_sandbox_refuses_network_and_hides_comp(tmp_path):
    """The fresh interpreter --run-local uses: a connection to a live local server fails and is logged, and comp
    (installed here) cannot be imported, because only the bundle's wheels may provide it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    port = server.getsockname()[1]
    manifest = {"wheels": [{"name": "comp", "packages": ["comp"]}]}
    python = _fresh_venv(tmp_path, manifest, base_interpreter())
    log = tmp_path / "network.log"
    env = {"COMP_NETWORK_LOG": str(log), "PATH": "/usr/bin:/bin"}
    probe = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)\nprint('connected')"
    result = subprocess.run([str(python), "-c", probe], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "connected" not in result.stdout
    assert "network access is disabled" in result.stderr
    # A raw connect whose error the code swallows still leaves its trace, which fails `--run-local`.
    swallowed = (f"import socket\ntry:\n    socket.socket().connect(('127.0.0.1', {port}))\nexcept OSError:\n"
                 "    pass\nprint('carried on')")
    result = subprocess.run([str(python), "-c", swallowed], env=env, capture_output=True, text=True)
    server.close()
    assert result.returncode == 0 and "carried on" in result.stdout
    assert log.read_text().splitlines() == ["getaddrinfo '127.0.0.1'", f"connect ('127.0.0.1', {port})"]
    hidden = subprocess.run([str(python), "-c", "import comp"], env=env, capture_output=True, text=True)
    assert hidden.returncode != 0 and "No module named 'comp'" in hidden.stderr
    image = subprocess.run([str(python), "-c", "import numpy, ttach"], env=env, capture_output=True, text=True)
    assert image.returncode == 0, image.stderr  # the rest of the stand-in image is there


@pytest.mark.slow
def test_wheels_are_reproducible_and_recorded(tmp_path):
    from comp.bundle.wheels import BUNDLED, _normalise, build_wheels
    from comp.core.provenance import sha256_file

    first = build_wheels(tmp_path / "a")
    second = build_wheels(tmp_path / "b")
    # Byte-identical, so an unchanged bundle keeps its dataset hash. comp's own wheel is compared through its
    # normalisation only: in a shared checkout its sources may change between two builds.
    assert [w.sha256 for w in first[1:]] == [w.sha256 for w in second[1:]]
    comp_whl = tmp_path / "a" / first[0].file
    _normalise(comp_whl, tmp_path / "n1.whl")
    _normalise(comp_whl, tmp_path / "n2.whl")
    assert (tmp_path / "n1.whl").read_bytes() == (tmp_path / "n2.whl").read_bytes() == comp_whl.read_bytes()
    assert [w.name.lower().replace("_", "-") for w in first] == ["comp", *BUNDLED]
    for wheel in first:
        assert sha256_file(tmp_path / "a" / wheel.file) == wheel.sha256
    assert not any(w.name.lower() in ("torch", "torchvision", "numpy") for w in first)


@pytest.mark.slow
def test_two_model_logistic_stack_round_trip(workspace, cli, isolated, make_kaggle_competition):
    """Train two tiny models, stack them with the logistic stacker, bundle, run the kernel offline in a fresh
    process (local test set, then one with images left out and added), and dry-run the code submission."""
    make_kaggle_competition(workspace / "data" / "toy-comp", n_per_class=6, n_test=9, kind="class_probs")
    assert cli("init", "data/toy-comp", "--platform", "kaggle", "--n-folds", "2")[0] == 0
    assert cli("folds")[0] == 0
    code, out = cli("train", "--model", "tiny", "--set", "epochs=1")
    assert code == 0, out
    code, out = cli("train", "--model", "tiny2", "--set", "epochs=1", "--set", 'tta="hflip"')
    assert code == 0, out
    code, out = cli("stack", "--models", "tiny,tiny2", "--method", "logreg", "--name", "two")
    assert code == 0, out
    sidecar = json.loads((workspace / "submissions" / "two.json").read_text())
    assert sidecar["params"]["kind"] == "logreg" and len(sidecar["params"]["coef"]) == 2

    code, out = cli("bundle", "two", "--owner", "fake-user", "--time-limit", "0.000001", "--run-local")
    assert code == 0, out
    bundle = workspace / "bundles" / "two"
    manifest = json.loads((bundle / "dataset" / "comp-bundle.json").read_text())
    assert [m["alias"] for m in manifest["models"]] == ["tiny", "tiny2"]
    assert {f["tta"] for f in manifest["models"][1]["folds"]} == {"hflip"}  # each model's recorded TTA
    assert manifest["params"] == sidecar["params"]
    names = {w["name"].lower().replace("_", "-") for w in manifest["wheels"]}
    assert names == {"comp", "timm", "ttach", "tomli-w", "tomli"}
    for fold in (0, 1):
        assert (bundle / "dataset" / "models" / "tiny2" / f"fold{fold}" / "best.safetensors").is_file()
    meta = json.loads((bundle / "kernel" / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["is_private"] is True
    assert meta["dataset_sources"] == ["fake-user/two-toy-comp-bundle"] and meta["competition_sources"] == ["toy-comp"]
    record = json.loads((bundle / "bundle.json").read_text())
    assert record["size_bytes"] > 100_000 and record["per_image_s"] > 0
    assert "but the limit is" in out  # the time-limit warning

    # The fresh process reproduced submissions/two.csv, and followed a test set with other images.
    passed = json.loads((bundle / "local-run" / "passed.json").read_text())
    assert passed["compared"] == 9 and passed["max_abs_diff"] <= 1e-5
    assert len(passed["variant"]["missing"]) == 3 and passed["variant"]["extra"] == ["extra_0", "extra_1", "extra_2"]
    produced = pd.read_csv(bundle / "local-run" / "submission.csv")
    reference = pd.read_csv(workspace / "submissions" / "two.csv")
    merged = produced.merge(reference, on="id", suffixes=("", "_ref"))
    assert len(merged) == 9
    for c in ("cat", "dog", "frog"):
        assert np.abs(merged[c] - merged[f"{c}_ref"]).max() <= 1e-5
    variant = pd.read_csv(bundle / "local-run" / "submission-variant.csv")
    assert set(variant["id"]) == (set(reference["id"]) - set(passed["variant"]["missing"])) | {
        "extra_0", "extra_1", "extra_2"}
    report = json.loads((bundle / "local-run" / "same" / "kaggle" / "working" / "comp-kernel.json").read_text())
    assert "/local-run/same/venv/" in report["comp_file"]  # comp came from the bundle's wheel
    assert not (bundle / "local-run" / "same" / "network.log").exists()
    assert sorted(p.name for p in (bundle / "local-run" / "same" / "kaggle" / "working").iterdir()) == [
        "comp-kernel.json", "submission.csv"]

    code, out = cli("submit", "--kernel", "two", "-m", "two tiny models", "--dry-run")
    assert code == 0, out
    assert "CreateCodeSubmission toy-comp" in out and "SaveKernel fake-user/toy-comp-two-inference" in out


def test_kernel_module_imports_nothing_from_the_cli():
    source = Path(kernel.__file__).read_text()
    assert "comp.cli" not in source and "typer" not in source


# ---------------------------------------------------------------------------------------------------------------
# The kernel in this process, on a one-model bundle made without training (fast)


@pytest.fixture
def one_model_bundle(workspace, make_kaggle_competition, tmp_path):
    """A Kaggle-like input folder: the competition's files and a bundle of one untrained tiny model (one fold)."""
    from comp.bundle.build import describe_competition
    from comp.core.config import save_toml
    from comp.core.workspace import Workspace
    from comp.modeling.models import build_model, save_weights
    from comp.modeling.recipe import load_recipe, recipe_dict

    data = make_kaggle_competition(workspace / "data" / "toy-comp", n_per_class=2, n_test=5)
    ws = Workspace(workspace)
    comp = _comp(data_dir="data/toy-comp", test_dir="data/toy-comp/test", image_ext=".png",
                 sample_submission="data/toy-comp/sample_submission.csv", classes=["cat", "dog", "frog"],
                 submission_labels=["cat", "dog", "frog"])
    recipe = load_recipe(ws, "tiny")
    dataset = tmp_path / "input" / "my-bundle"
    save_weights(dataset / "models" / "a" / "fold0" / "best.safetensors", build_model(recipe, 3, pretrained=False))
    save_toml(dataset / "models" / "a" / "fold0" / "recipe.toml", recipe_dict(recipe))
    manifest = {"name": "one", "models": [{"alias": "a", "folds": [{"fold": 0, "tta": "hflip", "merge": "mean"}]}],
                "params": {"kind": "weights", "weights": [1.0]}, "competition": describe_competition(comp, ws)}
    (dataset / kernel.MANIFEST).write_text(json.dumps(manifest))
    (tmp_path / "input" / "toy-comp").symlink_to(data)
    (tmp_path / "working").mkdir()
    return tmp_path / "input", tmp_path / "working", data


def test_kernel_writes_a_checked_submission_for_the_test_set_it_finds(one_model_bundle):
    inputs, working, data = one_model_bundle
    lines = []
    written = kernel.run_kernel(inputs, working, name="one", device="cpu", say=lines.append)
    frame = pd.read_csv(written, dtype=str)
    sample = pd.read_csv(data / "sample_submission.csv", dtype=str)
    assert written == working / "submission.csv" and list(frame.columns) == list(sample.columns)
    assert list(frame["id"]) == list(sample["id"]) and set(frame["label"]) <= {"cat", "dog", "frog"}
    assert sorted(p.name for p in working.iterdir()) == ["comp-kernel.json", "submission.csv"]
    record = json.loads((working / "comp-kernel.json").read_text())
    assert record["n_images"] == 5 and record["versions"]["ttach"] == "0.0.3"
    assert any("the check passed" in line for line in lines)


def test_kernel_fails_loudly_when_the_test_set_lacks_an_image(one_model_bundle):
    inputs, working, data = one_model_bundle
    sample = pd.read_csv(data / "sample_submission.csv", dtype=str)
    (data / "test" / f"{sample['id'].iloc[2]}.png").unlink()
    with pytest.raises(CompError, match="cannot be read"):
        kernel.run_kernel(inputs, working, name="one", device="cpu", say=lambda _: None)
    assert not (working / "submission.csv").exists()


def test_kernel_averages_a_full_fit_with_the_folds_as_the_stack_did(one_model_bundle):
    """A stack that used a full fit records it in `test_runs`; the bundle ships models/<alias>/full/ and the kernel
    averages it with the folds (each run once), as `comp stack` averaged the saved test logits."""
    import shutil

    from comp.core.workspace import FULL

    inputs, working, data = one_model_bundle
    dataset = inputs / "my-bundle"
    shutil.copytree(dataset / "models" / "a" / "fold0", dataset / "models" / "a" / FULL)
    manifest = json.loads((dataset / kernel.MANIFEST).read_text())
    manifest["models"][0]["folds"].append({"fold": FULL, "tta": "none", "merge": "mean"})
    (dataset / kernel.MANIFEST).write_text(json.dumps(manifest))
    written = kernel.run_kernel(inputs, working, name="one", device="cpu", say=lambda _: None)
    frame = pd.read_csv(written, dtype=str)
    assert len(frame) == 5 and set(frame["label"]) <= {"cat", "dog", "frog"}
