"""BMAD (Bao et al. 2024, "BMAD: Benchmarks for Medical Anomaly Detection") folders.

Image-level sets (RSNA, Camelyon16, OCT2017)::

    train/good/*.png   valid/{good,Ungood}/*.png   test/{good,Ungood}/*.png

Pixel-level sets (Brain/BraTS2021, Liver CT, RESC)::

    train/good/img/*.png   {valid,test}/{good,Ungood}/img/*.png   {valid,test}/{good,Ungood}/label/*.png

Masks in ``label/`` share their image's file name. ``root`` may also be the folder holding several
BMAD sets; each then keeps its own folder name as ``Sample.dataset``.
"""

from __future__ import annotations

import re
from pathlib import Path

from medic_ad.data.adapters._common import class_dirs, image_sample, label_of, list_images, mask_matches
from medic_ad.data.registry import LoadReport, register_dataset
from medic_ad.data.schema import Sample
from medic_ad.data.splits import canonical_split

SPLIT_DIRS = ("train", "valid", "val", "test")


def _is_bmad(root: Path) -> bool:
    if not (root / "train" / "good").is_dir():
        return False
    return any((root / s / c).is_dir() for s in ("valid", "val", "test") for c in ("good", "Ungood"))


def _sets(root: Path) -> list[Path]:
    if _is_bmad(root):
        return [root]
    return sorted(d for d in root.iterdir() if d.is_dir() and _is_bmad(d))


def detect(root: Path) -> float:
    """1.0 for a BMAD set, 0.9 for a folder of BMAD sets, 0.3 for a lone train/good."""
    if _is_bmad(root):
        return 1.0
    if _sets(root):
        return 0.9
    return 0.3 if (root / "train" / "good").is_dir() else 0.0


@register_dataset(
    "bmad",
    detect=detect,
    description="BMAD: train/good, {valid,test}/{good,Ungood}[/img, /label]",
)
def load(
    root: Path,
    *,
    split: str | None,
    report: LoadReport,
    check_masks: bool = True,
    group_regex: str | None = None,
) -> list[Sample]:
    """Samples of one BMAD set (or of each set under ``root``).

    Args:
        check_masks: skip images whose mask size differs (reads image headers only).
        group_regex: a pattern whose first group, searched in the file stem, names the group
            (patient) of an image, e.g. ``r"^(\\d+)_"`` for BraTS ``00003_60.png``.
    """
    pattern = re.compile(group_regex) if group_regex else None
    samples: list[Sample] = []
    for set_dir in _sets(root):
        name = set_dir.name
        for split_dir in sorted(d for d in set_dir.iterdir() if d.is_dir() and d.name in SPLIT_DIRS):
            split_name = canonical_split(split_dir.name)
            if split is not None and split_name != split:
                continue
            for class_dir in class_dirs(split_dir):
                samples.extend(
                    _load_class(set_dir, name, class_dir, split_name, report, check_masks, pattern)
                )
    return samples


def _load_class(
    set_dir: Path,
    name: str,
    class_dir: Path,
    split_name: str,
    report: LoadReport,
    check_masks: bool,
    pattern: re.Pattern[str] | None,
) -> list[Sample]:
    label = label_of(class_dir.name)
    img_dir = class_dir / "img" if (class_dir / "img").is_dir() else class_dir
    label_dir = class_dir / "label"
    out = []
    for path in report.track(list_images(img_dir), f"{split_name}/{class_dir.name}"):
        report.rows += 1
        mask: Path | None = None
        if label_dir.is_dir():
            candidate = label_dir / path.name
            if candidate.is_file():
                if check_masks and not mask_matches(path, candidate, report):
                    continue
                mask = candidate
            else:
                report.note("image without mask")
        match = pattern.search(path.stem) if pattern else None
        group = match.group(1) if match else None
        out.append(image_sample(name, set_dir, path, label, mask=mask, split=split_name, group=group))
    return out
