"""Assigning training rows to folds, once, and reading them back with their hash.

`make_folds` writes `folds/folds.csv` (id, label, fold; rows in `train_items` order) and `folds/folds.json`
(parameters, the csv's sha256, a hash of the labels). Every trained model records the folds hash, so folds are
never silently rewritten: a new split needs `--force` and makes earlier runs stale. `load_folds` refuses a csv that
was edited by hand (its sha256 no longer matches folds.json).
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from comp.core import atomic
from comp.core.config import COMPETITION_BOUNDS, Competition
from comp.core.errors import CompError, StaleError
from comp.core.provenance import sha256_bytes, sha256_file, sha256_obj
from comp.core.workspace import FULL, Workspace


@dataclass(frozen=True)
class Folds:
    """folds.csv as read back: `frame` (id, label, fold), `hash` (sha256 of folds.csv), `params` (folds.json)."""

    frame: pd.DataFrame
    hash: str
    params: dict[str, Any]

    @property
    def n_folds(self) -> int:
        return int(self.params["n_folds"])


def labels_hash(items: pd.DataFrame) -> str:
    """A hash of the (id, label) pairs in order: changes when a row is added, dropped, reordered or relabelled."""
    return sha256_obj([items["id"].astype(str).tolist(), items["label"].astype(str).tolist()])


def split_method(multilabel: bool, grouped: bool) -> str:
    """The name of the splitter `assign_folds` uses (recorded in folds.json)."""
    if multilabel:
        return "StratifiedGroupKFold(rarest tag)" if grouped else "MultilabelStratifiedKFold"
    return "StratifiedGroupKFold" if grouped else "StratifiedKFold"


def assign_folds(items: pd.DataFrame, n_folds: int, seed: int, groups: pd.Series | None = None,
                 targets: np.ndarray | None = None) -> np.ndarray:
    """The fold (0..n_folds-1) of every row of `items`, stratified by label (and grouped by `groups` when given).

    Multi-label `targets` (n, C) of 0/1 are split by iterative stratification (Sechidis et al. 2011, the
    iterative-stratification package's MultilabelStratifiedKFold): each tag's share is kept in every fold, rare tags
    first. With groups as well, rows are stratified by their rarest tag (StratifiedGroupKFold), the tag a fold would
    miss first. A tag rarer than the folds is allowed there: real tag sets have them (Planet's blow_down)."""
    if n_folds < 2:
        raise CompError(f"--n-folds {n_folds}: use 2 or more folds")
    multilabel = targets is not None and np.ndim(targets) == 2
    labels = items["label"].astype(str).to_numpy()
    if multilabel:
        targets = np.asarray(targets)
        per_tag = targets.sum(axis=0).astype(np.float64)
        rarest = np.argmin(np.where(targets > 0, per_tag, np.inf), axis=1)
        labels = np.where(targets.any(axis=1), rarest.astype(str), "none")
    counts = pd.Series(labels).value_counts()
    small = counts[counts < n_folds].sort_index() if not multilabel else counts.iloc[:0]
    if len(small):
        listed = ", ".join(f"{name!r} ({n} image{'s' if n != 1 else ''})" for name, n in small.items())
        smallest = int(small.min())
        fewer = f"use fewer folds (`comp folds --n-folds {smallest}`), or " if smallest >= 2 else ""
        raise CompError(
            f"{len(small)} class(es) have fewer images than the {n_folds} folds, so some fold would validate without "
            f"them: {listed}. To fix: {fewer}add images to those classes, or drop or merge them (their rows in the "
            "labels CSV, or their class folders) and run "
            "`comp init DATA_DIR --force`, then `comp folds`"
        )
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold  # 1-2 s to import: only when splitting

    fold = np.full(len(items), -1, dtype=np.int64)
    if multilabel and groups is None:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), targets)
    elif groups is None:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), labels)
    else:
        n_groups = groups.nunique()
        if n_groups < n_folds:
            raise CompError(
                f"group_column has only {n_groups} distinct group(s), fewer than the {n_folds} folds; "
                f"use `comp folds --n-folds {max(2, n_groups)}` or a finer group column"
            )
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), labels, groups.astype(str).to_numpy())
    for k, (_, valid) in enumerate(splits):
        fold[valid] = k
    return fold


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def make_folds(
    comp: Competition, ws: Workspace, n_folds: int | None = None, seed: int | None = None, force: bool = False
) -> tuple[Folds, bool]:
    """Split `train_items` into folds and write folds.csv + folds.json; returns (folds, written).

    Existing folds made with the same parameters from the same labels are kept as they are (written=False);
    different ones are replaced only with `force`, because trained models carry the old folds' hash. When `n_folds`
    or `seed` differ from comp.toml's, comp.toml is updated to match the folds written.
    """
    from comp.setup.items import class_indices, train_items

    n_folds = comp.n_folds if n_folds is None else n_folds
    seed = comp.seed if seed is None else seed
    COMPETITION_BOUNDS["n_folds"].check(n_folds, "--n-folds")
    COMPETITION_BOUNDS["seed"].check(seed, "--seed")
    items = train_items(comp, ws)
    if items.empty:
        raise CompError("no labelled training images: check train_dirs/labels_csv in comp.toml (or run `comp init`)")
    dup = items["id"][items["id"].duplicated()]
    if len(dup):
        raise CompError(
            f"{comp.labels_csv or comp.train_dirs}: id {dup.iloc[0]!r} has more than one labelled row "
            f"({dup.nunique()} such id(s)); folds and logits are keyed by id, so keep one row per id (`comp verify` "
            "lists them all)"
        )
    targets = class_indices(comp, items["label"], "training labels")
    multilabel = targets.ndim == 2
    method = split_method(multilabel, bool(comp.group_column))
    params = {
        "competition": comp.name,
        "n_folds": n_folds,
        "seed": seed,
        "method": method,
        "group_column": comp.group_column,
        "n_rows": len(items),
        "labels_hash": labels_hash(items),
    }
    if comp.group_column:  # folds made before a groups CSV was edited could split one of its new groups
        params["groups_hash"] = sha256_obj(items["group"].astype(str).tolist())
    if ws.folds_csv.exists() or ws.folds_json.exists():
        existing = _read_params(ws)
        # The name is informative only: renaming the competition in comp.toml does not change the split.
        same = existing is not None and all(existing.get(k) == v for k, v in params.items() if k != "competition")
        if same and not force:
            return load_folds(ws), False
        if not force:
            was = f" (n_folds={existing.get('n_folds')}, seed={existing.get('seed')})" if existing else ""
            raise CompError(
                f"{ws.folds_csv} already exists{was} and differs from what was asked; models trained on it record "
                "its hash and would all become stale. Re-run with --force to replace it anyway"
            )
        from comp.core.runlock import live_runs

        busy = live_runs(ws)
        if busy:  # every fold it trains would be stale on arrival (made on folds that no longer exist)
            alias, k, who = busy[0]
            raise CompError(
                f"{alias} fold {k} is being trained now (process {who.pid} on {who.host}) on the folds in force; "
                f"replacing {ws.folds_csv} would make it stale on arrival. Wait for it, or stop it, then run "
                "`comp folds --force` again"
            )
    groups = items["group"] if comp.group_column else None
    fold = assign_folds(items, n_folds, seed, groups, targets if multilabel else None)
    frame = pd.DataFrame({"id": items["id"].astype(str), "label": items["label"].astype(str), "fold": fold})
    data = _csv_bytes(frame)
    digest = sha256_bytes(data)
    params["csv_sha256"] = digest
    # csv first: a crash between the two writes leaves a json whose hash does not match, which load_folds reports.
    atomic.write_bytes(ws.folds_csv, data)
    atomic.write_json(ws.folds_json, params)
    if (comp.n_folds, comp.seed) != (n_folds, seed):
        # comp.toml follows the folds just written: train, stack and status read n_folds from it, and a stale 5 beside
        # a 2-fold folds.csv made `comp stack` refuse. Neither field is part of the competition's identity hash.
        ws.save(dataclasses.replace(comp, n_folds=n_folds, seed=seed))
    return Folds(frame, digest, params), True


def _read_params(ws: Workspace) -> dict[str, Any] | None:
    try:
        return json.loads(ws.folds_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_folds(ws: Workspace, comp: Competition | None = None) -> Folds:
    """Read folds.csv and check it against folds.json; with `comp`, also check it covers the current train_items.

    Raises CompError when absent or edited by hand, StaleError when the labelled data changed since.
    """
    if not ws.folds_csv.exists():
        raise CompError(f"no folds in {ws.folds_dir}: run `comp folds` first")
    params = _read_params(ws)
    if params is None or "csv_sha256" not in params:
        raise CompError(f"{ws.folds_json} is missing or unreadable: run `comp folds --force` to rebuild the folds")
    digest = sha256_file(ws.folds_csv)
    if digest != params["csv_sha256"]:
        raise CompError(
            f"{ws.folds_csv} does not match the sha256 recorded in {ws.folds_json.name} (edited by hand?); "
            "restore it, or run `comp folds --force` to make new folds (trained models then become stale)"
        )
    frame = pd.read_csv(ws.folds_csv, dtype={"id": str, "label": str, "fold": "int64"}, keep_default_na=False)
    folds = Folds(frame, digest, params)
    if comp is not None:
        check_matches(folds, comp, ws)
    return folds


def check_matches(folds: Folds, comp: Competition, ws: Workspace) -> None:
    """Raise StaleError unless `folds` were made from the current train_items (same ids, same labels)."""
    from comp.setup.items import train_items

    items = train_items(comp, ws)
    if folds.params.get("labels_hash") == labels_hash(items):
        return
    current = dict(zip(items["id"].astype(str), items["label"].astype(str), strict=True))
    stored = dict(zip(folds.frame["id"], folds.frame["label"], strict=True))
    added = [i for i in current if i not in stored]
    removed = [i for i in stored if i not in current]
    relabelled = [i for i in current if i in stored and current[i] != stored[i]]
    parts = [
        f"{len(ids)} {what} (e.g. {ids[0]!r})"
        for what, ids in (("new id(s)", added), ("removed id(s)", removed), ("relabelled id(s)", relabelled))
        if ids
    ] or ["the same rows in another order"]
    where = comp.labels_csv or ", ".join(comp.train_dirs)
    raise StaleError.naming(
        str(ws.folds_csv), [f"the training labels ({where}) changed since it was made: {', '.join(parts)}"],
        "Run `comp folds --force` (models trained on the old folds become stale)",
    )


def parse_runs(fold: int | str, n_folds: int) -> list[int | str]:
    """`--fold K|all|full` -> the runs it names: fold numbers, or FULL (the fit on every labelled row)."""
    return [FULL] if fold == FULL else list(parse_fold(fold, n_folds))


def parse_fold(fold: int | str, n_folds: int) -> list[int]:
    """`--fold K|all` -> the fold numbers it names; a bad value is a CompError listing the valid ones."""
    if fold == "all":
        return list(range(n_folds))
    try:
        k = int(fold)
    except ValueError:
        raise CompError(f"--fold {fold!r}: give a fold number 0..{n_folds - 1}, `all` or `full`") from None
    if not 0 <= k < n_folds:
        raise CompError(f"--fold {fold}: folds.csv has folds 0..{n_folds - 1}; pick one of them or `all`")
    return [k]
