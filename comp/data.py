"""Pixels to tensors: decoding any image mode to RGB, the uint8 cache, transforms from the model's data config, loaders.

Labels and folds live elsewhere (layouts.py, folds.py); this module only turns files into arrays.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageFile

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Truncated files must fail loudly in verify, not be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image fully and return it as 8-bit RGB, whatever its mode.

    Grayscale, palette (with or without transparency), RGBA/LA (composited on white, as a viewer shows them), CMYK
    and 16/32-bit integer or float images all come back as RGB. Raises OSError/ValueError on unreadable files.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns on palette+transparency; we handle it below
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)


def to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's convert("RGB") clips high-bit-depth values at 255; rescale to the real range instead.
        arr = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        else:
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")
