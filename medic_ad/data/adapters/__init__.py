"""Dataset adapters; importing this package registers every one of them (explicit list below)."""

from medic_ad.data.adapters import (
    bmad,
    chestx_det,
    cxr_pairs,
    image_folder,
    image_mask,
    mimic_diff_vqa,
    mmxu,
    pathvqa,
    slake,
    vqa_rad,
)

__all__ = [
    "bmad",
    "chestx_det",
    "cxr_pairs",
    "image_folder",
    "image_mask",
    "mimic_diff_vqa",
    "mmxu",
    "pathvqa",
    "slake",
    "vqa_rad",
]
