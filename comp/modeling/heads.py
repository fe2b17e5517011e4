"""Classifier heads: the recipe's `head` put where the backbone's classifier was.

`linear` keeps the library's own classifier (one `nn.Linear` over the pooled features). `mlp` is seed 004's head:
Linear(features -> head_hidden) + BatchNorm1d + SiLU + Dropout(head_dropout) + Linear(head_hidden -> classes). It
takes the classifier's place under the same module name, so everything that finds the head by the model's
`pretrained_cfg["classifier"]` (zero init, freezing, gradual unfreezing, layer-wise LR decay, loading by order)
treats the whole MLP as head without knowing about it.
"""

from __future__ import annotations

from torch import nn

from comp.core.errors import CompError


class MLPHead(nn.Sequential):
    """Linear -> BatchNorm1d -> SiLU -> Dropout -> Linear; `[-1]` is the layer that outputs the logits."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(in_features, hidden, bias=False),  # the BatchNorm's shift makes a bias redundant
            nn.BatchNorm1d(hidden),
            nn.SiLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )


def classifier_names(model: nn.Module) -> list[str]:
    """Module names of the model's classifier(s) as its pretrained_cfg records them (timm; set for torchvision)."""
    name = getattr(model, "pretrained_cfg", {}).get("classifier") or ""
    return [n for n in ([name] if isinstance(name, str) else name) if n]


def attach_head(model: nn.Module, head: str, hidden: int, dropout: float) -> nn.Module:
    """Replace the model's linear classifier by `head` (in place; returns the model). `linear` changes nothing."""
    if head == "linear":
        return model
    names = classifier_names(model)
    if not names:
        raise CompError(
            f"head = {head!r}: {type(model).__name__} records no classifier module to replace; use head = \"linear\""
        )
    for name in names:
        old = model.get_submodule(name)
        if not isinstance(old, nn.Linear):  # e.g. an Identity (num_classes=0) or a conv classifier
            raise CompError(
                f"head = {head!r}: {type(model).__name__}.{name} is a {type(old).__name__}, not a Linear layer; "
                "use head = \"linear\" for this backbone"
            )
        model.set_submodule(name, MLPHead(old.in_features, hidden, old.out_features, dropout))
    return model


def output_layers(model: nn.Module, prefixes: list[str]) -> list[nn.Linear]:
    """The Linear layers that produce the logits: the last Linear under each head prefix."""
    out = []
    for prefix in prefixes:
        linears = [m for n, m in model.named_modules() if (n + ".").startswith(prefix) and isinstance(m, nn.Linear)]
        if linears:
            out.append(linears[-1])
    return out
