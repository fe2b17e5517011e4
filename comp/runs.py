"""One (model, fold) run's record: what its artifacts were made from, and the one check that refuses stale ones.

`Run` is provenance.json, typed: the hashes of the inputs (resolved recipe, recipe file, folds, competition), the
code version, the resolved recipe's settings (so a refusal can name the setting that changed), the TTA, whether the
run finished and how long it took. `LogitsMeta` is the part of it that travels inside every logits file (the first
narrow waist), so stack and report check logits without opening the run's directory.

`require_current(recorded, current, what, fix)` is the one staleness check. Training (resume or skip), predict
(folds, comp.toml, the recipe resolved now: `inputs_now`), stack (the same, and each fold against fold 0) and status
all call it; its
StaleError names every field that differs with both values, e.g. `epochs: 1 when trained, 10 now`, and the command
that fixes it. folds.csv, a layer below, words its refusal the same way (`StaleError.naming`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tomli_w

from comp.core import atomic
from comp.core.config import tomllib
from comp.core.errors import CompError, StaleError
from comp.core.workspace import FULL, RunPaths, Workspace
from comp.modeling.recipe import load_recipe, recipe_dict, recipe_file_hash, recipe_hash

# What a run is made from, in the order a refusal lists them; a change in any makes its artifacts stale.
INPUTS = ("recipe_hash", "folds_hash", "competition_hash", "recipe_file_hash", "pseudo_labels")
# What each input is, as a person reads it.
LABELS = {
    "recipe_hash": "recipe settings",
    "recipe_file_hash": "recipe file",
    "folds_hash": "folds/folds.csv",
    "competition_hash": "comp.toml (the competition's data and classes)",
    "pseudo_labels": "pseudo-labels",
}
# A recorded value of None means "not recorded" (a file written by hand or by an older comp) and by default is not
# compared; except the folds hash: logits of unknown folds may hold rows their model trained on, so they are refused.
ALWAYS_RECORDED = ("folds_hash",)


@dataclass(frozen=True)
class Run:
    """What one (model, fold) run was made from and how it went: provenance.json, read and written as it is."""

    model: str = ""  # the recipe alias (models/<alias>.toml)
    fold: int | str = -1  # a fold number, or FULL (the fit on every labelled row)
    recipe_hash: str | None = None  # sha256 of the resolved recipe, --set overrides included
    recipe_file_hash: str | None = None  # sha256 of the recipe file as it was (edits seen by predict and stack)
    folds_hash: str | None = None  # sha256 of folds/folds.csv
    competition_hash: str | None = None  # comp.core.provenance.competition_hash: data and classes of comp.toml
    code_version: str = ""
    name: str = ""  # the backbone (recipe `name`), for people reading the file
    recipe: dict[str, Any] = field(default_factory=dict)  # the resolved recipe, to name the settings that changed
    # The `--set` values it was trained with (the user's, then a budget's plan): with the recipe file they resolve
    # its recipe again, so every stage asks "is it current?" the same way (`inputs_now`). None: not recorded.
    overrides: list[str] | None = None
    pseudo_labels: str = ""  # the stack whose test predictions served as pseudo-labels; "" = none
    tta: str = ""  # TTA of the run's OOF and test logits
    finished: bool = False
    epochs_done: int = 0
    time: str = ""  # when the record was written (local time, ISO 8601)
    train_s: float | None = None  # finished runs: seconds of training, and of predicting OOF + test
    predict_s: float | None = None
    world_size: int | None = None  # processes that trained it (DDP)
    device: str | None = None

    def meta(self, tta: str | None = None, **extra: Any) -> LogitsMeta:
        """The logits meta of this run's OOF/test logits made with `tta` (default: the run's)."""
        return LogitsMeta(
            model=self.model, fold=self.fold, recipe_hash=self.recipe_hash, recipe_file_hash=self.recipe_file_hash,
            folds_hash=self.folds_hash, competition_hash=self.competition_hash, code_version=self.code_version,
            tta=self.tta if tta is None else tta, **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        """A record as read back; keys comp does not know (a newer version's) are ignored, missing ones default."""
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class LogitsMeta:
    """What a logits file was made from (stored inside it as JSON): the run's inputs, and its TTA."""

    model: str = ""
    fold: int | str | None = None
    recipe_hash: str | None = None
    recipe_file_hash: str | None = None
    folds_hash: str | None = None
    competition_hash: str | None = None
    code_version: str = ""
    tta: str = "none"
    tta_merge: str | None = None  # set by `comp predict`: mean (of logits) or prob
    tta_scores: dict[str, float] | None = None  # `comp predict --tta auto`: the OOF score of every preset tried

    def run(self) -> Run:
        """The run record these logits carry (inputs only), for `require_current`."""
        fold = -1 if self.fold is None else self.fold if self.fold == FULL else int(self.fold)
        return Run(model=self.model, fold=fold, recipe_hash=self.recipe_hash,
                   recipe_file_hash=self.recipe_file_hash, folds_hash=self.folds_hash,
                   competition_hash=self.competition_hash, code_version=self.code_version, tta=self.tta)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogitsMeta:
        return cls(**_known(cls, data))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise CompError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


# ---------------------------------------------------------------------------------------------------------------
# provenance.json


def read_run(paths: RunPaths) -> Run | None:
    """The run's provenance.json as a Run; None when the run has none yet."""
    if not paths.provenance.exists():
        return None
    try:
        return Run.from_dict(json.loads(paths.provenance.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, CompError) as err:
        raise CompError(f"{paths.provenance} is unreadable ({err}); re-run with --force to retrain this fold") from err


def write_run(paths: RunPaths, run: Run) -> None:
    """Write provenance.json (atomically), stamped with the time of writing."""
    atomic.write_json(paths.provenance, dataclasses.replace(run, time=time.strftime("%Y-%m-%dT%H:%M:%S%z")).to_dict())


def recorded_recipe(paths: RunPaths) -> dict[str, Any]:
    """The resolved recipe a run recorded: provenance.json's, else recipe.toml's (runs made before it had one)."""
    run = read_run(paths)
    if run is not None and run.recipe:
        return run.recipe
    try:
        return tomllib.loads(paths.recipe.read_text(encoding="utf-8")) if paths.recipe.exists() else {}
    except (OSError, ValueError):
        return {}


def planned_folds(ws: Workspace, alias: str, n_folds: int) -> list[int]:
    """The folds `alias` is meant to have: those its --budget plan chose (models/<alias>/plan.json, written by
    comp.training.budget), else all `n_folds`."""
    try:
        runs = json.loads(ws.plan(alias).read_text(encoding="utf-8"))["runs"]
        planned = sorted(int(r) for r in runs if r != FULL and 0 <= int(r) < n_folds)
    except (OSError, ValueError, KeyError, TypeError):
        planned = []
    return planned or list(range(n_folds))


def inputs_now(ws: Workspace, alias: str, fold: int | str, folds_hash: str | None, competition_hash: str,
               recorded: Run | None = None) -> Run:
    """The inputs in force now for a saved run of `alias`, as a Run to compare its record with: the folds and
    competition hashes given, and its recipe resolved now as the run resolved it (the recipe file with the run's own
    `--set` values), as training compares it: a comment edited in the file changes nothing, an edited setting is
    named. A run that did not record its --set values (older comp) has only the file's hash to go by (None when
    the file is gone). Compare the fields `recipe_fields(now)` names. CompError when the recipe no longer loads."""
    try:
        file_hash = recipe_file_hash(ws, alias)
    except CompError:
        file_hash = None
    now = Run(model=alias, fold=fold, folds_hash=folds_hash, competition_hash=competition_hash,
              recipe_file_hash=file_hash)
    if recorded is not None and recorded.overrides is not None and file_hash is not None:
        recipe = load_recipe(ws, alias, recorded.overrides)
        now = dataclasses.replace(now, recipe_hash=recipe_hash(recipe), recipe=recipe_dict(recipe))
    return now


def recipe_fields(now: Run) -> tuple[str, ...]:
    """The recipe input to compare against `now` (from `inputs_now`): the resolved recipe when it could be resolved
    as the run did, else the recipe file's bytes."""
    return ("recipe_hash",) if now.recipe_hash is not None else ("recipe_file_hash",)


def train_command(alias: str, fold: int | str, overrides: list[str] | None) -> str:
    """`comp train` of `alias` fold `fold` with the exact --set values of a run (what resume and next: hints say)."""
    sets = [f"--set {o}" if " " not in o and "'" not in o else f'--set "{o}"' for o in overrides or []]
    return " ".join([f"comp train --model {alias} --fold {fold}", *sets])


# ---------------------------------------------------------------------------------------------------------------
# the one staleness check


def differences(
    recorded: Run, current: Run, fields: tuple[str, ...] = INPUTS, required: tuple[str, ...] = ALWAYS_RECORDED
) -> list[tuple[str, Any, Any]]:
    """(field, recorded value, current value) for each of `fields` that differs; a recorded None differs only for
    the `required` fields (the others were not recorded by whatever wrote the file)."""
    out = []
    for name in fields:
        then, now = getattr(recorded, name), getattr(current, name)
        if then is None and name not in required:
            continue
        if then != now:
            out.append((name, then, now))
    return out


def require_current(
    recorded: Run,
    current: Run,
    what: str,
    fix: str | Callable[[list[str]], str],
    fields: tuple[str, ...] = INPUTS,
    required: tuple[str, ...] = ALWAYS_RECORDED,
    then: str = "when trained",
    now: str = "now",
) -> None:
    """Raise StaleError unless `recorded` was made from the same inputs (`fields`) as `current`.

    The message starts with `what` (e.g. "tiny fold 0 (models/tiny/fold0)"), names each differing field with both
    values (`epochs: 1 when trained, 10 now`: a recipe change is named setting by setting when both records hold the
    resolved recipe; files by their name) and ends with `fix`, the command that makes it current again (or a function
    of the differing field names that returns it). `then`/`now` label the two records (stack compares two folds:
    "in fold 3", "in fold 0").
    """
    changed = differences(recorded, current, fields, required)
    if changed:
        named = [line for name, a, b in changed for line in describe(name, a, b, recorded, current, then, now)]
        how = fix([name for name, _, _ in changed]) if callable(fix) else fix
        raise StaleError.naming(what, named, how)


def describe(name: str, a: Any, b: Any, recorded: Run, current: Run, then: str, now: str) -> list[str]:
    """Human lines for one differing field."""
    if name == "recipe_hash" and recorded.recipe and current.recipe:
        lines = [f"{key}: {_show(recorded.recipe.get(key))} {then}, {_show(current.recipe.get(key))} {now}"
                 for key in sorted(set(recorded.recipe) | set(current.recipe))
                 if recorded.recipe.get(key) != current.recipe.get(key)]
        if lines:
            return lines
    label = LABELS.get(name, name)
    if name == "pseudo_labels":  # the stack's name, its CSV's sha256 and the threshold: short enough to show whole
        return [f"{label}: {a or 'none'} {then}, {b or 'none'} {now}"]
    if name == "recipe_file_hash":
        label = f"recipe file of {recorded.model or current.model!r}"
        if b is None:
            return [f"{label}: sha256 {_short(a)} {then}, missing {now}"]
    verb = "sha256" if name in ("folds_hash", "recipe_file_hash") else "hash"
    return [f"{label}: {verb} {_short(a)} {then}, {_short(b)} {now}"]


def _short(value: Any) -> str:
    return "not recorded" if value is None else str(value)[:12]


def _show(value: Any) -> str:
    return "(unset)" if value is None else repr(value) if isinstance(value, str) else str(value)


def set_args(base: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """`--set key=value` arguments that turn recipe `base` into `wanted` (values as TOML, strings quoted)."""
    out = []
    for key in sorted(wanted):
        if base.get(key) != wanted[key]:
            value = tomli_w.dumps({"v": wanted[key]})[4:].strip()
            out.append(f"--set {key}={value}" if not isinstance(wanted[key], str) else f"--set '{key}={value}'")
    return out
