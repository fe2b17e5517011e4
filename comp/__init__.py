"""comp: from a downloaded image-classification competition to a checked, uploaded submission.

The library API is what the CLI calls, one function per stage, importable from here:

    from comp import Workspace, verify, make_folds, train, stack, check_file
    ws = Workspace.here()
    competition = ws.load()          # the caller loads comp.toml once and passes it on
    verify(competition, ws)
    make_folds(competition, ws)
    train(competition, ws, "tiny", "all")
    stack(competition, ws)

Names are resolved on first use (module `__getattr__`), so `import comp` and `comp --help` do not pay for torch,
timm or pandas. `_LAZY` is the one table of what is exported from where; tests/test_imports.py reads it to check the
layer order of `from comp import NAME`.
"""

from __future__ import annotations

import importlib
import os

__version__ = "0.1.0"

# OpenMP threads that wait for work by spinning (libgomp's default) burn cores that loader workers and other processes
# need: on a busy 2-core box an EfficientNet-Lite0 training step on 2 threads ran 6x slower with spinning than with
# sleeping waiters (2.9 vs 16.7 img/s, measured side by side). Only takes effect before torch loads its OpenMP
# runtime, which `comp` (CLI) always imports later; a setting of the user's own wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# name -> the module that defines it, in workflow order (the order of `comp --help`).
_LAZY: dict[str, str] = {
    # contracts every stage shares
    "Workspace": "comp.core.workspace",
    "Competition": "comp.core.config",
    "CompError": "comp.core.errors",
    "StaleError": "comp.core.errors",
    # setup: comp init / download / verify / folds
    "kind_of": "comp.kinds",  # the submission kind of a competition: what differs by kind
    "InitOptions": "comp.setup.discover",
    "init_workspace": "comp.setup.init",
    "download_competition": "comp.platforms.fetch",
    "kaggle_metric": "comp.platforms.fetch",
    "verify": "comp.setup.verify",
    "require_verified": "comp.setup.verify",
    "make_folds": "comp.folds",
    "load_folds": "comp.folds",
    # models: comp train / predict / status / report
    "load_recipe": "comp.modeling.recipe",
    "train": "comp.training.train",
    "predict_model": "comp.predict",
    "train_command": "comp.runs",  # the `comp train` command of a run, with its --set values
    "pseudo_labels": "comp.ensemble.pseudo",
    "status": "comp.report",
    "list_models": "comp.report",  # comp.report.models
    "write_report": "comp.report",  # comp.report.report (named apart from the module comp.report)
    # submissions: comp stack / score / check / submit / submissions
    "stack": "comp.ensemble.stack",
    "score_file": "comp.ensemble.stack",
    "check_file": "comp.submission.check",
    "fix_file": "comp.submission.fix",
    "newest_submission": "comp.platforms.submit",
    "make_backend": "comp.platforms.submit",
    "submit_file": "comp.platforms.submit",
    "refresh": "comp.platforms.submit",
    "read_ledger": "comp.submission.ledger",  # comp.submission.ledger.read
    "plot_ledger": "comp.submission.ledger",  # comp.submission.ledger.plot
    # Kaggle code competitions: comp bundle, comp submit --kernel
    "build_bundle": "comp.bundle.build",
    "verify_bundle": "comp.bundle.local",
    "submit_kernel": "comp.bundle.submit",
    # the built-in demo
    "run_demo": "comp.demo",
}
# exported names that differ from the function's own (too generic, or the name of a module)
_RENAMED = {"write_report": "report", "list_models": "models", "read_ledger": "read", "plot_ledger": "plot"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'comp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value  # resolved once; later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
