"""`Workspace`, the one place where artifact paths are built, and `RunPaths`, the files of one (model, fold) run.

A workspace is any directory holding `comp.toml`. Commands act on `$COMP_WORKSPACE` when it is set, else on the
nearest folder holding comp.toml from the current directory upwards (as git finds its repository), else on the
current directory (where `comp init` will write one).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from comp.core.config import Competition, from_dict, load_toml, save_toml, to_dict
from comp.core.errors import CompError

# Paths: the one place they are built

STOCK_RECIPES = Path(__file__).resolve().parent.parent / "recipes"  # the recipes shipped with comp (package data)
# The run that trains on every labelled row (`comp train --fold full`): test logits only, no OOF. A run key is a fold
# number or FULL.
FULL = "full"


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
    def is_full(self) -> bool:  # the fit on every labelled row (models/<alias>/full/, or its staging folder)
        return self.dir.name in (FULL, f".{FULL}.new")

    @property
    def oof(self) -> Path:  # out-of-fold logits keyed by id (a full fit has none)
        return self.dir / "oof_logits.npz"

    @property
    def output(self) -> Path:  # the logits whose presence marks the run finished: OOF for a fold, test for a full fit
        return self.test if self.is_full else self.oof

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

    @property
    def lock(self) -> Path:  # pid and host of the process training this run (comp.core.runlock); beside the run
        # directory, not in it, because `--force` empties the directory after the lock is taken
        return self.dir.parent / f".{self.dir.name}.lock"

    @property
    def staging(self) -> RunPaths:  # `train --force` builds the replacement here; swapped in only when finished
        return RunPaths(self.dir.with_name(f".{self.dir.name}.new"))

    @property
    def retired(self) -> Path:  # the replaced run, for the moment between the two renames of a swap
        return self.dir.with_name(f".{self.dir.name}.old")

    def settle(self) -> None:
        """Finish a swap that a kill interrupted between its two renames (the run moved aside to `retired`, the
        replacement not yet in place): the finished replacement goes in, else the old run comes back. Every reader
        gets its paths through `Workspace.run`, which calls this, so no command ever sees the run missing."""
        if self.dir.exists() or not self.retired.exists():
            return
        new = self.staging
        try:
            finished = json.loads(new.provenance.read_text(encoding="utf-8")).get("finished") is True
        except (OSError, ValueError, AttributeError):
            finished = False
        try:
            os.replace(new.dir if finished and new.output.exists() else self.retired, self.dir)
        except FileNotFoundError:  # another process settled it first
            return
        except OSError as err:
            raise CompError(f"cannot restore {self.dir} from {self.retired} ({err.strerror}); move one of them to "
                            f"{self.dir} by hand") from err
        shutil.rmtree(self.retired, ignore_errors=True)


@dataclass(frozen=True)
class BundlePaths:
    """The files of one code-competition bundle under bundles/<name>/ (`comp bundle`)."""

    dir: Path

    @property
    def dataset(self) -> Path:  # uploaded as a Kaggle dataset: weights, recipes, stack parameters, wheels
        return self.dir / "dataset"

    @property
    def manifest(self) -> Path:  # what the kernel reads: models, folds, TTA, blend parameters, competition, wheels
        return self.dataset / "comp-bundle.json"

    @property
    def wheels(self) -> Path:
        return self.dataset / "wheels"

    @property
    def dataset_metadata(self) -> Path:
        return self.dataset / "dataset-metadata.json"

    @property
    def kernel(self) -> Path:  # pushed as a Kaggle notebook
        return self.dir / "kernel"

    @property
    def kernel_metadata(self) -> Path:
        return self.kernel / "kernel-metadata.json"

    @property
    def record(self) -> Path:  # size, timing, hashes: what `comp bundle` measured (not uploaded)
        return self.dir / "bundle.json"

    @property
    def uploaded(self) -> Path:  # the dataset content hash and kernel version last pushed (`comp submit --kernel`)
        return self.dir / "uploaded.json"

    @property
    def local_run(self) -> Path:  # `comp bundle --run-local`: a Kaggle-like input/working layout and its result
        return self.dir / "local-run"

    @property
    def kernel_output(self) -> Path:  # the submission.csv the kernel wrote on Kaggle, downloaded (what was scored)
        return self.dir / "kernel-output" / "submission.csv"


@dataclass(frozen=True)
class Workspace:
    """A competition workspace rooted at `root` (a directory holding comp.toml)."""

    root: Path
    # How `root` was chosen ("COMP_WORKSPACE", "found", or ""): named in the error when comp.toml is missing.
    source: str = field(default="", compare=False)

    @classmethod
    def here(cls, search: bool = True) -> Workspace:
        """$COMP_WORKSPACE, else the nearest folder with comp.toml from the cwd upwards (`search`), else the cwd."""
        env = os.environ.get("COMP_WORKSPACE")
        if env:
            root = Path(env).expanduser().resolve()
            if not root.is_dir():
                raise CompError(
                    f"COMP_WORKSPACE={env} is not a folder; point it at a workspace (a folder holding comp.toml) "
                    "or unset it to use the current directory"
                )
            return cls(root, "COMP_WORKSPACE")
        cwd = Path.cwd().resolve()
        if search:
            for folder in (cwd, *cwd.parents):
                if (folder / "comp.toml").is_file():
                    return cls(folder, "found" if folder != cwd else "")
        return cls(cwd)

    def resolve(self, path: str | os.PathLike) -> Path:
        """A path typed on the command line: as given (relative to the cwd) when it exists there, else relative to
        the workspace (so `comp check submissions/x.csv` works from any subfolder); unchanged when neither exists."""
        p = Path(path).expanduser()
        if p.is_absolute() or p.exists():
            return p
        inside = self.root / p
        return inside if inside.exists() else p

    # -- the competition
    @property
    def comp_toml(self) -> Path:
        return self.root / "comp.toml"

    def path(self, relative: str | os.PathLike) -> Path:
        """A path from comp.toml (relative to the workspace) made absolute."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    def shown(self, path: str | os.PathLike) -> str:
        """`path` as the ledger and messages write it: relative to the workspace when inside it, else absolute."""
        resolved = Path(path).resolve()
        try:
            return str(resolved.relative_to(self.root))
        except ValueError:
            return str(resolved)

    def load(self) -> Competition:
        if not self.comp_toml.exists():
            if self.source == "COMP_WORKSPACE":
                raise CompError(
                    f"COMP_WORKSPACE={os.environ.get('COMP_WORKSPACE', self.root)} has no comp.toml: point it at a "
                    f"workspace, unset it, or run `comp init DATA_DIR` in {self.root}"
                )
            raise CompError(
                f"no comp.toml in {self.root} or any folder above it: run `comp init DATA_DIR` here first (or "
                "`comp demo` for the demo), or cd into a workspace"
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

    def run(self, alias: str, fold: int | str) -> RunPaths:
        """The run of fold `fold` (models/<alias>/fold<k>/) or of the full fit (fold FULL: models/<alias>/full/)."""
        paths = RunPaths(self.model_dir(alias) / (FULL if fold == FULL else f"fold{int(fold)}"))
        paths.settle()  # a swap a kill interrupted is finished before anyone reads the run
        return paths

    def plan(self, alias: str) -> Path:
        """The `--budget` plan of `alias` (what its runs were chosen to be), kept so a resumed run keeps it."""
        return self.model_dir(alias) / "plan.json"

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
    def ledger_lock(self) -> Path:  # held while the ledger is read, changed and rewritten (comp.core.atomic.locked)
        return self.generated_dir / "ledger.lock"

    @property
    def ledger_plot(self) -> Path:
        return self.submissions_dir / "cv_vs_public.png"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    # -- code-competition bundles (`comp bundle`)
    @property
    def bundles_dir(self) -> Path:
        return self.root / "bundles"

    def bundle(self, name: str) -> BundlePaths:
        return BundlePaths(self.bundles_dir / name)

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
