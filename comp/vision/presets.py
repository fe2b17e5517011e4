"""The names of the TTA presets and merges (comp.vision.tta implements them), in a module without torch, so that
checking a recipe's `tta` (every command that reads a recipe: stack, status, check) does not import torch."""

PRESETS = ("none", "hflip", "vflip", "d4", "five_crop", "multiscale")
MERGES = ("mean", "prob", "sigmoid")  # sigmoid: multi-label models (comp.kinds), mean of per-class probabilities
# Forward passes per image; `--tta auto` breaks metric ties in favour of the cheaper preset.
VIEWS = {"none": 1, "hflip": 2, "vflip": 2, "multiscale": 3, "five_crop": 5, "d4": 8}
