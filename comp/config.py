"""Settings and paths: `comp.toml` as a typed dataclass, TOML <-> dataclass with strict keys, `--set` overrides,
and `Workspace`, the one place where artifact paths are built.

A workspace is any directory holding `comp.toml`; commands act on the current directory (or `$COMP_WORKSPACE`).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from comp import atomic
from comp.errors import CompError

T = TypeVar("T")

PLATFORMS = ("kaggle", "codabench", "none")
LAYOUTS = ("csv", "folders")
# The five label representations seen in real samples (see shared/formats/INDEX.md).
KINDS = ("class_name", "class_id", "binary", "class_probs", "topk")
DEFAULT_METRIC = {
    "class_name": "accuracy",
    "class_id": "accuracy",
    "binary": "roc_auc",
    "class_probs": "log_loss",
    "topk": "map@k",
}


@dataclass(frozen=True)
class Competition:
    """What `comp init` learned about a competition; every path is relative to the workspace."""

    name: str  # competition slug on its platform (Kaggle: the URL name), or any name for platform "none"
    platform: str = "none"  # kaggle | codabench | none
    data_dir: str = "data"  # root of the competition's own files
    layout: str = "csv"  # csv: labels CSV + flat image folder; folders: <train_dir>/<class>/<image>
    train_dirs: list[str] = field(default_factory=list)  # csv: the image folder; folders: class-folder roots, pooled
    labels_csv: str = ""  # csv layout: the file mapping image id -> label
    labels_header: bool = True  # false for a headerless "<id>.png,<label>" file (columns are then "id", "label")
    train_id_column: str = "id"  # column of labels_csv with the image id
    train_label_column: str = "label"  # column of labels_csv with the class
    group_column: str = ""  # optional labels_csv column: rows sharing a value stay in one fold (StratifiedGroupKFold)
    image_ext: str = ""  # extension added to a labels/sample id to find its file (".png"); "" when ids carry it
    test_dir: str = ""  # flat folder of test images; "" when the competition has none
    test_answers: str = ""  # optional CSV (id, label) with the true test labels, for local scoring only
    sample_submission: str = ""  # the sample submission CSV (init writes one under .comp/ when none is shipped)
    id_column: str = "id"  # the submission's id column
    label_columns: list[str] = field(default_factory=lambda: ["label"])  # the submission's prediction column(s)
    id_has_extension: bool = False  # submission ids keep the image's file extension
    kind: str = "class_name"  # class_name | class_id | binary | class_probs | topk
    top_k: int = 5  # topk kind: labels per row (MAP@k)
    metric: str = "accuracy"  # accuracy | f1_micro | f1_macro | log_loss | roc_auc | map@k | qwk
    classes: list[str] = field(default_factory=list)  # training labels; the order of every logits column
    submission_labels: list[str] = field(default_factory=list)  # how each class is written in the submission
    positive_class: str = ""  # binary kind: the class whose probability the submission holds
    codabench_phase: str = ""  # CodaBench phase id to submit to (or --phase / $CODABENCH_PHASE)
    submission_zip_name: str = ""  # CodaBench: the file name inside the results zip ("" -> prediction.csv)
    n_folds: int = 5  # K of the stratified K-fold split
    seed: int = 42  # seed of the fold split

    def __post_init__(self) -> None:
        _check_choice("platform", self.platform, PLATFORMS)
        _check_choice("layout", self.layout, LAYOUTS)
        _check_choice("kind", self.kind, KINDS)
        if self.classes and self.submission_labels and len(self.classes) != len(self.submission_labels):
            raise CompError(
                f"comp.toml: classes has {len(self.classes)} entries but submission_labels has "
                f"{len(self.submission_labels)}; they must pair one to one"
            )
        if self.n_folds < 2:
            raise CompError(f"comp.toml: n_folds is {self.n_folds}; use 2 or more")

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise CompError(f"comp.toml: {name} = {value!r} is not one of {', '.join(allowed)}")


# ---------------------------------------------------------------------------------------------------------------
# TOML <-> dataclass, strictly typed


def from_dict(cls: type[T], data: dict[str, Any], source: str) -> T:
    """Build dataclass `cls` from a dict: unknown keys and wrongly typed values are errors naming `source`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CompError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(value, hints[name], f"{source}: {name}") for name, value in data.items()}
    missing = [
        n for n, f in fields.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise CompError(f"{source}: missing required key(s) {', '.join(missing)}")
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, where)
            except CompError as err:
                errors.append(str(err))
        raise CompError(errors[0] if errors else f"{where}: got {value!r}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise CompError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, item, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise CompError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise CompError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise CompError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise CompError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise CompError(f"{where}: expected a string, got {value!r}")
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a TOML-ready dict (None values dropped: TOML has no null)."""
    return {k: v for k, v in dataclasses.asdict(obj).items() if v is not None}


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CompError(f"{path} not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise CompError(f"{path} is not valid TOML: {err}") from err


def save_toml(path: str | os.PathLike, data: dict[str, Any], header: str = "") -> None:
    text = tomli_w.dumps(data)
    atomic.write_text(path, (header + "\n" if header else "") + text)


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`["lr=3e-4", "epochs=2", "tta=\"d4\""]` -> dict; values parse as TOML, bare words fall back to strings."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise CompError(f"--set {pair!r}: expected key=value, e.g. --set lr=3e-4")
        key, raw = (s.strip() for s in pair.split("=", 1))
        try:
            out[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw
    return out


def with_overrides(obj: T, pairs: list[str] | None, source: str = "--set") -> T:
    """Return a copy of dataclass `obj` with `--set key=value` overrides applied and type-checked."""
    overrides = parse_overrides(pairs)
    if not overrides:
        return obj
    merged = {**dataclasses.asdict(obj), **overrides}
    return from_dict(type(obj), merged, source)


# ---------------------------------------------------------------------------------------------------------------
# Paths: the one place they are built


@dataclass(frozen=True)
class RunPaths:
    """The files of one (model, fold) run under models/<alias>/fold<k>/."""

    dir: Path

    @property
    def best(self) -> Path:  # best weights (safetensors)
        return self.dir / "best.safetensors"

    @property
    def last(self) -> Path:  # resumable state: model, optimizer, scheduler, scaler, EMA, RNG (torch.save)
        return self.dir / "last.pt"

    @property
    def oof(self) -> Path:  # out-of-fold logits keyed by id
        return self.dir / "oof_logits.npz"

    @property
    def test(self) -> Path:  # test logits keyed by id (TTA applied)
        return self.dir / "test_logits.npz"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def history(self) -> Path:
        return self.dir / "history.csv"

    @property
    def curves(self) -> Path:
        return self.dir / "curves.png"

    @property
    def recipe(self) -> Path:  # the resolved recipe the run used
        return self.dir / "recipe.toml"

    @property
    def provenance(self) -> Path:  # folds hash, recipe hash, competition hash, code version, timings
        return self.dir / "provenance.json"


@dataclass(frozen=True)
class Workspace:
    """A competition workspace rooted at `root` (a directory holding comp.toml)."""

    root: Path

    @classmethod
    def here(cls) -> Workspace:
        return cls(Path(os.environ.get("COMP_WORKSPACE") or Path.cwd()).resolve())

    # -- the competition
    @property
    def comp_toml(self) -> Path:
        return self.root / "comp.toml"

    def path(self, relative: str | os.PathLike) -> Path:
        """A path from comp.toml (relative to the workspace) made absolute."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    def load(self) -> Competition:
        if not self.comp_toml.exists():
            raise CompError(
                f"no comp.toml in {self.root}: run `comp init DATA_DIR` here first (or `comp demo` for the demo), "
                "or cd into a workspace"
            )
        return from_dict(Competition, load_toml(self.comp_toml), str(self.comp_toml))

    def save(self, competition: Competition) -> None:
        save_toml(self.comp_toml, to_dict(competition), "# written by `comp init`; edit freely, keys are checked")

    # -- folds
    @property
    def folds_dir(self) -> Path:
        return self.root / "folds"

    @property
    def folds_csv(self) -> Path:
        return self.folds_dir / "folds.csv"

    @property
    def folds_json(self) -> Path:
        return self.folds_dir / "folds.json"

    # -- models
    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def recipe_path(self, alias: str) -> Path:
        return self.models_dir / f"{alias}.toml"

    def model_dir(self, alias: str) -> Path:
        return self.models_dir / alias

    def run(self, alias: str, fold: int) -> RunPaths:
        return RunPaths(self.model_dir(alias) / f"fold{fold}")

    # -- submissions
    @property
    def submissions_dir(self) -> Path:
        return self.root / "submissions"

    def submission_csv(self, name: str) -> Path:
        return self.submissions_dir / f"{name}.csv"

    def submission_json(self, name: str) -> Path:
        return self.submissions_dir / f"{name}.json"

    @property
    def ledger(self) -> Path:
        return self.submissions_dir / "ledger.csv"

    @property
    def ledger_plot(self) -> Path:
        return self.submissions_dir / "cv_vs_public.png"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    # -- caches (safe to delete)
    @property
    def cache_dir(self) -> Path:
        return self.root / ".comp" / "cache"

    @property
    def verify_cache(self) -> Path:
        return self.cache_dir / "verify.json"

    def image_cache(self, key: str) -> Path:
        """Decoded uint8 image array for one (image set, size) key."""
        return self.cache_dir / "images" / f"{key}.npy"

    @property
    def generated_dir(self) -> Path:
        """Files comp writes on the competition's behalf (e.g. a sample submission when none is shipped)."""
        return self.root / ".comp"
