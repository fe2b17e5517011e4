"""The shared foundation: strict config loading, --set overrides, atomic writes, the logits waist, metrics."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from comp import logits
from comp.core import atomic, metrics
from comp.core.config import Competition, from_dict, with_overrides
from comp.core.errors import CompError
from comp.core.workspace import Workspace


@dataclass(frozen=True)
class Toy:
    lr: float = 1e-3
    epochs: int = 3
    name: str = "x"
    amp: bool = False
    sizes: list[int] | None = None


def test_unknown_key_is_an_error_naming_the_file():
    with pytest.raises(CompError, match=r"recipe.toml: unknown key\(s\) lrr"):
        from_dict(Toy, {"lrr": 1.0}, "recipe.toml")


@pytest.mark.parametrize("pair,match", [("epochs=2.5", "expected an integer"), ("amp=1", "expected true or false"),
                                        ("lr=fast", "expected a number"), ("nokey", "expected key=value")])
def test_overrides_are_type_checked(pair, match):
    with pytest.raises(CompError, match=match):
        with_overrides(Toy(), [pair])


def test_overrides_apply():
    toy = with_overrides(Toy(), ["lr=3e-4", "epochs=7", "name=resnext", "amp=true", "sizes=[1, 2]"])
    assert toy == Toy(lr=3e-4, epochs=7, name="resnext", amp=True, sizes=[1, 2])


def test_competition_roundtrip_and_validation(workspace):
    ws = Workspace.here()
    comp = Competition(name="x", classes=["a", "b"], submission_labels=["a", "b"])
    ws.save(comp)
    assert ws.load() == comp
    with pytest.raises(CompError, match="kind"):
        Competition(name="x", kind="probabilities")
    ws.comp_toml.write_text('name = "x"\nmetric = 3\n')
    with pytest.raises(CompError, match="metric: expected a string"):
        ws.load()


def test_missing_workspace_message(workspace):
    with pytest.raises(CompError, match="comp init"):
        Workspace.here().load()


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    tmp_path = tmp_path / "out"
    target = tmp_path / "a.txt"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_readonly_directory_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(CompError, match="not writable"):
            atomic.write_text(ro / "x.json", "{}")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("err,match", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "not writable")])
def test_disk_full_or_readonly_while_writing_keeps_the_old_file(tmp_path, monkeypatch, err, match):
    target = tmp_path / "metrics.json"
    atomic.write_json(target, {"v": 1})

    def failing_replace(src, dst):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(CompError, match=match):
        atomic.write_json(target, {"v": 2})
    assert target.read_text().strip().endswith("}") and '"v": 1' in target.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow  # kills a writer process
def test_sigkill_during_write_never_leaves_a_truncated_target(tmp_path):
    """A writer killed mid-write leaves either the old file or nothing at the target path, never a partial one."""
    target = tmp_path / "big.bin"
    atomic.write_bytes(target, b"A" * 10)
    code = (
        "import sys; from comp.core import atomic\n"
        "with atomic.atomic_path(sys.argv[1]) as t:\n"
        "    f = open(t, 'wb')\n"
        "    while True: f.write(b'B' * (1 << 20)); f.flush()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)])
    import time

    deadline = time.time() + 30
    while time.time() < deadline and not any(p.name.endswith(".tmp") and p.stat().st_size > 1 << 21
                                             for p in tmp_path.iterdir()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.read_bytes() == b"A" * 10


def test_logits_roundtrip_and_join_by_id(tmp_path):
    lg = logits.Logits(ids=["b", "a", "c"], values=np.arange(6).reshape(3, 2), classes=["x", "y"],
                       meta={"folds_hash": "f"})
    logits.save(tmp_path / "l.npz", lg)
    back = logits.load(tmp_path / "l.npz")
    assert list(back.ids) == ["b", "a", "c"] and back.meta == logits.LogitsMeta(folds_hash="f")
    np.testing.assert_array_equal(back.reindex(["a", "b"]), [[2, 3], [0, 1]])
    with pytest.raises(CompError, match="no logits"):
        back.reindex(["zz"])
    with pytest.raises(CompError, match="shape"):
        logits.Logits(ids=["a"], values=np.zeros((2, 2)), classes=["x", "y"])


def test_metrics_match_definitions():
    y = np.array([0, 1, 2, 1])
    z = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 0], [0, 1, 5.0]])
    assert metrics.score("accuracy", y, z) == 0.5
    # map@2: ranks of the truth: 1, 1, miss (top2 = 0,1 or 0,2), 2
    top2 = metrics.score("map@2", y, z)
    assert top2 == pytest.approx((1 + 1 + (0.5 if np.argsort(-z[2])[1] == 2 else 0) + 0.5) / 4)
    assert metrics.score("log_loss", y, z) > 0
    assert not metrics.greater_is_better("log_loss") and metrics.greater_is_better("roc_auc")
    assert metrics.is_better("log_loss", 0.1, 0.2) and not metrics.is_better("accuracy", 0.1, 0.2)
    with pytest.raises(CompError, match="unknown metric"):
        metrics.score("top1", y, z)
