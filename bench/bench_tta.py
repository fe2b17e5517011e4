"""TTA: `comp.tta.predict_logits` (batched views, BN-folded channels_last copy) vs ttach's wrapper loop.

CPU, timm resnet18 with random weights (weights do not change the cost), 64 images of 160 px in batches of 16, d4
(8 views) and hflip (2 views). The baseline gets its input already normalised as a float tensor; the harness starts
from the uint8 cache array, so its figure includes the conversion and the per-call model preparation (BN folding).
The detail column splits where the speed comes from: batching the views alone, and the prepared model alone.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.common import Result, best_of

N_IMAGES, BATCH, SIZE = 64, 16, 160


def run() -> list[Result]:
    import timm
    import ttach

    from comp import tta

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    config = dict(timm.data.resolve_model_data_config(model), input_size=(3, SIZE, SIZE))
    images = np.random.default_rng(0).integers(0, 256, (N_IMAGES, SIZE, SIZE, 3), dtype=np.uint8)
    x = tta.prepare_batch(images, config, (SIZE, SIZE), "cpu").contiguous()
    results = []
    for preset in ("d4", "hflip"):
        transforms = tta.tta_transforms(preset, config, model)
        views = len(transforms)
        wrapper = ttach.ClassificationTTAWrapper(model, transforms, merge_mode="mean")

        def ttach_loop(wrapper=wrapper) -> torch.Tensor:
            with torch.inference_mode():
                return torch.cat([wrapper(x[i : i + BATCH]) for i in range(0, N_IMAGES, BATCH)])

        def batched_only(transforms=transforms) -> torch.Tensor:  # all views in one pass, the unprepared model
            with torch.inference_mode():
                return torch.cat([tta.tta_forward(model, x[i : i + BATCH], transforms)
                                  for i in range(0, N_IMAGES, BATCH)])

        def harness(preset=preset, views=views) -> np.ndarray:  # BATCH images x all views per forward pass
            return tta.predict_logits(model, images, config, tta=preset, batch_size=BATCH * views, progress=False)

        def harness_small(preset=preset) -> np.ndarray:  # forward passes of BATCH images, views included
            return tta.predict_logits(model, images, config, tta=preset, batch_size=BATCH, progress=False)

        diff = float(np.abs(harness() - ttach_loop().numpy()).max())
        # Interleave the timings so load from other processes on a shared box hits every variant alike.
        t_ttach, t_harness, t_batched, t_small = [], [], [], []
        for _ in range(2):
            t_ttach.append(best_of(ttach_loop, repeat=2, warmup=1))
            t_harness.append(best_of(harness, repeat=2, warmup=1))
            t_batched.append(best_of(batched_only, repeat=2, warmup=0))
            t_small.append(best_of(harness_small, repeat=2, warmup=0))
        base, ours = min(t_ttach), min(t_harness)
        detail = (
            f"resnet18 {SIZE}px, {N_IMAGES} images, batch {BATCH}, {views} views, CPU {torch.get_num_threads()} "
            f"threads; max |diff| vs ttach {diff:.1e}; ttach {base:.2f}s, harness {ours:.2f}s; batching alone "
            f"(unprepared model) {base / min(t_batched):.2f}x; harness with {BATCH}-image forwards "
            f"{base / min(t_small):.2f}x"
        )
        results.append(Result.from_seconds(f"tta_{preset}_cpu", ours, base,
                                           "predict_logits vs ttach.ClassificationTTAWrapper", items=N_IMAGES,
                                           detail=detail))
    return results


if __name__ == "__main__":
    for result in run():
        print(result.line())
        print("   ", result.detail)
