"""`comp stack`: logits of finished models in, one honest-CV-scored blend and its submission out; `comp score`.

Reads only the first waist (OOF and test logits keyed by id, `comp.logits`) and refuses any input that was not made
from the folds, classes and competition in force, naming the model and fold. Every CV number it reports is honest:
a blend with learned parameters is scored by `comp.ensemble.blend.honest_predictions` (cross_val_predict on folds.csv
split), so no row is scored by anything fitted on its label. The chosen blend is then refitted on all OOF rows and
applied to the fold-averaged test logits, and written through the second waist (`comp.submission`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from comp import logits
from comp.core import atomic, metrics
from comp.core.config import Competition
from comp.core.errors import CompError, StaleError
from comp.core.provenance import code_version, competition_hash, sha256_bytes, sha256_file
from comp.core.workspace import FULL, Workspace
from comp.ensemble import blend
from comp.folds import Folds, load_folds
from comp.kinds import kind_of
from comp.runs import (
    LogitsMeta,
    Run,
    differences,
    inputs_now,
    planned_folds,
    read_run,
    recipe_fields,
    require_current,
)
from comp.setup.items import class_indices
from comp.submission import ledger
from comp.submission.parse import labels_of, parse_csv
from comp.submission.write import NAME_PATTERN, to_csv_bytes, to_frame
from comp.submission.write import write as write_submission

METHODS = ("mean", "weights", "logreg")  # in order of simplicity: `best` keeps the simpler one on a tie
CHOICES = ("best", *METHODS)


@dataclass
class ModelLogits:
    """One model's inputs to a blend, checked and aligned: OOF rows in folds.csv order, test fold-averaged."""

    alias: str
    oof: np.ndarray  # (n_train, C) logits, row i = folds.frame row i, each from the fold model that did not train on it
    test_ids: np.ndarray  # (n_test,) str
    test: np.ndarray  # (n_test, C) mean over the fold models' test logits
    tta: str  # TTA the test logits were made with ("mixed: ..." when folds differ)
    meta: LogitsMeta = field(default_factory=LogitsMeta)  # provenance of the first trained fold's OOF logits
    folds: list[int] = field(default_factory=list)  # the folds with OOF logits (a --budget plan may train k of K)
    test_runs: list[int | str] = field(default_factory=list)  # the runs whose test logits `test` averages
    #                                                            (fold numbers, and FULL for the full fit)
    covered: np.ndarray | None = None  # which rows of folds.csv have OOF logits (bool)


@dataclass
class StackResult:
    name: str
    method: str  # the method used
    metric: str
    table: dict[str, dict]  # row name -> metrics.fold_scores(...) ("model:<alias>" for singles, then the methods)
    weights: dict[str, float]  # model alias -> share in the chosen blend
    temperature: float | None  # fitted on all OOF when the metric is log loss
    csv: Path | None  # None when the competition has no test set (CV only)
    json: Path | None
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # alias -> why it was left out (default model list only)


@dataclass(frozen=True)
class StackRecord:
    """submissions/<name>.json, typed: what a stack blended, how, its honest CV, the fitted blend, and the inputs it
    was made from (each model's recipe hash, the folds and competition hashes) and the sha256 of its CSV.

    The CSV and its record are one unit: the record is written first and names the CSV's sha256, then the CSV; a
    stack is complete only when both exist and match (`read_record(..., complete=True)`). A kill between the two
    leaves a record without its CSV, which the same `comp stack --name` replaces without --force."""

    name: str = ""
    models: list[str] = field(default_factory=list)  # the ledger reads models, method and cv
    method: str = ""
    cv: float | None = None
    metric: str = ""
    method_asked: str = ""
    weights: dict[str, float] = field(default_factory=dict)
    temperature: float | None = None
    tta: dict[str, str] = field(default_factory=dict)
    recipe_hash: dict[str, str | None] = field(default_factory=dict)
    cv_table: dict[str, Any] = field(default_factory=dict)
    oof_rows: int | None = None  # the rows the blend was fitted and scored on
    oof_folds: list[Any] = field(default_factory=list)
    test_runs: dict[str, Any] = field(default_factory=dict)  # alias -> whose test logits were averaged
    full: str = "with"  # how full fits were used (`comp stack --full`)
    folds_hash: str | None = None
    competition_hash: str | None = None
    code_version: str = ""
    created: str = ""
    csv_sha256: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the fitted blend, exactly: `comp bundle` rebuilds it

    def run(self, alias: str) -> Run:
        """The inputs of model `alias` when it was stacked, as a Run for `comp.runs.require_current`."""
        return Run(model=alias, recipe_hash=self.recipe_hash.get(alias), folds_hash=self.folds_hash,
                   competition_hash=self.competition_hash)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> StackRecord:
        if not isinstance(data, dict):
            raise CompError(f"expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in names})
        if not isinstance(record.models, list) or not isinstance(record.recipe_hash, dict):
            raise CompError("`models` must be a list and `recipe_hash` a table")
        return record


def read_record(ws: Workspace, name: str, complete: bool = False) -> StackRecord | None:
    """The record of stack `name` (None when there is none). With `complete`, CompError unless its CSV is there and
    is the one the record describes (each refusal says the command that makes it whole again)."""
    path, csv_path = ws.submission_json(name), ws.submission_csv(name)
    if not path.is_file():
        if complete:
            raise CompError(f"no stack named {name!r} ({path} and its .csv): run `comp stack --name {name}` first")
        return None
    try:
        record = StackRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, CompError) as err:
        raise CompError(f"{path} is not a stack record ({err}); re-run `comp stack --name {name} --force`") from None
    if complete:
        if not csv_path.is_file():
            raise CompError(f"stack {name!r} is incomplete: {csv_path} is missing (a `comp stack` was interrupted); "
                            f"re-run `comp stack --name {name}`")
        if record.csv_sha256 and sha256_file(csv_path) != record.csv_sha256:
            raise CompError(f"{csv_path} is not the CSV stack {name!r} wrote (its sha256 differs from {path}'s): it "
                            f"was replaced since; re-run `comp stack --name {name} --force`")
    return record


def _orphan_record(ws: Workspace, name: str) -> bool:
    """A record whose CSV was never written (a kill between the two writes): replaced without --force."""
    return ws.submission_json(name).is_file() and not ws.submission_csv(name).exists()


def require_stack_current(record: StackRecord, models: list[ModelLogits], what: str) -> None:
    """Refuse a stack whose models were retrained, or made on other folds or for another comp.toml, since it was made:
    the one staleness check (`comp.runs.require_current`), each model's logits against the record."""
    fix = (f"Re-run `comp stack --models {' '.join(record.models)} --name {record.name} --force` (and keep models "
           "trained on the stack's pseudo-labels under a new alias, so they never replace the stack's own)")
    for m in models:
        require_current(record.run(m.alias), m.meta.run(), f"{what}: model {m.alias!r}", fix,
                        fields=("recipe_hash", "folds_hash", "competition_hash"), required=(),
                        then="when stacked", now="now")


# ---------------------------------------------------------------------------------------------------------------
# Loading and refusing stale inputs


def finished_models(comp: Competition, ws: Workspace) -> list[str]:
    """Aliases under models/ whose every planned fold (all K, or the k of K a --budget plan chose) has both OOF
    and test logits, sorted."""
    if not ws.models_dir.is_dir():
        return []
    aliases = sorted(p.name for p in ws.models_dir.iterdir() if p.is_dir())
    return [
        a for a in aliases
        if all(ws.run(a, k).oof.is_file() and (ws.run(a, k).test.is_file() or not comp.test_dir)
               for k in planned_folds(ws, a, comp.n_folds))
    ]


def unfinished_models(comp: Competition, ws: Workspace) -> dict[str, str]:
    """Aliases under models/ with some runs but not every planned fold's logits -> why (which folds lack what), so
    the default `comp stack` can say which models it left out instead of skipping them without a word."""
    if not ws.models_dir.is_dir():
        return {}
    out = {}
    for alias in sorted(p.name for p in ws.models_dir.iterdir() if p.is_dir() and any(p.glob("fold*"))):
        planned = planned_folds(ws, alias, comp.n_folds)
        no_oof = [k for k in planned if not ws.run(alias, k).oof.is_file()]
        no_test = [k for k in planned if comp.test_dir and k not in no_oof and not ws.run(alias, k).test.is_file()]
        if not no_oof and not no_test:
            continue
        parts = []
        if no_oof:
            parts.append(f"fold{'s' if len(no_oof) > 1 else ''} {', '.join(map(str, no_oof))} of {comp.n_folds} "
                         f"not trained (`comp train --model {alias} --fold all`)")
        if no_test:
            parts.append(f"fold{'s' if len(no_test) > 1 else ''} {', '.join(map(str, no_test))} without test "
                         f"logits (`comp predict --model {alias} --fold all`)")
        out[alias] = "; ".join(parts)
    return out




def sent_files(ws: Workspace) -> set[Path]:
    """Submission files the ledger says were sent (none when it is unreadable: `comp submissions` reports that, and
    `check_name` refuses --force then)."""
    try:
        return ledger.sent_files(ws)
    except (CompError, OSError):
        return set()


def check_name(ws: Workspace, name: str, force: bool) -> None:
    """Refuse a --name that is not a plain file name, that names a submission the ledger holds (always: that file
    was sent), or one that exists (unless `force`, and only while the ledger is readable)."""
    if not NAME_PATTERN.fullmatch(name) or name.endswith((".csv", ".json")):
        raise CompError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (no folder, no extension), "
                        "e.g. --name blend_v2")
    instead = f"choose another name, e.g. --name {name}_v2"
    ledger.refuse_overwrite(ws, ws.submission_csv(name), force, instead)
    if not _orphan_record(ws, name):
        ledger.refuse_overwrite(ws, ws.submission_json(name), force, instead)


def free_name(ws: Workspace, base: str) -> str:
    """`base`, or `base_2`, `base_3`, ... : the first whose CSV and JSON do not exist and the ledger does not hold."""
    sent = sent_files(ws)
    name, n = base, 1
    while (ws.submission_csv(name).exists() or ws.submission_json(name).exists()
           or ws.submission_csv(name).resolve() in sent):
        n += 1
        name = f"{base}_{n}"
    return name


FULL_MODES = ("with", "only", "skip")  # a model's full fit: averaged with its folds | alone | not used


def load_model(comp: Competition, ws: Workspace, folds: Folds, alias: str, full: str = "with") -> ModelLogits:
    """Read and check the OOF and test logits of every trained fold of `alias` (at least one; a --budget plan may
    train k of K), and its full fit's test logits when it has one (`full`: FULL_MODES); CompError/StaleError names
    model and fold."""
    frame = folds.frame
    n_folds = int(frame["fold"].max()) + 1
    if n_folds != comp.n_folds:
        raise StaleError(
            f"{ws.folds_csv} has {n_folds} folds but comp.toml says n_folds = {comp.n_folds}; run "
            "`comp folds --force` (or fix n_folds) and retrain"
        )
    ids = frame["id"].astype(str).to_numpy()
    oof = np.full((len(frame), comp.num_classes), np.nan, dtype=np.float32)
    planned = planned_folds(ws, alias, comp.n_folds)
    for k in planned:
        if not ws.run(alias, k).oof.is_file():
            plan = "its --budget plan" if len(planned) < comp.n_folds else "every fold is, without a --budget plan"
            raise CompError(
                f"model {alias!r} fold {k}: {ws.run(alias, k).oof} is missing (fold {k} is planned: {plan}); train "
                f"it (`comp train --model {alias} --fold {k}`) or predict it (`comp predict --model {alias} --fold "
                f"{k}`), or leave {alias!r} out of --models"
            )
    # The planned folds, and any other fold trained as well.
    trained = [k for k in range(comp.n_folds) if ws.run(alias, k).oof.is_file()]
    tests: dict[int | str, logits.Logits] = {}
    ttas, meta0 = [], None
    for k in trained:
        paths = ws.run(alias, k)
        where = f"model {alias!r} fold {k}"
        # Without a test set (comp.toml test_dir empty) models are compared by CV alone.
        if comp.test_dir and not paths.test.is_file():
            raise CompError(
                f"{where}: {paths.test} is missing; predict it (`comp predict --model {alias} --fold {k}`), or leave "
                f"{alias!r} out of --models"
            )
        part = logits.load(paths.oof)
        test = logits.load(paths.test) if comp.test_dir else logits.Logits([], np.zeros((0, comp.num_classes)),
                                                                         part.classes, part.meta)
        meta0 = meta0 or part.meta
        for kind, lg, path in (("OOF", part, paths.oof), ("test", test, paths.test)):
            _check_provenance(comp, ws, folds, lg, f"{where} {kind} logits ({path})", alias, k, meta0, trained[0])
        rows = np.flatnonzero(frame["fold"].to_numpy() == k)
        _check_oof_ids(part, ids, rows, frame["fold"].to_numpy(), f"{where} OOF logits ({paths.oof})", alias, k)
        oof[rows] = part.reindex(ids[rows])
        tests[k] = test
    full_paths = ws.run(alias, FULL)
    if full != "skip" and comp.test_dir and full_paths.test.is_file():
        tests[FULL] = _full_fit(comp, ws, alias, meta0, trained[0])
    elif full == "only":
        raise CompError(f"--full only: model {alias!r} has no full fit ({full_paths.test}); train it with "
                        f"`comp train --model {alias} --fold full`, or use --full with")
    if full == "only":
        tests = {FULL: tests[FULL]}
    test_ids, test_sum = None, None
    for k, test in tests.items():
        if test_ids is None:
            test_ids, test_sum = test.ids, test.values.astype(np.float64)
        else:
            if set(test.ids) != set(test_ids) or len(test.ids) != len(test_ids):
                raise StaleError(
                    f"model {alias!r} {'full fit' if k == FULL else f'fold {k}'}: test logits "
                    f"({ws.run(alias, k).test}) cover other test ids than the other runs' ({len(test.ids)} vs "
                    f"{len(test_ids)} ids); re-predict: `comp predict --model {alias} --fold all`"
                )
            test_sum += test.reindex(test_ids)
        ttas.append(test.meta.tta)
    covered = np.isin(frame["fold"].to_numpy(), trained)
    if not np.isfinite(oof[covered]).all() or not np.isfinite(test_sum).all():
        raise CompError(f"model {alias!r}: its logits hold NaN or infinite values (a diverged run?); retrain it")
    tta = ttas[0] if len(set(ttas)) == 1 else "mixed: " + ",".join(ttas)
    return ModelLogits(alias, oof, np.asarray(test_ids), (test_sum / len(tests)).astype(np.float32), tta, meta0,
                       trained, list(tests), covered)


# A full fit may train other epochs than its folds (`comp train --fold full --set epochs=N`, or epoch_fraction: a
# --budget too short for a whole epoch); anything else in its recipe must be the folds' own, or the blend weights
# fitted on the folds' OOF would be applied to another model.
FULL_MAY_DIFFER = ("epochs", "epoch_fraction", "budget")


def _full_fit(comp: Competition, ws: Workspace, alias: str, meta0: LogitsMeta, k0: int) -> logits.Logits:
    """The full fit's test logits, refused when made for other classes or another comp.toml than the folds, or
    from another recipe (beyond FULL_MAY_DIFFER) or an edited recipe file."""
    paths = ws.run(alias, FULL)
    where = f"model {alias!r} full fit test logits ({paths.test})"
    test = logits.load(paths.test)
    retrain = f"Retrain it: `comp train --model {alias} --fold full --force`"
    if test.classes != list(comp.classes):
        raise StaleError(f"{where}: its classes differ from comp.toml's; {retrain}")
    require_current(test.meta.run(), meta0.run(), where, retrain, fields=("competition_hash",),
                    then="in the full fit", now=f"in fold {k0}")
    now = inputs_now(ws, alias, 0, "", competition_hash(comp))
    require_current(test.meta.run(), now, where, retrain, fields=("recipe_file_hash",))
    full_run, fold_run = read_run(paths), read_run(ws.run(alias, k0))
    if full_run is not None and fold_run is not None and full_run.recipe and fold_run.recipe:
        a = {k: v for k, v in full_run.recipe.items() if k not in FULL_MAY_DIFFER}
        b = {k: v for k, v in fold_run.recipe.items() if k not in FULL_MAY_DIFFER}
        if a != b:
            changed = sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key))
            named = [f"{key}: {a.get(key)!r} in the full fit, {b.get(key)!r} in fold {k0}" for key in changed]
            raise StaleError.naming(where, named, f"{retrain} (it takes the folds' settings), or --full skip")
    return test


def _check_provenance(comp: Competition, ws: Workspace, folds: Folds, lg: logits.Logits, where: str, alias: str,
                      k: int, meta0: LogitsMeta, k0: int = 0) -> None:
    """Refuse logits made for other classes, from other folds or an edited recipe file than those in force, or
    unlike fold 0's (another comp.toml, other recipe settings): one model's folds must be one model's OOF."""
    retrain = f"Retrain it: `comp train --model {alias} --fold {k} --force`"
    if lg.classes != list(comp.classes):
        raise StaleError(
            f"{where}: its classes ({', '.join(lg.classes[:5])}{', ...' if len(lg.classes) > 5 else ''}) differ "
            f"from comp.toml's ({', '.join(comp.classes[:5])}{', ...' if comp.num_classes > 5 else ''}); {retrain}"
        )
    if lg.meta.fold is not None and str(lg.meta.fold) != str(k):
        raise CompError(f"{where}: the file says it is fold {lg.meta.fold}; was it copied by hand? {retrain}")

    def fix_now(changed: list[str]) -> str:
        if changed in (["recipe_file_hash"], ["recipe_hash"]):
            return (f"Retrain with `comp train --model {alias} --fold all --force`, or restore the recipe file as "
                    "it was")
        return f"Its OOF rows would not be out-of-fold for this split. {retrain}"

    # Against what is in force now: folds.csv and the recipe as the run resolved it (the competition is checked
    # across models in load_models).
    recorded = _with_recipe(ws, lg.meta.run(), k)
    now = inputs_now(ws, alias, k, folds.hash, competition_hash(comp), recorded)
    require_current(recorded, now, where, fix_now, fields=("folds_hash", *recipe_fields(now)))
    if k == k0 and lg.meta == meta0:
        return

    def fix_fold0(changed: list[str]) -> str:
        if "recipe_hash" in changed:  # e.g. another --set epochs= for some folds
            return ("Retrain every fold with the same settings: "
                    f"`comp train --model {alias} --fold all --force [--set ...]`")
        return retrain

    # Against the first trained fold: every fold of a model shares its comp.toml and its resolved recipe.
    require_current(_with_recipe(ws, lg.meta.run(), k), _with_recipe(ws, meta0.run(), k0), where, fix_fold0,
                    fields=("competition_hash", "recipe_hash"), then=f"in fold {k}", now=f"in fold {k0}")


def _with_recipe(ws: Workspace, run: Run, k: int) -> Run:
    """`run` (from a logits meta) with the resolved recipe of the run directory it came from, when that directory's
    record is of the same recipe: lets a refusal name the setting that differs between folds."""
    try:
        record = read_run(ws.run(run.model, k)) if run.model else None
    except CompError:
        return run
    if record is None or record.recipe_hash != run.recipe_hash or not record.recipe:
        return run
    return dataclasses.replace(run, recipe=record.recipe, overrides=record.overrides)


def _check_oof_ids(part: logits.Logits, ids: np.ndarray, rows: np.ndarray, fold: np.ndarray, where: str,
                   alias: str, k: int) -> None:
    have = set(part.ids)
    missing = [i for i in ids[rows] if i not in have]
    if missing:
        raise StaleError(
            f"{where}: {len(missing)} id(s) of fold {k} in folds.csv have no logits (e.g. {missing[:3]}); "
            f"retrain: `comp train --model {alias} --fold {k}`"
        )
    position = {i: j for j, i in enumerate(ids)}
    unknown = [i for i in part.ids if i not in position]
    # Rows of other folds were this model's training rows: their logits have seen their labels.
    foreign = [i for i in part.ids if i in position and fold[position[i]] != k]
    if unknown or foreign:
        why = (f"{len(foreign)} row(s) of other folds, which were its training rows (e.g. {foreign[:3]}), so their "
               "logits have seen their labels" if foreign else f"{len(unknown)} id(s) not in folds.csv "
               f"(e.g. {unknown[:3]})")
        raise StaleError(f"{where}: holds {why}; OOF logits must cover exactly fold {k}; "
                         f"retrain: `comp train --model {alias} --fold {k}`")


def load_models(comp: Competition, ws: Workspace, aliases: list[str] | None,
                full: str = "with") -> tuple[Folds, list[ModelLogits]]:
    """Load and cross-check the models (default: every finished one); refusals name the model and fold. `full`
    (FULL_MODES): whether a model's full fit joins its folds' test logits, replaces them, or is left out."""
    if full not in FULL_MODES:
        raise CompError(f"--full {full!r}: choose one of {', '.join(FULL_MODES)}")
    folds = load_folds(ws, comp)
    if not aliases:
        aliases = finished_models(comp, ws)
        if not aliases:
            raise CompError(
                f"no finished models in {ws.models_dir} (a model needs OOF and test logits for at least one fold, "
                f"and none started but unfinished): train one first, e.g. `comp train --model ALIAS --fold all`"
            )
    dupes = sorted({a for a in aliases if aliases.count(a) > 1})
    if dupes:
        raise CompError(f"--models lists {', '.join(dupes)} more than once; name each model once")
    models = [load_model(comp, ws, folds, a, full) for a in aliases]
    ref = models[0]
    for m in models[1:]:
        if set(m.test_ids) != set(ref.test_ids):
            raise StaleError(
                f"model {m.alias!r} has test logits for other ids than {ref.alias!r}; re-predict both on the current "
                f"test set: `comp predict --model ALIAS --fold all`"
            )
        m.test = logits.Logits(m.test_ids, m.test, list(comp.classes)).reindex(ref.test_ids)
        m.test_ids = ref.test_ids
        # Two models meet in one blend only when made for the same comp.toml.
        require_current(m.meta.run(), ref.meta.run(), f"the pair of models {ref.alias!r} and {m.alias!r}",
                        "Retrain the stale one for this comp.toml", fields=("competition_hash",),
                        then=f"for {m.alias!r}", now=f"for {ref.alias!r}")
    refuse_other_competition(comp, models)
    covered = np.logical_and.reduce([m.covered for m in models])
    if not covered.any():
        trained = "; ".join(f"{m.alias}: folds {', '.join(map(str, m.folds))}" for m in models)
        raise CompError(f"the models share no trained fold ({trained}), so no row has OOF logits from all of them to "
                        "fit a blend on; train a common fold (`comp train --model ALIAS --fold K`) or stack fewer "
                        "models")
    return folds, models


def coverage(models: list[ModelLogits], folds: Folds) -> tuple[np.ndarray, list[int]]:
    """The rows of folds.csv every model has OOF logits for (bool), and their folds."""
    covered = np.logical_and.reduce([m.covered for m in models])
    return covered, sorted({int(k) for k in folds.frame["fold"].to_numpy()[covered]})


def refuse_other_competition(comp: Competition, models: list[ModelLogits]) -> None:
    """Refuse models trained for another competition, or before its data or classes changed (the identity hash of
    comp.toml differs); edits that leave logits valid (metric, submission spelling) are not part of that hash."""
    now = Run(competition_hash=competition_hash(comp))
    stale = [m.alias for m in models if differences(m.meta.run(), now, fields=("competition_hash",))]
    if stale:
        raise StaleError(
            f"model(s) {', '.join(stale)} were trained for another competition or before comp.toml's data or classes "
            f"changed (competition hash differs); retrain: `comp train --model {stale[0]} --fold all --force`"
        )


def labels(comp: Competition, folds: Folds) -> np.ndarray:
    return class_indices(comp, folds.frame["label"], "folds.csv")


# ---------------------------------------------------------------------------------------------------------------
# Blending


def make_estimator(method: str, comp: Competition) -> Any:
    """The sklearn estimator of `method`; for log-loss competitions a fitted temperature is part of it. Multi-label
    kinds blend per class; a kind that writes per-class decisions (tags) under an F-beta metric also fits a
    threshold per class, inside the estimator (so inside every CV fold)."""
    kind = kind_of(comp)
    if kind.multilabel:
        if method not in METHODS:
            raise CompError(f"--method {method!r}: choose one of {', '.join(CHOICES)}")
        est = {"mean": blend.MeanBlend(), "weights": blend.HillClimbBlend(metric=comp.metric, top_k=comp.top_k),
               "logreg": blend.MultiLabelLogistic()}[method]
        beta = metrics.f_beta_of(comp.metric)
        return blend.Thresholded(est, beta=beta) if kind.thresholded and beta else est
    if method == "mean":
        est = blend.MeanBlend()
    elif method == "weights":
        est = blend.HillClimbBlend(metric=comp.metric, top_k=comp.top_k)
    elif method == "logreg":
        return blend.LogisticStacker()  # its weights already set the temperature
    else:
        raise CompError(f"--method {method!r}: choose one of {', '.join(CHOICES)}")
    return blend.TemperatureScaled(est) if comp.metric.lower() == "log_loss" else est


def cv_table(comp: Competition, y: np.ndarray, fold: np.ndarray, models: list[ModelLogits],
             methods: tuple[str, ...] = METHODS) -> tuple[dict[str, dict], np.ndarray]:
    """Honest CV of each single model and of each blend method; also returns the (n, M, C) blend input."""
    multilabel = kind_of(comp).multilabel
    table = {f"model:{m.alias}": metrics.fold_scores(comp.metric, y, m.oof, fold, comp.top_k) for m in models}
    X = blend.blend_inputs([m.oof for m in models], multilabel)
    for method in methods:
        oof = blend.honest_logits(make_estimator(method, comp), X, y, fold, multilabel)
        table[method] = metrics.fold_scores(comp.metric, y, oof, fold, comp.top_k)
    return table, X


def pick_best(metric: str, table: dict[str, dict], methods: tuple[str, ...] = METHODS) -> str:
    best = methods[0]
    for method in methods[1:]:
        if metrics.is_better(metric, table[method]["oof"], table[best]["oof"]):
            best = method
    return best


def stack(comp: Competition, ws: Workspace, models: list[str] | None = None, method: str = "best",
          name: str | None = None, force: bool = False, full: str = "with") -> StackResult:
    """Blend `models` (default: all finished) with `method` (`best`: the best honest CV) and write the submission.

    The blend is fitted on the OOF rows every model covers (all of folds.csv, or the folds a --budget plan
    trained; the result says which) and applied to each model's test logits: the mean of its folds' and, with
    `full` = "with" (default), its full fit's, each run counted once ("only": the full fit alone; "skip": folds
    only). An existing submission is replaced only for an explicit `name` with `force`, never when the ledger
    holds it; without `name` the default name gets a `_2`, `_3`, ... suffix instead of colliding."""
    if method not in CHOICES:
        raise CompError(f"--method {method!r}: choose one of {', '.join(CHOICES)}")
    if name:
        check_name(ws, name, force)  # before minutes of CV, not after
    skipped = unfinished_models(comp, ws) if not models else {}
    folds, loaded = load_models(comp, ws, models, full)
    aliases = [m.alias for m in loaded]
    covered, used_folds = coverage(loaded, folds)
    y, fold = labels(comp, folds)[covered], folds.frame["fold"].to_numpy()[covered]
    for m in loaded:
        m.oof = m.oof[covered]
    notes = []
    if not covered.all():
        notes.append(f"OOF covers {int(covered.sum())} of {len(covered)} rows (fold{'s' if len(used_folds) > 1 else ''}"
                     f" {', '.join(map(str, used_folds))} of {comp.n_folds}): the blend is fitted and scored on "
                     "those rows only")
    methods = METHODS if method == "best" else (method,)
    if len(used_folds) < 2:
        # Honest CV of a fitted blend needs another fold to fit on; with one fold the models are averaged.
        if method not in ("best", "mean"):
            raise CompError(f"--method {method}: a fitted blend needs OOF rows of 2 or more folds, these models "
                            f"share fold {used_folds[0]} only; use --method mean, or train another fold")
        methods = ()
        notes.append(f"one fold of OOF (fold {used_folds[0]}): the models are averaged (mean); fitted blends need "
                     "two or more")
    # The blends' BLAS calls are memory-bound matrix-vector products: extra BLAS threads only contend for the
    # cores (measured 2.5x slower with 2 threads on a busy 2-core box, bench/bench_stack.py).
    with threadpool_limits(limits=1, user_api="blas"):
        table, X = cv_table(comp, y, fold, loaded, methods)
        if not methods:
            final = blend.MeanBlend().fit(X, y)
            logits = blend.predict_logits(final, X, kind_of(comp).multilabel)
            table["mean"] = metrics.fold_scores(comp.metric, y, logits, fold, comp.top_k)
            chosen = "mean"
        else:
            chosen = pick_best(comp.metric, table, methods) if method == "best" else method
            final = make_estimator(chosen, comp).fit(X, y)
        test_probs = blend_probabilities(comp, final, [m.test for m in loaded])
    name = name or free_name(ws, _default_name(aliases, chosen))
    left_out = [f"left out {alias}: {why}" for alias, why in skipped.items()]
    fulls = [m.alias for m in loaded if FULL in m.test_runs]
    if fulls and comp.test_dir:
        how = "used alone" if full == "only" else "averaged with the folds' (each run counted once)"
        notes.append(f"test logits: the full fit{'s' if len(fulls) > 1 else ''} of {', '.join(fulls)} {how}")
    if isinstance(final, blend.Thresholded):
        shown = ", ".join(f"{c} {1 / (1 + np.exp(-t)):.2f}" for c, t in zip(comp.classes, final.offsets_, strict=True))
        notes.append(f"a threshold per class, fitted on the OOF rows (and inside each CV fold for the table): {shown}")
    weights = {a: float(w) for a, w in zip(aliases, final.weights_, strict=True)}
    temperature = float(final.temperature_) if hasattr(final, "temperature_") else None
    if not comp.test_dir:
        note = "the competition has no test images (comp.toml test_dir is empty): CV only, no submission written"
        return StackResult(name, chosen, comp.metric, table, weights, temperature, None, None,
                           [*left_out, *notes, note], skipped)

    frame = to_frame(comp, ws, [str(i) for i in loaded[0].test_ids], test_probs)
    record = StackRecord(
        name=name, models=aliases, method=chosen, cv=table[chosen]["oof"], metric=comp.metric, method_asked=method,
        weights=weights, temperature=temperature, tta={m.alias: m.tta for m in loaded},
        recipe_hash={m.alias: m.meta.recipe_hash for m in loaded}, cv_table=table,
        oof_rows=int(covered.sum()),  # the rows the blend was fitted and scored on
        oof_folds=used_folds,
        test_runs={m.alias: m.test_runs for m in loaded},  # whose test logits were averaged ("full": full fit)
        full=full, folds_hash=folds.hash, competition_hash=loaded[0].meta.competition_hash,
        code_version=code_version(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        csv_sha256=sha256_bytes(to_csv_bytes(comp, frame)), params=fitted_params(final),
    )
    # The record first, naming the CSV's sha256, then the CSV: a kill between leaves a record without its CSV,
    # which every reader refuses as incomplete and the same command replaces (never a CSV without its record).
    atomic.write_json(ws.submission_json(name), record.to_dict())
    try:
        csv_path = write_submission(comp, ws, name, frame)
    except CompError:
        ws.submission_json(name).unlink(missing_ok=True)  # its CSV was refused: no record of a file never written
        raise
    return StackResult(name, chosen, comp.metric, table, weights, temperature, csv_path, ws.submission_json(name),
                       [*left_out, *notes], skipped)


def blend_probabilities(comp: Competition, estimator: Any, model_logits: list[np.ndarray]) -> np.ndarray:
    """A fitted blend applied to the models' test logits -> probabilities (n, C) as the kind makes them (softmax,
    or a sigmoid per class): what stack writes, the bundle's kernel rebuilds and pseudo-labels read."""
    kind = kind_of(comp)
    z = blend.predict_logits(estimator, blend.blend_inputs(model_logits, kind.multilabel), kind.multilabel)
    return kind.probabilities(z)


def fitted_params(estimator: Any) -> dict[str, Any]:
    """A fitted blend's learned state as JSON values (floats round-trip exactly), for `from_params`."""
    if isinstance(estimator, blend.Thresholded):
        return {"kind": "thresholded", "offsets": estimator.offsets_.tolist(),
                "inner": fitted_params(estimator.estimator_)}
    if isinstance(estimator, blend.MultiLabelLogistic):
        return {"kind": "perclass_logreg", "coef": estimator.coef_.tolist(),
                "intercept": estimator.intercept_.tolist()}
    if isinstance(estimator, blend.TemperatureScaled):
        return {"kind": "temperature", "temperature": float(estimator.temperature_),
                "inner": fitted_params(estimator.estimator_)}
    if isinstance(estimator, blend.LogisticStacker):
        return {"kind": "logreg", "coef": estimator.coef_.tolist(), "intercept": estimator.intercept_.tolist()}
    if isinstance(estimator, blend.MeanBlend | blend.HillClimbBlend):
        return {"kind": "weights", "weights": [float(w) for w in estimator.weights_]}
    raise CompError(f"cannot save the parameters of a {type(estimator).__name__} blend")


def from_params(params: dict[str, Any], num_classes: int) -> Any:
    """The fitted estimator `fitted_params` described, ready for `predict_log_proba` (nothing is refitted)."""
    kind = params.get("kind")
    if kind == "thresholded":
        inner = from_params(params["inner"], num_classes)
        est = blend.Thresholded(inner)
        est.estimator_, est.offsets_ = inner, np.asarray(params["offsets"], dtype=np.float64)
        return est
    if kind == "perclass_logreg":
        est = blend.MultiLabelLogistic()
        est.coef_, est.intercept_ = np.asarray(params["coef"]), np.asarray(params["intercept"])
        est.n_models_ = est.coef_.shape[1]
        return est
    if kind == "temperature":
        inner = from_params(params["inner"], num_classes)
        est = blend.TemperatureScaled(inner)
        est.estimator_, est.classes_, est.temperature_ = inner, inner.classes_, float(params["temperature"])
        return est
    if kind == "logreg":
        est = blend.LogisticStacker(per_class=isinstance(params["coef"][0], list))
        est.coef_, est.intercept_ = np.asarray(params["coef"]), np.asarray(params["intercept"])
        n_models = len(est.coef_)
    elif kind == "weights":
        est = blend.MeanBlend()
        est.weights_ = np.asarray(params["weights"], dtype=np.float64)
        n_models = len(est.weights_)
    else:
        raise CompError(f"unknown blend parameters (kind {kind!r}); re-run `comp stack` with this version of comp")
    est.classes_, est.n_models_ = np.arange(num_classes), n_models
    return est


def _default_name(aliases: list[str], method: str) -> str:
    joined = "-".join(aliases) if len(aliases) <= 4 else f"{len(aliases)}models"
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{joined}_{method}")


# ---------------------------------------------------------------------------------------------------------------
# Scoring a submission against local answers


def score_file(comp: Competition, ws: Workspace, path: str | Path, answers: str | Path | None = None) -> float:
    """The competition metric of submission CSV `path` against answers (id,label; default comp.test_answers), as the
    graders compute it on the same file: the values as written (the kind decodes them), in float64."""
    answers = answers or (ws.path(comp.test_answers) if comp.test_answers else None)
    if answers is None:
        raise CompError("no answers to score against: pass --answers CSV (id,label) or set test_answers in comp.toml")
    answers = Path(answers)
    if not answers.is_file():
        raise CompError(f"answers file {answers} not found; pass --answers CSV (columns id,label)")
    path = Path(path)
    if not path.is_file():
        raise CompError(f"{path} not found: pass a submission CSV, e.g. submissions/NAME.csv")
    truth = parse_csv(answers.read_bytes(), f"answers {answers}")
    if len(truth.header) < 2:
        raise CompError(f"answers {answers}: expected two columns (id,label), got {','.join(truth.header)}")
    ids_col, label_col = truth.header[0], truth.header[1]
    y = _answer_indices(comp, truth.column(label_col), f"answers {answers} column {label_col!r}")
    table = parse_csv(path.read_bytes(), f"submission {path}")
    if comp.id_column not in table.header:
        raise CompError(f"submission {path}: no id column {comp.id_column!r} (header: {','.join(table.header)})")
    scores = _submission_scores(comp, table, f"submission {path}")
    # Joined on id, in float64 as written (a Logits would round to float32 and move the score by ~1e-8).
    row_of = {i: r for r, i in enumerate(table.column(comp.id_column))}
    truth_ids = truth.column(ids_col)
    lacking = [i for i in truth_ids if i not in row_of]
    if lacking:
        raise CompError(f"submission {path} lacks {len(lacking)} answered id(s), e.g. {lacking[:3]}; was it made "
                        "for this competition?")
    aligned, y = kind_of(comp).as_scored(comp, scores[[row_of[i] for i in truth_ids]], y)
    try:
        return metrics.score(comp.metric, y, aligned, comp.top_k, written=True)
    except ValueError as err:  # what the grader would refuse too, e.g. one class only among the answers
        raise CompError(f"{comp.metric} cannot score {path} against {answers}: {err}") from None


def _answer_indices(comp: Competition, values: list[str], where: str) -> np.ndarray:
    """The answers as the kind's targets (class indices, or multi-hot), spelled as trained or as submitted."""
    kind = kind_of(comp)
    y, unknown = kind.targets(list(comp.classes), values)
    if unknown:
        y, unknown = kind.targets(labels_of(comp), values)
    if unknown:
        raise CompError(f"{where}: label(s) {unknown[:3]} are not classes of comp.toml; is it the right answers file?")
    return y


def _submission_scores(comp: Competition, table: Any, where: str) -> np.ndarray:
    """Per-class scores (n, C) in comp.classes order from a parsed submission, as its kind reads them."""
    label_cols = [c for c in table.header if c != comp.id_column]
    try:
        return kind_of(comp).decode(comp, {c: table.column(c) for c in label_cols})
    except ValueError as err:
        raise CompError(f"{where}: {err}; run `comp check` on it") from None
