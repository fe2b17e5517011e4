"""What every benchmark shares: the `Result` row, timing, the machine description, a throwaway workspace.

A bench module `bench/bench_<name>.py` defines `run() -> list[Result]`, times the harness and its baseline in the
same process on the same inputs, and keeps the whole run under ~3 minutes on a 2-core CPU box. Example:

    from bench.common import Result, best_of

    def run() -> list[Result]:
        harness = best_of(lambda: harness_fn(x))        # seconds
        baseline = best_of(lambda: baseline_fn(x))
        return [Result.from_seconds("my_step", harness, baseline, "harness vs plain loop", items=len(x))]
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# real data: $COMP_SHARED, else ../shared (a clone beside it), else ../../shared (a git worktree one level deeper)
SHARED = Path(os.environ.get("COMP_SHARED") or next(
    (p for p in (REPO.parent / "shared", REPO.parents[1] / "shared") if p.is_dir()), REPO.parent / "shared"))


@dataclass(frozen=True)
class Result:
    """One benchmark line. `ratio` > 1 means the harness is better (faster / more throughput)."""

    name: str  # short snake_case id, e.g. "pipeline_epoch"
    harness: float  # the harness's figure, in `unit`
    baseline: float  # the baseline's figure, in `unit`, measured in the same run
    unit: str  # e.g. "img/s" or "s"
    ratio: float  # how many times better the harness is (already oriented so that higher is better)
    note: str  # what is compared, e.g. "harness vs ImageFolder+PIL"; printed in parentheses
    detail: str = ""  # extra figures for BENCHMARKS.md (set sizes, one-off costs such as a cache build)
    goal: float | None = None  # the ratio the harness should reach, printed beside the measured one


    @classmethod
    def from_rates(cls, name: str, harness: float, baseline: float, note: str, unit: str = "img/s",
                   detail: str = "", goal: float | None = None) -> Result:
        """Throughputs: higher is better, ratio = harness / baseline."""
        return cls(name, harness, baseline, unit, harness / baseline if baseline else float("inf"), note, detail,
                   goal)

    @classmethod
    def from_seconds(cls, name: str, harness: float, baseline: float, note: str, items: int | None = None,
                     detail: str = "") -> Result:
        """Wall times: lower is better, ratio = baseline / harness; with `items`, reported as items/s instead."""
        if items:
            return cls.from_rates(name, items / harness, items / baseline, note, "items/s", detail)
        return cls(name, harness, baseline, "s", baseline / harness if harness else float("inf"), note, detail)

    def line(self) -> str:
        """The line `make bench` prints: `name: 3.21x (harness vs baseline)`, with its goal when it has one:
        `name: 1.62x, goal >= 1.50x: met (harness vs baseline)`."""
        return f"{self.name}: {self.ratio:.2f}x{goal_text(self.goal, self.ratio)} ({self.note})"


def goal_text(goal: float | None, ratio: float) -> str:
    """`, goal >= 1.50x: met` / `: NOT met`, or "" without a goal."""
    if goal is None:
        return ""
    return f", goal >= {goal:.2f}x: {'met' if ratio >= goal else 'NOT met'}"


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of `fn` takes (wall clock)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_of(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Fastest of `repeat` timed calls after `warmup` untimed ones: the least noisy figure on a shared machine."""
    for _ in range(warmup):
        fn()
    return min(timed(fn) for _ in range(repeat))


def sync(device: object = None) -> None:
    """Wait for queued CUDA work so a timer measures it (no-op on CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize(device)


def bench_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch intra-op threads set to 1 for the block: timings in CPU seconds stay comparable, and on a small box
    extra threads would spin-wait against loader workers for the same cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def temp_workspace() -> Iterator[Path]:
    """A throwaway workspace directory (also set as $COMP_WORKSPACE) removed afterwards."""
    old = os.environ.get("COMP_WORKSPACE")
    with tempfile.TemporaryDirectory(prefix="comp-bench-") as tmp:
        os.environ["COMP_WORKSPACE"] = tmp
        try:
            yield Path(tmp)
        finally:
            if old is None:
                os.environ.pop("COMP_WORKSPACE", None)
            else:
                os.environ["COMP_WORKSPACE"] = old


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """What the numbers were measured on; written at the top of BENCHMARKS.md."""
    import torch
    import torchvision

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": str(cores),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "os": f"{platform.system()} {platform.release()}",
    }


def tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process, its finished children and its live children (persistent loader
    workers never finish during a benchmark, so `RUSAGE_CHILDREN` alone would miss them). Linux /proc; elsewhere
    only this process and finished children."""
    import resource

    own, done = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + done.ru_utime + done.ru_stime
    me, tick = str(os.getpid()), os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited between the listing and the read: then counted in RUSAGE_CHILDREN
            continue
        if fields[1] == me:  # ppid: a live child of this process
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def load() -> float:
    """The machine's 1-minute load average (0 where the OS has none): benches print it beside noisy timings."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def paired_rounds(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Run every fn once per round, the order reversed every other round, so that load from other processes on a
    shared box hits each alike; returns each fn's (wall seconds, CPU seconds of the process tree) per round."""
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            cpu, wall = tree_cpu_seconds(), time.perf_counter()
            fns[name]()
            out[name].append((time.perf_counter() - wall, tree_cpu_seconds() - cpu))
    return out
