"""The one place a `--device` name becomes a torch device (training and prediction both ask here).
"""

import os

import torch

from comp.core.errors import CompError

DEVICES = ("auto", "cpu", "cuda", "mps")  # what --device accepts


def resolve_device(name: str) -> torch.device:
    """auto -> cuda, then mps, then cpu; under torchrun each process takes cuda:LOCAL_RANK."""
    name = name.lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise CompError("--device cuda: no CUDA GPU is visible here; use --device cpu (or auto)")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise CompError("--device mps: Apple MPS is not available here; use --device cpu (or auto)")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise CompError(f"--device {name!r}: choose one of {', '.join(DEVICES)}")
