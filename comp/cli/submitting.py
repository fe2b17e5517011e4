"""CLI commands: submitting."""

from __future__ import annotations

from comp.cli import app  # noqa: F401
