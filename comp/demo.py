"""`comp demo`: a small real competition built from scikit-learn's handwritten digits, taken through the pipeline.

The demo is a list of named steps: `STEPS` prepares (build the data, init the workspace, verify, make folds) and
`ALL_STEPS`, what `comp demo` runs, adds train, stack and score. Each step takes the `DemoContext`, reuses what
already exists unless `force` is set, and returns a one-line summary; `run_demo` prints each with its time.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from rich.console import Console

from comp.core import atomic
from comp.core.config import Competition
from comp.core.errors import CompError
from comp.core.workspace import Workspace

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_SIZE = 32  # px; the 8x8 digits are upscaled so tiny timm models see a usual input size
TEST_FRACTION = 0.2
SEED = 0
# First line of the README the build writes: how the demo recognises its own folder (and never touches another).
MARKER = "comp demo: handwritten digits"


@dataclass
class DemoContext:
    """What every step sees; steps may add attributes of their own for later steps (e.g. a trained alias)."""

    ws: Workspace
    data_dir: Path  # absolute: the demo competition's files
    answers: Path  # absolute: the true test labels, kept outside data_dir like a real competition's
    force: bool  # redo each step instead of reusing its output
    console: Console


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[DemoContext], str]  # does the step (or reuses its output) and returns a one-line summary


def answers_path(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}_answers.csv"


# ---------------------------------------------------------------------------------------------------------------
# build: the competition's files


def _is_demo_dir(folder: Path) -> bool:
    readme = folder / "README.txt"
    return readme.is_file() and readme.read_text(encoding="utf-8").startswith(MARKER)


def build_digits(target: Path) -> pd.DataFrame:
    """Write the Kaggle-layout digits competition into the empty folder `target`; returns the test answers."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    labels = np.array([DIGIT_NAMES[t] for t in digits.target])
    # 0..16 ink levels to 0..255 grey, upscaled; saved as mode-L PNG (open_rgb makes it RGB).
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SEED
    )
    for sub in ("train", "test"):
        (target / sub).mkdir(parents=True)

    def save(index: int, path: Path) -> None:
        image = Image.fromarray(pixels[index], "L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        image.save(path)

    train_ids = [f"train_{n:04d}" for n in range(len(train_idx))]
    test_ids = [f"test_{n:04d}" for n in range(len(test_idx))]
    for image_id, index in zip(train_ids, train_idx, strict=True):
        save(index, target / "train" / f"{image_id}.png")
    for image_id, index in zip(test_ids, test_idx, strict=True):
        save(index, target / "test" / f"{image_id}.png")
    pd.DataFrame({"id": train_ids, "label": labels[train_idx]}).to_csv(target / "train.csv", index=False)
    pd.DataFrame({"id": test_ids, "label": DIGIT_NAMES[0]}).to_csv(target / "sample_submission.csv", index=False)
    (target / "README.txt").write_text(
        f"{MARKER} (scikit-learn load_digits, 1,797 8x8 images upscaled to {IMAGE_SIZE}x{IMAGE_SIZE}).\n"
        f"train/ + train.csv: {len(train_ids)} labelled images; test/ + sample_submission.csv: {len(test_ids)} "
        f"images; their answers are in ../{answers_path(target).name}.\n",
        encoding="utf-8",
    )
    return pd.DataFrame({"id": test_ids, "label": labels[test_idx]})


def build_step(ctx: DemoContext) -> str:
    data, answers = ctx.data_dir, ctx.answers
    _existing_demo_toml(ctx)  # refuse a foreign workspace before writing 1,800 files into it
    if _is_demo_dir(data) and answers.is_file() and not ctx.force:
        return f"reused {_rel(ctx, data)}"
    if data.exists() and not _is_demo_dir(data) and (data.is_file() or any(data.iterdir())):
        raise CompError(f"{data} exists and is not a comp demo folder; pass another --dir or remove it")
    data.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename at the end, so an interrupted build never leaves a half-written demo.
    # (mkdir, not mkdtemp: the folder should get the user's usual permissions, not 0700.)
    tmp = data.parent / f".{data.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        answer_frame = build_digits(tmp)
        if data.exists():
            shutil.rmtree(data)
        tmp.rename(data)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic.write_csv(answers, answer_frame)
    n_train = len(pd.read_csv(data / "train.csv"))
    return f"built {_rel(ctx, data)}: {n_train} train, {len(answer_frame)} test images; answers in {_rel(ctx, answers)}"


def _rel(ctx: DemoContext, path: Path) -> str:
    try:
        return str(path.relative_to(ctx.ws.root))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------------------------
# init, verify, folds: the ordinary commands' library functions


def _existing_demo_toml(ctx: DemoContext) -> Competition | None:
    """The workspace's comp.toml when it is this demo's (`require_demo_folder` refused any other)."""
    return ctx.ws.load() if ctx.ws.comp_toml.exists() else None


def require_demo_folder(ws: Workspace, data: Path) -> None:
    """Refuse to run the demo anywhere but an empty folder or a workspace the demo made: it writes comp.toml,
    folds/, models/tiny, models/tiny2 and submissions/, so in a real workspace it would replace the user's work
    (--force included: it only redoes the demo's own steps)."""
    root = ws.root
    if ws.comp_toml.exists():
        comp = ws.load()
        if ws.path(comp.data_dir).resolve() != data or not _is_demo_dir(data):
            raise CompError(
                f"{ws.comp_toml} is for another competition ({comp.name}, data in {comp.data_dir}); run `comp demo` "
                "in an empty directory (`mkdir digits && cd digits && comp demo`); --force never replaces another "
                "competition's workspace"
            )
        return
    entries = sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []
    own = {data.relative_to(root).parts[0]} if data.is_relative_to(root) else set()
    others = [name for name in entries if name not in own]
    if others:
        raise CompError(
            f"{root} is not empty ({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}) and is not a comp "
            "demo workspace; the demo writes comp.toml, folds/, models/ and submissions/ here, so run it in an empty "
            "directory: `mkdir digits && cd digits && comp demo`"
        )


def init_step(ctx: DemoContext) -> str:
    ws = ctx.ws
    comp = _existing_demo_toml(ctx)
    if comp is not None and not ctx.force:
        return f"reused {ws.comp_toml.name} ({comp.name}, {comp.num_classes} classes)"
    from comp.setup.init import InitOptions, init_workspace

    findings = init_workspace(ctx.data_dir, ws, InitOptions(name="digits-demo", force=True))
    # init cannot know the answers (a real competition never ships them); record them for local scoring.
    answers = os.path.relpath(ctx.answers, ws.root)
    comp = dataclasses.replace(findings.competition, test_answers=answers)
    ws.save(comp)
    return (
        f"wrote {ws.comp_toml.name}: {comp.layout} layout, {comp.num_classes} classes, kind {comp.kind}, "
        f"metric {comp.metric}; test answers {answers}"
    )


def verify_step(ctx: DemoContext) -> str:
    from comp.setup.verify import verify

    report, cached = verify(ctx.ws.load(), ctx.ws, use_cache=not ctx.force, console=ctx.console)
    if not report.passed:
        first = report.errors[0]
        raise CompError(f"the demo data failed verification: {first.kind} {first.path}: {first.detail}")
    how = "cached" if cached else f"decoded {report.n_train + report.n_test} images"
    return f"passed ({how}; {len(report.warnings)} warning(s))"


def folds_step(ctx: DemoContext) -> str:
    from comp.folds import make_folds

    folds, written = make_folds(ctx.ws.load(), ctx.ws, force=ctx.force)
    return f"{'wrote' if written else 'reused'} {folds.n_folds} folds of {len(folds.frame)} rows"


STEPS: list[Step] = [
    Step("build", build_step),
    Step("init", init_step),
    Step("verify", verify_step),
    Step("folds", folds_step),
]


# ---------------------------------------------------------------------------------------------------------------
# train, stack, score: two tiny models on every fold, their stack, and each submission's held-out score

DEMO_MODELS = ("tiny", "tiny2")  # recipes in comp/recipes/, copied into models/ by init
# The digits carry 8x8 pixels of information: 16 px and batches of 64 keep all 2 x 5 folds near a CPU-minute.
# No flips: a mirrored digit is another glyph (hflip alone cost ~6 points of fold accuracy, 0.89 vs 0.95).
DEMO_OVERRIDES = ["img_size=16", "batch_size=64", "lr=3e-2", "epochs=4", "hflip=0.0"]
STACK_NAME = "demo_stack"


def train_step(ctx: DemoContext) -> str:
    from comp.training.train import train

    comp = ctx.ws.load()
    parts = []
    for alias in DEMO_MODELS:
        summaries = train(comp, ctx.ws, alias, "all", overrides=DEMO_OVERRIDES, force=ctx.force, console=ctx.console)
        done = sum(s.get("status") == "trained" for s in summaries)
        parts.append(f"{alias} ({done} fold(s) trained, {len(summaries) - done} reused)")
    return "; ".join(parts)


def stack_step(ctx: DemoContext) -> str:
    from comp.ensemble.stack import stack

    comp = ctx.ws.load()
    # One submission per single model (a mean of one: the same code path) and the stack of both.
    # The demo's own names, rebuilt on every run (`force`): stack never replaces an existing name without it.
    for alias in DEMO_MODELS:
        stack(comp, ctx.ws, [alias], "mean", f"demo_{alias}", force=True)
    result = stack(comp, ctx.ws, list(DEMO_MODELS), "best", STACK_NAME, force=True)
    cv = ", ".join(f"{row} {s['oof']:.4f}" for row, s in result.table.items())
    return f"chose {result.method} by honest CV ({comp.metric}: {cv}); wrote {_rel(ctx, result.csv)}"


def score_step(ctx: DemoContext) -> str:
    from comp.ensemble.stack import score_file

    comp = ctx.ws.load()
    names = [*(f"demo_{alias}" for alias in DEMO_MODELS), STACK_NAME]
    scores = {name: score_file(comp, ctx.ws, ctx.ws.submission_csv(name), ctx.answers) for name in names}
    return f"held-out {comp.metric}: " + ", ".join(f"{name} {value:.4f}" for name, value in scores.items())


# `comp demo` runs all of them; STEPS alone stops at the folds (fast, for tests of the preparation).
ALL_STEPS: list[Step] = [*STEPS, Step("train", train_step), Step("stack", stack_step), Step("score", score_step)]


def run_demo(
    ws: Workspace,
    data_dir: Path = Path("data/demo"),
    force: bool = False,
    console: Console | None = None,
    steps: list[Step] | None = None,
) -> DemoContext:
    """Run the demo's steps in order in workspace `ws`, printing each with its time; returns the context."""
    console = console or Console()
    data = ws.path(data_dir).resolve()
    require_demo_folder(ws, data)
    ctx = DemoContext(ws=ws, data_dir=data, answers=answers_path(data), force=force, console=console)
    steps = ALL_STEPS if steps is None else steps
    total = time.perf_counter()
    for i, step in enumerate(steps, 1):
        start = time.perf_counter()
        summary = step.run(ctx)
        console.print(
            f"[bold][{i}/{len(steps)}] {step.name}[/] {summary} [dim]({time.perf_counter() - start:.1f}s)[/]",
            highlight=False,
        )
    console.print(f"demo done in {time.perf_counter() - total:.1f}s (workspace {ws.root})", highlight=False)
    return ctx
