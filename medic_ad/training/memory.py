"""What every stage recipe does for memory: the image-size caps and the precision policy.

The run's cap (``image_min_pixels`` / ``image_max_pixels``) becomes the processor's own, so the
stage's checkpoint records it and inference resizes images as training did; a data source's own cap
(``min_pixels`` / ``max_pixels`` of its entry) travels with its samples to the collator. The precision
policy (``models.precision``) is applied once the stage's trainable parameters are set.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from torch import nn

from medic_ad.data.collator import PIXEL_CAP
from medic_ad.data.schema import Sample
from medic_ad.models.precision import apply_precision
from medic_ad.models.qwen2_5_vl.processing import MedicADProcessor, PixelCap, check_pixel_cap
from medic_ad.training.config import TrainConfig


class CappedSamples(Sequence):
    """A source's samples, each carrying the source's pixel cap for the collator."""

    def __init__(self, samples: Sequence[Sample], cap: PixelCap) -> None:
        self.samples, self.cap = samples, cap

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        sample = self.samples[index]
        return dataclasses.replace(sample, meta={**sample.meta, PIXEL_CAP: self.cap})


def set_default_pixel_cap(cfg: TrainConfig, processor: MedicADProcessor) -> PixelCap:
    """The run's cap on the processor (bounds not set in the config keep the processor's)."""
    low, high = cfg.pixel_cap()
    if low is not None or high is not None:
        processor.set_pixel_cap(low, high)
    return processor.pixel_cap


def source_pixel_caps(cfg: TrainConfig, default: PixelCap) -> list[PixelCap]:
    """The cap of each data source, unset bounds taken from ``default``."""
    caps = []
    for source in cfg.data:
        low, high = cfg.pixel_cap(source)
        cap = (default[0] if low is None else low, default[1] if high is None else high)
        check_pixel_cap(*cap)
        caps.append(cap)
    return caps


def apply_pixel_caps(sampler, cfg: TrainConfig, processor: MedicADProcessor) -> None:
    """Set the run's cap on the processor and wrap the sampler's sources that have a cap of their own."""
    default = set_default_pixel_cap(cfg, processor)
    for i, cap in enumerate(source_pixel_caps(cfg, default)):
        if cap != default:
            sampler.sources[i] = CappedSamples(sampler.sources[i], cap)


def apply_memory_policy(cfg: TrainConfig, model: nn.Module, *, backbone: nn.Module) -> nn.Module:
    """The precision policy on a model whose stage is set (trainable parameters fixed)."""
    return apply_precision(model, cfg.precision, backbone=backbone)
