"""BMAD (Bao et al. 2024, "BMAD: Benchmarks for Medical Anomaly Detection") folders.

Image-level sets (RSNA, Camelyon16, OCT2017)::

    train/good/*.png   valid/{good,Ungood}/*.png   test/{good,Ungood}/*.png

Pixel-level sets, class first (Brain/BraTS2021; RESC spells them ``val`` and ``ungood``)::

    train/good/img/*.png   {valid,test}/{good,Ungood}/img/*.png   {valid,test}/{good,Ungood}/label/*.png

and image/label first (the Liver CT archive)::

    train/good/img/*.png (or train/img/good/)   {valid,test}/img/{good,Ungood}/*.png   {valid,test}/label/{good,Ungood}/*.png

Masks share their image's file name. ``root`` may also be the folder holding several BMAD sets;
each then keeps its own folder name as ``Sample.dataset``.

BMAD's training folders hold normal images only; its abnormal, masked images are all in the
labelled folders (``valid``, ``test``). With ``split_policy="volumes"`` (the default, how MEDIC-AD
trains) the labelled folders are pooled and split by volume (patient) into a training part and an
evaluation part (``test``, scored in Table 3): a volume goes to ``test`` when the SHA-1 of
``<set>/<volume>`` falls below ``eval_fraction``, so the split is the same on every run and
machine and never puts one volume on both sides. Normal ``train`` images of a volume in the
evaluation part are left out (counted in the report's notes). ``split_policy="folders"`` keeps the
released ``train``/``val``/``test`` folders as they are.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from medic_ad.data.adapters._common import image_sample, label_of, list_images, mask_matches
from medic_ad.data.registry import LoadReport, register_dataset
from medic_ad.data.schema import Sample
from medic_ad.data.splits import canonical_split

SPLIT_DIRS = ("train", "valid", "val", "test")
LABELLED = ("valid", "val", "test")
POLICIES = ("volumes", "folders")
# BraTS "00003_60.png" is slice 60 of volume 00003; a name without "_" is its own volume
DEFAULT_VOLUME_REGEX = r"^([^_]+)_"
HELD_OUT_NORMAL = "normal train image of a volume in the evaluation part"


def _class_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(d for d in folder.iterdir() if d.is_dir() and label_of(d.name) in ("normal", "abnormal")
                  and d.name.lower() in ("good", "ungood"))


def _classes(split_dir: Path) -> list[tuple[Path, Path | None]]:
    """(image folder, mask folder or None) per class folder of one split, in either layout."""
    out = []
    if (split_dir / "img").is_dir() and _class_dirs(split_dir / "img"):  # Liver: img/ and label/ above classes
        for cls in _class_dirs(split_dir / "img"):
            out.append((cls, split_dir / "label" / cls.name))
        return out
    for cls in _class_dirs(split_dir):
        img = cls / "img" if (cls / "img").is_dir() else cls
        out.append((img, cls / "label"))
    return out


def _split_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and d.name.lower() in SPLIT_DIRS)


def _is_bmad(root: Path) -> bool:
    if not root.is_dir():
        return False
    splits = {d.name.lower(): d for d in _split_dirs(root)}
    if "train" not in splits or not _classes(splits["train"]):
        return False
    return any(_classes(d) for name, d in splits.items() if name in LABELLED)


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


def in_eval_part(set_name: str, volume: str, eval_fraction: float) -> bool:
    """Whether a labelled volume belongs to the evaluation part (a pure function of its names)."""
    digest = hashlib.sha1(f"{set_name}/{volume}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


@register_dataset(
    "bmad",
    detect=detect,
    description="BMAD: train/good, {valid,val,test}/{good,Ungood}[/img, /label] or {valid,test}/{img,label}/{good,Ungood}",
)
def load(
    root: Path,
    *,
    split: str | None,
    report: LoadReport,
    check_masks: bool = True,
    group_regex: str | None = DEFAULT_VOLUME_REGEX,
    split_policy: str = "volumes",
    eval_fraction: float = 0.5,
) -> list[Sample]:
    """Samples of one BMAD set (or of each set under ``root``).

    Args:
        check_masks: skip images whose mask size differs (reads image headers only).
        group_regex: a pattern whose first group, searched in the file stem, names the volume
            (patient) of an image; a stem it does not match is its own volume.
        split_policy: ``"volumes"`` (labelled folders split by volume into train / test) or
            ``"folders"`` (the released train / val / test folders).
        eval_fraction: share of labelled volumes in the evaluation part (``"volumes"`` only).
    """
    if split_policy not in POLICIES:
        raise ValueError(f"bmad: split_policy must be one of {', '.join(POLICIES)}, got {split_policy!r}")
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"bmad: eval_fraction must be in [0, 1], got {eval_fraction}")
    pattern = re.compile(group_regex) if group_regex else None
    samples: list[Sample] = []
    for set_dir in _sets(root):
        name = set_dir.name
        for split_dir in _split_dirs(set_dir):
            folder_split = canonical_split(split_dir.name)
            for img_dir, label_dir in _classes(split_dir):
                for sample in _load_class(set_dir, name, img_dir, label_dir, folder_split, report, check_masks,
                                          pattern):
                    if split_policy == "volumes":
                        sample = _assign(sample, folder_split, eval_fraction, report)
                    if sample is not None and (split is None or sample.split == split):
                        samples.append(sample)
    return samples


def _assign(sample: Sample, folder_split: str, eval_fraction: float, report: LoadReport) -> Sample | None:
    set_name, volume = sample.dataset, sample.meta["volume"]
    held_out = in_eval_part(set_name, volume, eval_fraction)
    if folder_split == "train":
        if held_out:
            report.note(HELD_OUT_NORMAL)
            return None
        return sample
    sample.split = "test" if held_out else "train"
    return sample


def _load_class(
    set_dir: Path,
    name: str,
    img_dir: Path,
    label_dir: Path | None,
    split_name: str,
    report: LoadReport,
    check_masks: bool,
    pattern: re.Pattern[str] | None,
) -> list[Sample]:
    class_name = img_dir.parent.name if img_dir.name == "img" else img_dir.name
    label = label_of(class_name)
    out = []
    for path in report.track(list_images(img_dir), f"{split_name}/{class_name}"):
        report.rows += 1
        mask: Path | None = None
        if label_dir is not None and label_dir.is_dir():
            candidate = label_dir / path.name
            if candidate.is_file():
                if check_masks and not mask_matches(path, candidate, report):
                    continue
                mask = candidate
            else:
                report.note("image without mask")
        match = pattern.search(path.stem) if pattern else None
        volume = match.group(1) if match else path.stem
        sample = image_sample(name, set_dir, path, label, mask=mask, split=split_name, group=volume)
        sample.meta.update(volume=volume, patient=f"bmad/{name}/{volume}", folder=split_name)
        out.append(sample)
    return out
