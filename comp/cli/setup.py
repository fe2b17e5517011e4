"""`comp init`, `comp download`, `comp verify`, `comp folds`: from a competition's files to a workspace."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from comp.cli.output import console, fail, say_next
from comp.core.config import KINDS
from comp.core.errors import CompError
from comp.core.workspace import Workspace

if TYPE_CHECKING:  # comp.setup.verify imports numpy and PIL (~0.6 s); `comp --help` should not wait for that
    from comp.setup.verify import Issue, VerifyReport


def init(
    data_dir: Path = typer.Argument(..., metavar="DATA_DIR", help="Folder with the competition's downloaded "
                                    "(unzipped) files."),
    name: str = typer.Option("", "--name", help="Competition slug on its platform (default: the folder name)."),
    competition: str = typer.Option("", "--competition", "-c", metavar="SLUG", help="The Kaggle competition: sets "
                                    "--name SLUG --platform kaggle and reads its metric from Kaggle's record."),
    platform: str = typer.Option("none", "--platform", help="kaggle | codabench | none."),
    kind: str = typer.Option("", "--kind", help=f"Force the kind: {'|'.join(KINDS)}."),
    metric: str = typer.Option("", "--metric", help="Metric (default: by kind, e.g. accuracy, roc_auc, log_loss, "
                               "f2_samples)."),
    id_column: str = typer.Option("", "--id-column", help="The id column (sample submission and labels CSV)."),
    label_column: str = typer.Option("", "--label-column", help="The label column of the labels CSV; A,B,C names "
                                     "one-hot label columns (a 1 marks the class)."),
    labels_csv: str = typer.Option("", "--labels-csv", help="The labels CSV (id -> label), when not detected."),
    sample: str = typer.Option("", "--sample", help="The sample submission CSV, when not detected."),
    test_dir: str = typer.Option("", "--test-dir", help="The folder of test images, when not detected."),
    group_column: str = typer.Option("", "--group-column", help="Column whose rows share a fold (of the labels CSV, "
                                     "or of --groups)."),
    groups: str = typer.Option("", "--groups", metavar="FILE", help="A second CSV holding --group-column and a "
                               "column of image names (StateFarm: driver_imgs_list.csv)."),
    label_pattern: str = typer.Option("", "--label-pattern", metavar="REGEX", help="Labels in the training file "
                                      "names: a regex with a group `label`, e.g. '(?P<label>.+)\\.\\d+\\.jpg'."),
    class_depth: int = typer.Option(0, "--class-depth", min=0, help="Class folders nested deeper: the folder level "
                                    "naming the class (1 = right below train/; 0: detect)."),
    positive: list[str] = typer.Option([], "--positive", metavar="LABELS",
                                       help="Binary: training labels counted positive, e.g. A,B (rest: negative)."),
    negative: list[str] = typer.Option([], "--negative", metavar="LABELS",
                                       help="Binary: training labels counted negative, e.g. Cover (rest: positive)."),
    n_folds: int = typer.Option(5, "--n-folds", help="K of the stratified K-fold split."),
    seed: int = typer.Option(42, "--seed", help="Seed of the fold split."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing comp.toml (recipes and runs are "
                               "kept)."),
) -> None:
    """Inspect a downloaded competition and write comp.toml, folds/, submissions/ and models/ (stock recipes).

    Run it in the (empty) workspace folder:

        comp init data/cifar-10 --platform kaggle --name cifar-10

        comp init data/hw1 --platform codabench --n-folds 5

        comp init data/alaska2 --negative Cover --metric weighted_auc   # Cover vs the other folders

        comp init data/state-farm --groups driver_imgs_list.csv --group-column subject   # drivers stay in one fold

    Check the table it prints; anything it guessed can be edited in comp.toml or set with the flags above.
    """
    # Imported here, not at the top: comp.setup.init pulls in pandas (~0.5 s) and `comp --help` must stay fast.
    from comp.setup.init import InitOptions, init_workspace, preview_mapping

    ws = Workspace.here(search=False)  # init writes comp.toml here, as `git init` does, even inside another workspace
    source = ""
    if competition:
        if (name and name != competition) or platform not in ("none", "kaggle"):
            raise fail(f"--competition {competition} names the Kaggle competition: drop --name/--platform")
        name, platform = competition, "kaggle"
        if not metric:
            from comp.platforms.fetch import kaggle_metric

            metric, source = kaggle_metric(competition)
            if not metric:
                console.print(f"[cyan]note:[/] {escape(source)}", highlight=False)
                source = ""
    options = InitOptions(
        name=name, platform=platform, kind=kind, metric=metric, metric_source=source, id_column=id_column,
        label_column=label_column,
        labels_csv=labels_csv, sample=sample, test_dir=test_dir, group_column=group_column, groups=groups,
        label_pattern=label_pattern, class_depth=class_depth, n_folds=n_folds,
        seed=seed, force=force, positive=[x for v in positive for x in v.split(",") if x],
        negative=[x for v in negative for x in v.split(",") if x],
    )
    found = init_workspace(data_dir, ws, options)
    from comp.kinds import kind_of

    comp = found.competition
    table = Table(title=f"comp init: {comp.name}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    train_where = ", ".join(comp.train_dirs) + (f"  (labels: {comp.labels_csv})" if comp.labels_csv else "")
    if comp.label_pattern:
        train_where += f"  (labels in file names: {comp.label_pattern})"
    if comp.layout == "folders" and comp.class_depth > 1:
        train_where += f"  (classes {comp.class_depth} folder levels down)"
    counts = ", ".join(f"{c} {n}" for c, n in list(found.class_counts.items())[:6])
    more = " ..." if len(found.class_counts) > 6 else ""
    labels_columns = ", ".join([comp.train_id_column, *(comp.train_label_columns or [comp.train_label_column])])
    rows = [
        ("layout", f"{comp.layout}: {train_where}"),
        ("train images", str(found.n_train)),
        ("classes", f"{comp.num_classes}: {counts}{more}" if counts else str(comp.num_classes)),
        ("test images", f"{found.n_test}  ({comp.test_dir})" if comp.test_dir else "none"),
        ("sample", comp.sample_submission or "none"),
        ("labels columns", labels_columns + (" (one-hot)" if comp.train_label_columns else "")
         if comp.layout == "csv" else "-"),
        ("groups", f"{comp.group_column} ({comp.groups_csv or comp.labels_csv}): {found.n_groups} groups, each kept "
         "in one fold" if comp.group_column else "none"),
        ("submission columns", ", ".join([comp.id_column, *comp.label_columns]) if comp.sample_submission else "-"),
        ("kind", kind_of(comp).describe(comp)),
        ("metric", comp.metric),
        ("class -> submission", preview_mapping(comp)),
        ("ignored files", f"{len(found.skipped)}: " + ", ".join(found.skipped[:10])
         + (" ..." if len(found.skipped) > 10 else "") if found.skipped else "none"),
        ("CSVs not read", ", ".join(found.unused_csvs) or "none"),
        ("recipes copied", ", ".join(found.copied_recipes) or "none new"),
    ]
    for key, value in rows:
        table.add_row(key, escape(value))  # file and class names are data, not markup
    console.print(table)
    for note in found.notes:
        console.print(f"[cyan]note:[/] {escape(note)}", highlight=False)
    for warning in found.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if len(found.skipped) > 10:
        console.print("ignored (not images): " + escape(", ".join(found.skipped)), highlight=False, soft_wrap=True)
    if found.backup:
        changes = "\n".join(found.diff) if found.diff else "(no change)"
        console.print(f"replaced comp.toml; the old one is kept as {escape(found.backup)}; the changes:\n"
                      f"{escape(changes)}", highlight=False, soft_wrap=True)
    console.print(f"wrote {ws.comp_toml}", highlight=False)
    say_next("comp verify", "decode every image once and check the labels")


def download(
    competition: str = typer.Option("", "--competition", "-c", help="Kaggle slug (default: comp.toml name)"),
    dest: Path | None = typer.Option(None, "--dir", help="where to unpack (default: data/SLUG)"),
) -> None:
    """Download a Kaggle competition's files, unzip them into data/SLUG, then set the workspace up on them.

    Example: comp download --competition aerial-cactus-identification
    Accept the competition's rules on kaggle.com first; credentials as for `comp submit`.
    """
    from comp.platforms.fetch import download_competition, kaggle_metric

    ws = Workspace.here()
    if not competition:
        if not ws.comp_toml.exists():
            raise fail("no competition given: pass --competition SLUG (the name in kaggle.com/competitions/SLUG)")
        competition = ws.load().name
    folder = download_competition(ws, competition, dest)
    console.print(f"[green]downloaded[/] {competition} into {folder}", highlight=False)
    command = f"comp init {folder} --platform kaggle --name {competition}"
    if ws.comp_toml.exists():
        console.print(f"{ws.comp_toml} exists, so it was left alone; to set up on the new files: {command} --force")
        return
    from comp.setup.discover import InitOptions
    from comp.setup.init import init_workspace

    metric, source = kaggle_metric(competition)
    if not metric:
        console.print(f"[cyan]note:[/] {escape(source)}", highlight=False)
    try:
        found = init_workspace(folder, ws, InitOptions(name=competition, platform="kaggle", metric=metric,
                                                       metric_source=source if metric else ""))
    except CompError as err:  # the files are kept: init can be rerun with explicit flags
        raise fail(f"downloaded, but `comp init` could not set up on them: {err}\nRerun it with flags: {command}") \
            from None
    comp = found.competition
    console.print(
        f"comp init: {found.n_train} train / {found.n_test} test images, {comp.num_classes} classes, kind "
        f"{comp.kind}, metric {comp.metric}; check {ws.comp_toml}, then `comp verify`", highlight=False,
    )
    if found.unused_csvs:
        console.print(f"CSVs not read: {escape(', '.join(found.unused_csvs))} (`comp init --help`: --groups, "
                      "--labels-csv)", highlight=False)
    for note in found.notes:
        if note.startswith("metric "):
            console.print(f"[cyan]note:[/] {escape(note)}", highlight=False)
    for warning in found.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


SHOW_PER_KIND = 20  # findings listed per kind; the full list is in the cache file


def verify(
    workers: int = typer.Option(0, "--workers", "-j", help="decoding processes (0: one per CPU core)"),
    force: bool = typer.Option(False, "--force", "-f", help="decode everything again even if the cache is current"),
    allow_broken_test: bool = typer.Option(False, "--allow-broken-test", help="let truncated test images through: "
                                           "they are predicted from the part that decodes (and listed)"),
) -> None:
    """Decode every train and test image once and check labels, folders and the sample submission.

    Lists broken files (zero-byte, truncated, not an image, unreadable) by path, ids without an image, images
    without a label or sample row, and train/test duplicates. Exits 1 on errors; duplicates are warnings.
    The result is cached, so a second run on unchanged data is instant; `comp train` runs it
    itself when the data was not verified since it last changed, and refuses data with errors.

        comp verify            # in a workspace made by `comp init`
        comp verify -j 8 --force
    """
    from comp.setup.verify import verify as run_verify

    ws = Workspace.here()
    competition = ws.load()
    report, cached = run_verify(competition, ws, workers=workers or None, use_cache=not force, console=console,
                                allow_broken_test=allow_broken_test)
    print_report(report, ws, cached)
    if not report.passed:
        raise fail(f"{len(report.errors)} error(s) in the data; fix them (see above) and run `comp verify` again")
    if not ws.folds_csv.exists():
        say_next("comp folds", "split the labelled images into stratified folds, once")
    else:
        say_next("comp train --model tiny --fold 0", "a quick first model; `comp models` lists the recipes")


def print_report(report: VerifyReport, ws: Workspace, cached: bool) -> None:
    how = "cached result (data unchanged; --force to redo)" if cached else f"decoded in {report.seconds:.1f}s"
    console.print(f"[bold]verify[/]: {report.n_train} train, {report.n_test} test images; {how}", highlight=False)
    if report.class_counts:
        counts = ", ".join(f"{c} {n}" for c, n in report.class_counts.items())
        console.print(f"  classes ({len(report.class_counts)}): {escape(counts)}", highlight=False, soft_wrap=True)
    for split, r in report.sizes.items():
        if r:
            console.print(
                f"  {split} sizes: width {r['min_w']}-{r['max_w']}, height {r['min_h']}-{r['max_h']} px",
                highlight=False,
            )
    _print_issues("error", "red", report.errors, ws)
    _print_issues("warning", "yellow", report.warnings, ws)
    if report.passed:
        extra = f" ({len(report.warnings)} warning(s))" if report.warnings else ""
        console.print(f"[bold green]ok[/]: the data passed verification{extra}", highlight=False)


def _print_issues(level: str, colour: str, issues: list[Issue], ws: Workspace) -> None:
    by_kind: dict[str, list[Issue]] = defaultdict(list)
    for issue in issues:
        by_kind[issue.kind].append(issue)
    for kind, group in by_kind.items():
        console.print(f"[bold {colour}]{level}[/]: {kind} ({len(group)})", highlight=False)
        for issue in group[:SHOW_PER_KIND]:
            # Paths and details are data (a file may be named "[draft].png"), never rich markup.
            console.print(f"  {escape(issue.path)}: {escape(issue.detail)}", highlight=False, soft_wrap=True)
        if len(group) > SHOW_PER_KIND:
            console.print(f"  ... {len(group) - SHOW_PER_KIND} more in {ws.verify_cache}", highlight=False)


def folds(
    n_folds: int = typer.Option(None, "--n-folds", min=2, help="number of folds (default: n_folds in comp.toml)"),
    seed: int = typer.Option(None, "--seed", help="seed of the shuffle (default: seed in comp.toml)"),
    force: bool = typer.Option(False, "--force", "-f", help="replace existing folds (models trained on them become "
                               "stale)"),
) -> None:
    """Split the labelled training images into stratified folds, once: folds/folds.csv + folds/folds.json.

    Stratified K-fold by label (grouped by comp.toml's group_column when set). Trained models record the folds'
    hash, so existing folds are replaced only with --force.

        comp folds                 # K and seed from comp.toml
        comp folds --n-folds 10 --seed 1 --force
    """
    from comp.folds import make_folds

    ws = Workspace.here()
    comp = ws.load()
    result, written = make_folds(comp, ws, n_folds=n_folds, seed=seed, force=force)
    table = result.frame.groupby("fold").size()
    sizes = ", ".join(str(n) for n in table.tolist())
    state = "wrote" if written else "up to date:"
    console.print(
        f"{state} {ws.folds_csv.relative_to(ws.root)}: {len(result.frame)} rows in {result.n_folds} folds "
        f"({result.params['method']}, seed {result.params['seed']}); rows per fold {sizes}; sha256 {result.hash[:12]}",
        highlight=False,
    )
    if written and (comp.n_folds, comp.seed) != (result.n_folds, result.params["seed"]):
        console.print(f"comp.toml updated: n_folds = {result.n_folds}, seed = {result.params['seed']} "
                      f"(was {comp.n_folds}, {comp.seed})", highlight=False)
    say_next("comp train --model tiny --fold all", "or any recipe `comp models` lists; `comp status` shows progress")
