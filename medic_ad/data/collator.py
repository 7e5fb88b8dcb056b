"""Collator: samples → MEDIC-AD model inputs for mixed 1- and 2-image batches.

Each sample becomes its task's chat example (``medic_ad.data.templates``), the processor lays out
``<Ano>``/``<Diff>`` and masks every label but the answer tokens, and lesion masks are resized to the
model's input (the processed image size) for the map and heatmap losses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from medic_ad.data.io import load_image_any, load_mask
from medic_ad.data.schema import Sample
from medic_ad.data.templates import ChatExample, Task, make_example

LABEL_IDS = {"normal": 0, "abnormal": 1}
UNKNOWN = -1
# Sample.meta key of a per-source image-size cap, (min_pixels, max_pixels): set by the training mixture
# (``training.memory.apply_pixel_caps``) and handed to the processor image by image.
PIXEL_CAP = "pixel_cap"


class Processor(Protocol):
    """What the collator needs of a model's processor (``MedicADProcessor``): examples in, tensors out.

    Declared here so that ``data`` depends on no model code; the model hands its processor in.
    """

    patch_size: int

    def __call__(self, examples: Sequence[ChatExample], *, use_diff: bool = True,
                 with_answers: bool = False, pixel_caps=None) -> dict[str, torch.Tensor]: ...


@dataclass
class Collator:
    """Turn a list of :class:`Sample` into one batch.

    Args:
        processor: the model's processor (``model.processor``).
        task: force a task for every sample (None: each sample's own, see ``make_example``).
        use_diff: put ``<Diff>`` tokens after the question of two-image samples.
        with_masks: also return ``masks`` (per image (H, W) float tensors at the processed size, or
            None) and ``image_labels`` (per image 1 abnormal / 0 normal / -1 unknown).
    """

    processor: Processor
    task: Task | None = None
    use_diff: bool = True
    with_masks: bool = True

    def __call__(self, samples: Sequence[Sample], tasks: Sequence[Task | None] | None = None) -> dict[str, object]:
        """Batch of ``samples``; ``tasks`` (one per sample) overrides ``self.task`` sample by sample."""
        if not samples:
            raise ValueError("cannot collate an empty batch")
        tasks = list(tasks) if tasks is not None else [self.task] * len(samples)
        examples, pils, masks, labels = [], [], [], []
        for sample, task in zip(samples, tasks):
            images = [load_image_any(ref).to_pil() for ref in sample.images]
            examples.append(replace(make_example(sample, task or self.task), images=images))
            pils.extend(images)
            for ref, image in zip(sample.masks, images):
                masks.append(None if ref is None else load_mask(ref, size=(image.height, image.width)))
                labels.append(LABEL_IDS.get(sample.label, UNKNOWN) if not sample.is_pair else UNKNOWN)
            if sample.is_pair and sample.label is not None:
                labels[-1] = LABEL_IDS[sample.label]
        caps = [sample.meta.get(PIXEL_CAP) for sample in samples]
        batch: dict[str, object] = dict(self.processor(examples, use_diff=self.use_diff, with_answers=True,
                                                       pixel_caps=caps if any(caps) else None))
        if self.with_masks:
            grids = batch["image_grid_thw"]
            patch = self.processor.patch_size
            batch["masks"] = [
                None if m is None else _resize_mask(m, (int(g[1]) * patch, int(g[2]) * patch))
                for m, g in zip(masks, grids)
            ]
            batch["image_labels"] = torch.tensor(
                [_infer_label(lbl, m) for lbl, m in zip(labels, masks)], dtype=torch.long
            )
        return batch


def _infer_label(label: int, mask: np.ndarray | None) -> int:
    """An image with a non-empty lesion mask is abnormal even where the sample has no label."""
    if label == UNKNOWN and mask is not None:
        return int(mask.any())
    return label


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) 0/1 mask → float tensor of ``size`` (height, width), bilinear then kept soft."""
    image = Image.fromarray((mask > 0).astype(np.uint8) * 255)
    resized = image.resize((size[1], size[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0)
