"""The one sample type every adapter, template and generator produces.

A :class:`Sample` holds one image (detection, VQA, grounding) or two (prior first, then current:
change questions). Images and masks are either paths (read lazily with
:func:`medic_ad.data.io.read_image` / :func:`~medic_ad.data.io.load_mask`) or arrays
(float32 images in [0, 1]; uint8 0/1 masks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

__all__ = ["CHANGES", "LABELS", "Change", "Label", "Sample"]

Label = Literal["normal", "abnormal"]
Change = Literal["worsened", "improved", "no change"]
LABELS: tuple[str, ...] = get_args(Label)
CHANGES: tuple[str, ...] = get_args(Change)

ImageRef = Path | np.ndarray
MaskRef = Path | np.ndarray | None


def _as_ref(x: Any, what: str, allow_none: bool) -> Any:
    if x is None and allow_none:
        return None
    if isinstance(x, str):
        return Path(x)
    if isinstance(x, Path):
        return x
    if isinstance(x, np.ndarray):
        if what == "image" and not (x.ndim == 2 or (x.ndim == 3 and x.shape[2] == 3)):
            raise ValueError(f"image arrays must be H x W or H x W x 3, got shape {x.shape}")
        if what == "mask" and x.ndim != 2:
            raise ValueError(f"mask arrays must be H x W, got shape {x.shape}")
        return x
    raise TypeError(f"{what} must be a path or a numpy array, got {type(x).__name__}")


@dataclass(kw_only=True)
class Sample:
    """One training or evaluation example.

    Attributes:
        id: unique within its dataset, e.g. ``"br35h/yes/y0.png"``.
        images: one image, or two (prior first, current second).
        question: the dataset's own question text, if any.
        answer: the dataset's answer; for multiple choice the option letter (a key of ``options``).
        label: image-level ``"normal"``/``"abnormal"``.
        change: ``"worsened"``/``"improved"``/``"no change"`` between the two images.
        masks: one entry per image (``None`` where no mask exists).
        region: anatomical region the question or change is about (e.g. "left lower lung zone").
        dataset: dataset name (``"br35h"``, ``"mmxu"``, ...).
        split: ``"train"``/``"val"``/``"test"`` when the dataset defines it.
        group: samples sharing a group (patient, near-duplicate cluster) never straddle splits.
        options: multiple-choice options, letter -> text.
        meta: further dataset-specific, non-identifying fields.
    """

    id: str
    images: list[ImageRef]
    question: str | None = None
    answer: str | None = None
    label: Label | None = None
    change: Change | None = None
    masks: list[MaskRef] = field(default_factory=list)
    region: str | None = None
    dataset: str
    split: str | None = None
    group: str | None = None
    options: dict[str, str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("Sample.id must be a non-empty string")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"{self.id}: Sample.dataset must be a non-empty string")
        if isinstance(self.images, (str, Path, np.ndarray)):
            raise TypeError(f"{self.id}: images must be a list of one or two images")
        self.images = [_as_ref(x, "image", allow_none=False) for x in self.images]
        if len(self.images) not in (1, 2):
            raise ValueError(f"{self.id}: expected 1 or 2 images, got {len(self.images)}")
        if not self.masks:
            self.masks = [None] * len(self.images)
        self.masks = [_as_ref(x, "mask", allow_none=True) for x in self.masks]
        if len(self.masks) != len(self.images):
            raise ValueError(f"{self.id}: {len(self.masks)} masks for {len(self.images)} images")
        if self.label is not None and self.label not in LABELS:
            raise ValueError(f"{self.id}: label must be one of {LABELS}, got {self.label!r}")
        if self.change is not None:
            if self.change not in CHANGES:
                raise ValueError(f"{self.id}: change must be one of {CHANGES}, got {self.change!r}")
            if len(self.images) != 2:
                raise ValueError(f"{self.id}: a change label needs two images (prior, current)")
        if self.options is not None:
            if not self.options or not all(
                isinstance(k, str) and k and isinstance(v, str) for k, v in self.options.items()
            ):
                raise ValueError(f"{self.id}: options must be a non-empty dict of letter -> text")
            if self.answer is not None and self.answer not in self.options:
                raise ValueError(
                    f"{self.id}: answer {self.answer!r} is not one of the options {sorted(self.options)}"
                )
        for name in ("question", "answer", "region", "split", "group"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{self.id}: {name} must be a string or None, got {type(value).__name__}")
        if not isinstance(self.meta, dict):
            raise TypeError(f"{self.id}: meta must be a dict")

    @property
    def is_pair(self) -> bool:
        """Whether the sample holds a prior and a current image."""
        return len(self.images) == 2

    @property
    def has_mask(self) -> bool:
        """Whether any image has a mask."""
        return any(m is not None for m in self.masks)
