"""Benchmarks of comp against the plain baselines it replaces; `make bench` (or `python -m bench [NAME]`) runs them.

Each `bench/bench_<name>.py` exposes `run() -> list[bench.common.Result]`; `bench/__main__.py` collects them and
rewrites BENCHMARKS.md.
"""

import os

# As `import comp` does (see comp/__init__.py), before torch loads: harness and baseline share one process, so both run
# with sleeping OpenMP waiters. The baseline gains from it too, which makes the ratios conservative on a busy box.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
