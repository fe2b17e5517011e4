"""Run the benchmarks and rewrite BENCHMARKS.md.

    python -m bench              # every bench/bench_*.py, in name order
    python -m bench pipeline     # only bench/bench_pipeline.py (other rows of BENCHMARKS.md are kept)
    make bench                   # the same as the first line

Prints one `name: ratio (harness vs baseline)` line per result. A module that fails is reported and the others
still run; the exit code is then 1.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from bench.common import REPO, Result, goal_text, machine
from comp.core import atomic

BENCH_DIR = Path(__file__).resolve().parent
REPORT = REPO / "BENCHMARKS.md"
# The raw results ride inside BENCHMARKS.md so `python -m bench NAME` can refresh one module's rows and keep the rest.
_DATA = re.compile(r"<!-- bench-data (.*?) -->", re.S)


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def run_module(name: str) -> tuple[list[Result], float, str, str]:
    """Import and run bench_<name>; returns its results, the seconds it took, an error text ('' when fine) and the
    first paragraph of its docstring (what it compares)."""
    start, about = time.perf_counter(), ""
    try:
        module = importlib.import_module(f"bench.bench_{name}")
        about = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
        results = list(module.run())
        return results, time.perf_counter() - start, "", about
    except Exception as err:  # one broken bench must not hide the others' numbers
        traceback.print_exc()
        return [], time.perf_counter() - start, f"{type(err).__name__}: {err}", about


def load_previous() -> dict:
    if not REPORT.exists():
        return {}
    found = _DATA.search(REPORT.read_text(encoding="utf-8"))
    try:
        return json.loads(found.group(1)) if found else {}
    except json.JSONDecodeError:
        return {}


def render(data: dict) -> str:
    """BENCHMARKS.md: the machine of the latest run, one table row per result, and how to reproduce."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench [NAME]`); do not edit by hand. Ratio > 1 means the harness is",
        "better than the baseline measured in the same run on the same inputs; a goal, where a result has one, is",
        "printed beside its ratio.",
        "",
        "The machine is shared (other jobs run tests on the same cores while benchmarks run), so harness and baseline",
        "are measured interleaved in the same process: alternating rounds, the order reversed every round, medians of",
        "the rounds, so contention hits both alike. CPU-seconds (of the process and its loader workers) are reported",
        "beside wall time where loaders are involved: they move far less with the neighbours' load than wall time.",
        "Both sides run with OpenMP's passive waiting (`OMP_WAIT_POLICY=PASSIVE`, which `import comp` sets), so the",
        "baseline is spared the spin-waiting that slows a plain script most on a busy machine: the ratios are",
        "conservative.",
        "",
    ]
    for name, entry in sorted(data["modules"].items()):
        m = entry["machine"]
        lines += [
            f"## {name} (`python -m bench {name}`, {entry['seconds']:.0f} s)",
            "",
            f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, GPU {m['gpu']}; "
            f"Python {m['python']}, torch {m['torch']}, torchvision {m['torchvision']}.",
            "",
        ]
        if entry.get("about"):
            lines += [entry["about"], ""]
        if entry.get("error"):
            lines += [f"FAILED: {entry['error']}", ""]
            continue
        lines += ["| result | harness | baseline | unit | ratio | compared | detail |", "|---|---|---|---|---|---|---|"]
        for r in entry["results"]:
            lines.append(
                f"| {r['name']} | {r['harness']:.4g} | {r['baseline']:.4g} | {r['unit']} | **{r['ratio']:.2f}x**"
                f"{goal_text(r.get('goal'), r['ratio'])} | {r['note']} | {r.get('detail', '')} |"
            )
        lines.append("")
    if data.get("quality", {}).get("rows"):
        from bench.quality import section  # the quality benchmark keeps its rows beside the modules' (bench/quality.py)

        lines += section(data["quality"]["rows"])
    lines.append(f"<!-- bench-data {json.dumps(data, sort_keys=True)} -->")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    data = load_previous()
    data.setdefault("modules", {})
    for stale in set(data["modules"]) - set(available()):
        del data["modules"][stale]  # the module was removed: its numbers would describe code that is gone
    failed = False
    for name in names:
        results, seconds, error, about = run_module(name)
        for result in results:
            print(result.line(), flush=True)
        if error:
            print(f"{name}: FAILED ({error})", flush=True)
            failed = True
        data["modules"][name] = {
            "machine": machine(), "seconds": seconds, "error": error, "about": about,
            "results": [asdict(r) for r in results],
        }
        atomic.write_text(REPORT, render(data))  # after each module, so an interrupted run keeps what it measured
    print(f"wrote {REPORT}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
