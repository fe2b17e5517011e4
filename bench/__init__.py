"""Benchmarks of comp against the plain baselines it replaces; `make bench` (or `python -m bench [NAME]`) runs them.

Each `bench/bench_<name>.py` exposes `run() -> list[bench.common.Result]`; `bench/__main__.py` collects them and
rewrites BENCHMARKS.md.
"""
