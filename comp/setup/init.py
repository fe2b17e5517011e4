"""`comp init`: turn a downloaded competition folder into a workspace (comp.toml, folds/, submissions/, models/).

Discovery (comp/setup/discover.py) decides every field first and writes nothing; only when it has answered every
question are comp.toml and the generated files written, so a refusal never leaves a half-made workspace.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from comp.core import atomic
from comp.core.config import PLATFORMS, Competition
from comp.core.errors import CompError
from comp.core.workspace import STOCK_RECIPES, Workspace
from comp.setup.discover import Findings, InitOptions, discover
from comp.setup.items import class_counts, test_items, train_groups, train_items
from comp.setup.scan import normalise_label

__all__ = ["Findings", "InitOptions", "init_workspace", "preview_mapping"]



def init_workspace(data_dir: str | os.PathLike, ws: Workspace, options: InitOptions) -> Findings:
    """Inspect `data_dir`, write `ws/comp.toml`, create folds/, submissions/, models/ (with the stock recipes)."""
    if ws.comp_toml.exists() and not options.force:
        raise CompError(f"{ws.comp_toml} already exists; pass --force to replace it (recipes and runs are kept)")
    outer = next((folder for folder in ws.root.parents if (folder / "comp.toml").is_file()), None)
    if outer is not None:
        raise CompError(f"{ws.root} is inside the workspace {outer} (it holds {outer / 'comp.toml'}): a workspace in "
                        f"it would hide that one from every command run here; run `comp init` in {outer} (with "
                        "--force to redo it) or in a folder outside it")
    if options.platform not in PLATFORMS:
        raise CompError(f"--platform {options.platform!r} is not one of {', '.join(PLATFORMS)}")
    if options.n_folds < 2:
        raise CompError(f"--n-folds {options.n_folds}: use 2 or more (5 is usual)")
    if options.metric:
        from comp.core.metrics import greater_is_better  # sklearn is slow to import; only needed to check a --metric

        try:
            greater_is_better(options.metric)  # the metrics module knows the names; it raises a CompError
        except ValueError as err:
            raise CompError(f"--metric {options.metric!r}: not a metric (e.g. accuracy, map@5)") from err
    data = Path(data_dir).expanduser().resolve()
    if not data.is_dir():
        raise CompError(f"{data_dir} is not a folder; pass the folder holding the competition's unzipped files")
    found = discover(data, ws, options)
    comp = found.competition
    for folder in (ws.folds_dir, ws.submissions_dir, ws.models_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for rel, frame in found.generated.items():
        atomic.write_csv(ws.path(rel), frame)
    # Count through the same functions every later stage reads items with, so a comp.toml that init writes is one
    # those stages accept; comp.toml itself is written last.
    items = train_items(comp, ws)
    found.n_train = len(items)
    found.n_test = len(test_items(comp, ws))
    found.class_counts = class_counts(comp, items["label"])
    if comp.group_column:
        _count_groups(found, comp, ws, items)
    found.copied_recipes = _copy_recipes(ws)
    if options.metric_source:
        found.notes.append(f"metric {comp.metric}: {options.metric_source}")
    elif not options.metric:
        found.notes.append(
            f"metric {comp.metric} is a guess from the kind ({comp.kind}), not the competition's: set the real one "
            "with `comp init ... --metric NAME --force` or `metric = \"...\"` in comp.toml (accuracy, f1_macro, "
            "log_loss, roc_auc, qwk, map@5, ...; `comp init --competition SLUG` reads it from Kaggle)")
    old = ws.comp_toml.read_text(encoding="utf-8") if ws.comp_toml.is_file() else None
    if old is not None:  # --force: the replaced file (and its hand edits) is kept beside it, and the change shown
        backup = ws.comp_toml.with_name("comp.toml.bak")
        atomic.write_text(backup, old)
        found.backup = str(backup)
    ws.save(comp)
    if old is not None:
        import difflib

        new_text = ws.comp_toml.read_text(encoding="utf-8")
        found.diff = list(difflib.unified_diff(old.splitlines(), new_text.splitlines(), "comp.toml.bak", "comp.toml",
                                               lineterm=""))
    return found


def _count_groups(found: Findings, comp: Competition, ws: Workspace, items) -> None:
    """How many groups the folds will keep whole; images a groups CSV has no row for are named (each is a group of
    its own), and a groups CSV that matches no image at all is refused rather than silently ignored."""
    found.n_groups = int(items["group"].nunique())
    if not comp.groups_csv:
        return
    missing = train_groups(comp, ws, items)[1]
    if missing == len(items):
        raise CompError(f"{comp.groups_csv}: column {comp.groups_id_column!r} names none of the {len(items)} training "
                        "images; pass --id-column for the column holding their file names")
    if missing:
        found.warnings.append(f"{missing} of {len(items)} training images have no row in {comp.groups_csv}: each is "
                              "a group of its own")


def _copy_recipes(ws: Workspace) -> list[str]:
    """Copy the stock recipes into models/, never over a recipe the user already has (they edit these)."""
    copied = []
    for recipe in sorted(STOCK_RECIPES.glob("*.toml")):
        target = ws.recipe_path(recipe.stem)
        if not target.exists():
            with atomic.atomic_path(target) as tmp:
                shutil.copyfile(recipe, tmp)
            copied.append(recipe.stem)
    return copied


def preview_mapping(comp: Competition, limit: int = 6) -> str:
    """`class -> submission label` pairs for the summary; a pair is spelled out only where the two differ."""
    pairs = [f"{c} -> {s}" if c != s else c for c, s in zip(comp.classes, comp.submission_labels, strict=True)]
    more = f" (+{len(pairs) - limit} more)" if len(pairs) > limit else ""
    respelled = sum(normalise_label(c) == normalise_label(s) and c != s
                    for c, s in zip(comp.classes, comp.submission_labels, strict=True))
    return ", ".join(pairs[:limit]) + more + (f"; {respelled} respelled" if respelled else "")
