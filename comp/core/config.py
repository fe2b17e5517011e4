"""Settings: `comp.toml` as a typed dataclass, TOML <-> dataclass with strict keys, and type-checked `--set`
overrides. Paths live in `comp.core.workspace`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (Kaggle images of 2023-24): the same parser ships as the tomli package
    import tomli as tomllib

from comp.core import atomic
from comp.core.errors import CompError

T = TypeVar("T")


PLATFORMS = ("kaggle", "codabench", "none")


LAYOUTS = ("csv", "folders", "names")


# The submission kinds, by name: the label representations seen in real samples (see shared/formats/INDEX.md).
# Their behaviour (and default metric) is in the kinds room, comp/kinds/, whose REGISTRY lists them in this order.
KINDS = ("class_name", "class_id", "binary", "class_probs", "topk", "tags", "multilabel_probs")


@dataclass(frozen=True)
class Competition:
    """What `comp init` learned about a competition; every path is relative to the workspace."""

    name: str  # competition slug on its platform (Kaggle: the URL name), or any name for platform "none"
    platform: str = "none"  # kaggle | codabench | none
    data_dir: str = "data"  # root of the competition's own files
    layout: str = "csv"  # csv: labels CSV + image folder; folders: <train_dir>/<class>/<image>; names: <class>.<n>.jpg
    train_dirs: list[str] = field(default_factory=list)  # csv: the image folder; folders: class-folder roots, pooled
    labels_csv: str = ""  # csv layout: the file mapping image id -> label
    labels_header: bool = True  # false for a headerless "<id>.png,<label>" file (columns are then "id", "label")
    train_id_column: str = "id"  # column of labels_csv with the image id
    train_label_column: str = "label"  # column of labels_csv with the class
    train_label_columns: list[str] = field(default_factory=list)  # csv layout: one-hot label columns (a 1 marks the
    # row's class; plant-pathology-2020: healthy, multiple_diseases, rust, scab), used instead of train_label_column
    group_column: str = ""  # optional column: rows sharing a value stay in one fold (StratifiedGroupKFold)
    groups_csv: str = ""  # the CSV holding group_column when the labels CSV does not (StateFarm: driver_imgs_list.csv)
    groups_id_column: str = ""  # groups_csv's column naming each training image (file name, stem, or id)
    label_pattern: str = ""  # names layout: regex on a training file name; its group `label` is the class
    class_depth: int = 1  # folders layout: the folder level below each train dir that names the class
    train_subfolders: bool = False  # csv layout: images may sit in sub-folders of train_dirs[0] (hotel-id:
    # train_images/<chain>/<image>.jpg), found by file name
    image_ext: str = ""  # extension added to a labels/sample id to find its file (".png"); "" when ids carry it
    test_dir: str = ""  # flat folder of test images; "" when the competition has none
    test_answers: str = ""  # optional CSV (id, label) with the true test labels, for local scoring only
    sample_submission: str = ""  # the sample submission CSV (init writes one under .comp/ when none is shipped)
    id_column: str = "id"  # the submission's id column
    label_columns: list[str] = field(default_factory=lambda: ["label"])  # the submission's prediction column(s)
    id_has_extension: bool = False  # submission ids keep the image's file extension
    kind: str = "class_name"  # class_name | class_id | binary | class_probs | topk | tags | multilabel_probs
    top_k: int = 5  # topk kind: labels per row (MAP@k)
    # accuracy | f1_micro | f1_macro | log_loss | roc_auc | weighted_auc | map@k | qwk; multi-label kinds:
    # f<beta>_samples (F-beta over images, e.g. f2_samples as Planet) | mean_column_auc
    metric: str = "accuracy"
    classes: list[str] = field(default_factory=list)  # training labels; the order of every logits column
    submission_labels: list[str] = field(default_factory=list)  # how each class is written in the submission
    positive_class: str = ""  # binary kind: the class whose probability the submission holds
    # Training label -> the class it trains as, for a binary set-up from more than two folders (alaska2: Cover vs
    # "JMiPOD+JUNIWARD+UERD", made by `comp init --negative Cover`); labels not listed are their own class. None
    # (not written) when unused: a TOML table comes last, and keys added below an empty one would land in it.
    class_map: dict[str, str] | None = None
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
        if self.class_depth < 1:
            raise CompError(f"comp.toml: class_depth is {self.class_depth}; 1 is the folders right below train_dirs")
        if self.n_folds < 2:
            raise CompError(f"comp.toml: n_folds is {self.n_folds}; use 2 or more")
        check_bounds(self, COMPETITION_BOUNDS, "comp.toml")
        stray = sorted(v for v in set((self.class_map or {}).values()) if self.classes and v not in self.classes)
        if stray:
            raise CompError(f"comp.toml: class_map maps labels to {', '.join(map(repr, stray))}, which is not one of "
                            "classes; map each training label to one of classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Bound:
    """The allowed range of one numeric setting: low..high, each end included unless `*_open`."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def text(self) -> str:
        return f"{'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}{')' if self.high_open else ']'}"

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def check(self, value: float, label: str) -> None:
        """CompError naming `label` (e.g. "recipe: lr =", "--seed"), the value and the range unless it holds."""
        if not self.holds(value):
            raise CompError(f"{label} {_num(value)} is outside the allowed range {self.text()}; use a value in that "
                            "range")


def _num(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and float(value).is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:g}"


def check_bounds(obj: Any, bounds: dict[str, Bound], where: str) -> None:
    """Refuse any field of dataclass `obj` outside its `bounds`, and any float field that is NaN or infinite: the one
    check of numeric settings (recipes, comp.toml), a CompError naming the field, its value and the range."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        bound = bounds.get(f.name)
        if bound is None:
            if not math.isfinite(value):
                raise CompError(f"{where}: {f.name} = {value} is not a finite number")
            continue
        bound.check(value, f"{where}: {f.name} =")


# comp.toml's numbers (the fold split's seed goes to sklearn and numpy: unsigned 32-bit).
COMPETITION_BOUNDS = {"n_folds": Bound(2, 1000), "seed": Bound(0, 2**32 - 1), "top_k": Bound(1, 1000),
                      "class_depth": Bound(1, 64)}


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise CompError(f"comp.toml: {name} = {value!r} is not one of {', '.join(allowed)}")


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
