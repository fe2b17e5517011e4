"""DDP: `comp train` under torchrun with 2 gloo processes on CPU writes complete OOF logits, in id order."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from comp import logits
from comp.modeling.models import build_model, data_config, load_weights
from comp.modeling.recipe import load_recipe
from comp.setup.items import train_items
from comp.vision import images
from comp.vision.tta import eval_view, predict_logits

pytestmark = pytest.mark.slow  # torchrun: two training processes


def test_two_gloo_processes_give_complete_oof_matching_the_saved_model(make_toy_workspace, workspace):
    # 25 held-out rows: odd, so DistributedSampler-style padding would show up as a duplicate or an extra row.
    ws, comp = make_toy_workspace(workspace, n_per_class=25, n_folds=3)
    env = {**os.environ, "COMP_WORKSPACE": str(workspace), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "comp", "train", "--model", "tiny", "--fold", "1", "--device", "cpu", "--set", "epochs=1",
           "--set", 'head_init="probe"']
    done = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # The probe's feature pass is split over both ranks and gathered (a collective every rank joins); rank 0 fits
    # the head on all 50 training rows, sends it, and alone says so.
    assert done.stderr.count("head fitted on frozen features of 50 training rows") == 1, done.stderr
    assert "world_size" in ws.run("tiny", 1).provenance.read_text()

    oof = logits.load(ws.run("tiny", 1).oof)
    folds = pd.read_csv(ws.folds_csv, dtype={"id": str})
    held_out = folds.loc[folds["fold"] == 1, "id"]
    assert len(held_out) % 2 == 1
    assert len(oof.ids) == len(set(oof.ids)) == len(held_out) and set(oof.ids) == set(held_out)
    assert not list(ws.run("tiny", 1).dir.glob(".*.tmp"))  # no half-written files from a second writer

    # The gathered rows belong to their ids: one process predicting with the saved best weights agrees.
    recipe = load_recipe(ws, "tiny", ["epochs=1", 'head_init="probe"'])
    model = build_model(recipe, comp.num_classes)
    load_weights(ws.run("tiny", 1).best, model)
    cfg = data_config(model)
    items = train_items(comp, ws).set_index("id").loc[list(oof.ids)]
    pixels = images.cached_images(ws, items["path"].tolist(), images.cache_size(32, cfg["crop_pct"]), workers=0)
    torch.manual_seed(0)
    expected = predict_logits(model, np.ascontiguousarray(eval_view(pixels, cfg, "none")), cfg, "none", 16, "cpu",
                              progress=False)
    np.testing.assert_allclose(oof.values, expected, atol=1e-4, rtol=0)
