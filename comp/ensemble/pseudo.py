"""A stack's confident test predictions as pseudo-labels for `comp train --pseudo STACK`.

The probabilities are the stack's own: its sidecar (submissions/STACK.json) holds the fitted blend's parameters and
the models it blended, so the test probabilities are recomputed exactly from those models' test logits (the CSV may
hold only labels). A stack whose models were retrained since, or made on other folds, is refused: its labels would
not be the ones the file says.
"""

from __future__ import annotations

import numpy as np

from comp.core.config import Competition
from comp.core.errors import CompError, StaleError
from comp.core.provenance import sha256_file
from comp.core.workspace import Workspace
from comp.ensemble.stack import blend_probabilities, from_params, load_models, read_record, require_stack_current
from comp.kinds import kind_of
from comp.training.pseudo import PseudoLabels


def pseudo_labels(comp: Competition, ws: Workspace, name: str, threshold: float) -> PseudoLabels:
    """Test images whose stacked top probability is >= `threshold`, labelled with the stack's class."""
    from comp.setup.items import test_items

    if kind_of(comp).multilabel:
        raise CompError(f"--pseudo {name}: pseudo-labels give each confident test image its one likeliest class; "
                        f"kind {comp.kind!r} is multi-label, which they do not support yet")
    sidecar_path = ws.submission_json(name)
    if not sidecar_path.exists():
        raise CompError(
            f"--pseudo {name}: no stack {sidecar_path}; make one first with `comp stack --name {name}` (pseudo-labels "
            "need the stack's sidecar JSON, which holds the fitted blend)"
        )
    record = read_record(ws, name, complete=True)
    if not record.models or not record.params:
        raise CompError(f"--pseudo {name}: {sidecar_path} lacks the stack's models or fitted blend; re-run "
                        f"`comp stack --name {name} --force`")
    models, params = record.models, record.params
    folds, loaded = load_models(comp, ws, models, record.full)
    runs = record.test_runs or None
    moved = [m.alias for m in loaded if runs is not None and runs.get(m.alias) != m.test_runs]
    if moved:
        raise StaleError(f"--pseudo {name}: model(s) {', '.join(moved)} have other trained runs (folds or full fit) "
                         f"than when the stack was made; re-run `comp stack --models {','.join(models)} --name "
                         f"{name} --force`")
    require_stack_current(record, loaded, f"--pseudo {name}")
    probs = blend_probabilities(comp, from_params(params, comp.num_classes), [m.test for m in loaded])
    test = test_items(comp, ws).set_index("id")
    ids = [str(i) for i in loaded[0].test_ids]
    missing = [i for i in ids if i not in test.index]
    if missing or len(ids) != len(test):
        raise StaleError(f"--pseudo {name}: the stack's test ids differ from the current test set (e.g. "
                         f"{(missing or ['a count mismatch'])[:3]}); re-predict and re-stack")
    top = probs.max(axis=1)
    keep = np.flatnonzero(top >= threshold)
    frame = test.loc[[ids[i] for i in keep], ["path"]].reset_index()
    frame["label"] = [comp.classes[j] for j in probs[keep].argmax(axis=1)]
    frame["prob"] = top[keep]
    source = f"{name} (sha256 {sha256_file(ws.submission_csv(name))[:12]}, threshold {threshold:g})"
    return PseudoLabels(stack=name, threshold=threshold, source=source, frame=frame, n_test=len(ids))
