"""Precision policies: which weights are stored in which dtype while a stage trains.

``fp32``: every weight in float32 (the tiny recipes on CPU).

``bf16-frozen``: the backbone's frozen weights in bfloat16 and everything that is trained — the
MEDIC-AD modules, LoRA, any unfrozen LLM weight — in float32, so the optimizer's moments are float32
too; matmuls run under bf16 autocast (``mixed_precision: bf16``). The frozen 7B weights take half the
memory of float32 while the small trained parts update in full precision: an AdamW step of a bf16
LoRA weight rounds updates below one bf16 step (2⁻⁸ relative) away.
"""

from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16-frozen")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def frozen_dtype(precision: str) -> torch.dtype:
    """The dtype the backbone is read in (and its frozen weights kept in) under ``precision``."""
    return torch.bfloat16 if check_precision(precision) == "bf16-frozen" else torch.float32


def is_frozen_backbone_weight(name: str, param: nn.Parameter) -> bool:
    """A backbone weight that no stage updates: not trained now and not a LoRA row (LoRA is MEDIC-AD's,
    kept in float32 between stages so each stage's result is saved at full precision)."""
    return not param.requires_grad and "lora_" not in name


@torch.no_grad()
def apply_precision(model: nn.Module, precision: str, *, backbone: nn.Module) -> nn.Module:
    """Cast ``model``'s parameters in place to the policy (call after the stage's ``requires_grad`` are set).

    ``backbone``: the submodule whose frozen weights may go to bfloat16; every other parameter of
    ``model`` (and every trained one) becomes float32. Parameter objects are kept, so an optimizer built
    before or after sees the same tensors.
    """
    low = frozen_dtype(precision)
    frozen = {id(p) for n, p in backbone.named_parameters() if is_frozen_backbone_weight(n, p)}
    for param in model.parameters():
        dtype = low if id(param) in frozen else torch.float32
        if param.dtype != dtype and param.is_floating_point():
            param.data = param.data.to(dtype)
    return model


def dtype_counts(model: nn.Module) -> dict[str, dict[torch.dtype, int]]:
    """Parameter counts by dtype, trainable and frozen apart."""
    counts: dict[str, dict[torch.dtype, int]] = {"trainable": {}, "frozen": {}}
    for p in model.parameters():
        side = counts["trainable" if p.requires_grad else "frozen"]
        side[p.dtype] = side.get(p.dtype, 0) + p.numel()
    return counts
