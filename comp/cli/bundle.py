"""`comp bundle`: a stack as an offline Kaggle code-competition notebook, and its local run."""

from __future__ import annotations

import typer
from rich.markup import escape

from comp.cli.output import console, err_console
from comp.core.workspace import Workspace


def bundle(
    name: str = typer.Argument("", metavar="[NAME]", help="the stack (`comp stack --name NAME`); default: the newest"),
    run_local: bool = typer.Option(False, "--run-local", help="also run the kernel as Kaggle would (fresh process, "
                                   "no network, wheels only) and compare with submissions/NAME.csv"),
    python: str = typer.Option("", "--python", metavar="PATH", help="with --run-local: run the kernel on the packages "
                               "of this interpreter or venv (e.g. one with numpy 1.26, pandas 2.2, scikit-learn 1.2 "
                               "to rehearse an older Kaggle image) instead of this environment's"),
    gpu: bool = typer.Option(False, "--gpu/--cpu", help="ask Kaggle for a GPU session"),
    owner: str = typer.Option("", "--owner", help="Kaggle user name for the slugs (default: $KAGGLE_USERNAME or "
                              "kaggle.json)"),
    time_limit: float = typer.Option(9.0, "--time-limit", help="the competition's runtime limit, hours"),
    test_size: int | None = typer.Option(None, "--test-size", help="images in the hidden test set, for the time "
                                         "estimate (default: the local test set's)"),
) -> None:
    """Write bundles/NAME/: a Kaggle dataset (weights, recipes, blend, wheels) and a notebook that reproduces the stack
    offline on the hidden test set.

        comp bundle blend_v2
        comp bundle blend_v2 --run-local          # then: comp submit --kernel blend_v2 -m "v2" --dry-run
        comp bundle blend_v2 --gpu --test-size 50000 --time-limit 9
        comp bundle blend_v2 --run-local --python ~/venvs/kaggle-2024/bin/python
    """
    from comp.bundle.build import build_bundle
    from comp.core.errors import CompError

    if python and not run_local:
        raise CompError("--python PATH chooses the interpreter of the local run: add --run-local")

    ws = Workspace.here()
    comp = ws.load()
    say = lambda text: console.print(text, highlight=False, soft_wrap=True)  # noqa: E731
    result = build_bundle(comp, ws, name or None, gpu=gpu, owner=owner, time_limit_h=time_limit, test_size=test_size,
                          say=say)
    per_image = (f"{1000 * result.per_image_s:.1f} ms/image + {result.fixed_s:.1f} s per run on {result.device}"
                 if result.per_image_s else "not timed")
    estimate = f", about {result.estimate_s / 60:.1f} min for {result.n_test} images" if result.estimate_s else ""
    say(escape(f"bundle {result.name}: {result.paths.dir} ({result.size_bytes / 2**20:.1f} MiB, {per_image}"
               f"{estimate})"))
    say(escape(f"  dataset {result.dataset_slug} (content {result.dataset_hash[:12]}), kernel {result.kernel_slug}"))
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if not run_local:
        say(f"next: comp bundle {result.name} --run-local")
        return
    from comp.bundle.local import verify_bundle

    def summary(variant: bool, done) -> None:  # noqa: ANN001 - a comp.bundle.local.LocalRun
        what = (f"a test set with {len(done.missing_ids)} local image(s) left out and {len(done.extra_ids)} new "
                "one(s)" if variant else "the local test set")
        image = ", ".join(f"{k} {done.versions[k]}" for k in ("python", "numpy", "pandas", "scikit-learn", "torch")
                          if k in done.versions)
        say(escape(f"local run on {what} ({image}): {done.n_rows} rows in {done.seconds:.1f} s "
                   f"({1000 * done.per_image_s:.1f} ms/image of prediction, models built included); "
                   f"{done.compared} id(s) match "
                   f"submissions/{result.name}.csv (labels equal, probabilities within {done.max_abs_diff:.1e})"))

    verify_bundle(comp, ws, result.name, say=say, done=summary, python=python or None)
    say(f"[green]ok:[/] the kernel reproduces submissions/{escape(result.name)}.csv offline; "
        f"next: comp submit --kernel {escape(result.name)} -m MESSAGE --dry-run")
