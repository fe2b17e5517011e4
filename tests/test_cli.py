"""The CLI as a whole: every command has help text, and errors never surface as tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from comp.cli import app

runner = CliRunner()
EXPECTED = {"init", "verify", "folds", "demo", "train", "predict", "stack", "score", "status", "models", "report",
            "check", "submit", "submissions", "download"}


def _commands() -> dict[str, object]:
    import typer.main

    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


def test_every_expected_command_exists():
    missing = EXPECTED - set(_commands())
    assert not missing, f"commands missing from the CLI: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_command_has_help(name):
    commands = _commands()
    if name not in commands:
        pytest.fail(f"no command {name!r}")
    help_text = commands[name].help or ""
    assert len(help_text.strip()) > 20, f"`comp {name}` has no real help text"
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.slow  # runs `python -m comp` 5 times
def test_outside_a_workspace_every_command_fails_cleanly():
    """Commands that need comp.toml say so and exit 1 — through the real entry point, no traceback."""
    for args in (["verify"], ["folds"], ["train", "--model", "tiny", "--fold", "0"], ["stack"], ["status"]):
        proc = subprocess.run([sys.executable, "-m", "comp", *args], capture_output=True, text=True, timeout=120)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, (args, out)
        assert "Traceback" not in out, (args, out)
        assert "comp.toml" in out, (args, out)
