"""The test suite's own rules: helpers come as fixtures, and a test that starts a process is marked `slow` (the
autouse guard in conftest.py fails it otherwise), so `make test-fast` stays a quick loop."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def test_no_test_imports_from_conftest():
    """conftest.py is loaded by pytest; importing it again makes a second copy of every fixture and helper."""
    offenders = [f"{path.name}:{n}" for path in sorted(TESTS.glob("*.py")) if path.name != "conftest.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if re.match(r"\s*(from conftest import|import conftest\b)", line)]
    assert offenders == []


PLANTED = """
import subprocess
import sys

import pytest


def test_unmarked_starts_a_process():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


@pytest.mark.slow
def test_marked_starts_a_process():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_unmarked_trains():
    import torch

    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    weight.sum().backward()
    optimizer.step()


def test_threads_and_a_forward_pass_are_fine():
    import torch
    import threading

    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    assert torch.nn.Linear(2, 1)(torch.ones(1, 2)).shape == (1, 1)
"""


@pytest.mark.slow  # starts processes (the planted tests do)
def test_the_guard_fails_unmarked_tests_that_start_a_process_or_train(pytester):
    pytester.makeconftest((TESTS / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_planted=PLANTED)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-o", "markers=slow\ngpu")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(["*test_unmarked_starts_a_process started 1 process(es)*subprocess*mark it*slow*"])
    result.stdout.fnmatch_lines(["*test_unmarked_trains started 1 *1 optimizer step(s) (training)*"])
