"""Image + mask folders: ``images/N.png`` with ``masks/N.png``, optionally listed in ``labels.csv``.

``labels.csv`` columns: ``image``, ``mask`` (may be empty: no mask), optional ``split``,
``label`` and ``group`` (``br35h_masks`` in ``shared/data``). Without it, masks are paired by file
name, then by stem (``N.png`` with ``N.tif``, ``N_mask.png`` or ``N_seg.png``) (``figshare_masks``).
Every image is ``label="abnormal"`` unless the CSV or the ``label`` option says otherwise.

Folders whose images are named by a running number in acquisition order (``figshare_masks``, where a
patient's slices have neighbouring numbers and no patient id is given) can be split into blocks of
numbers with the ``blocks`` option: a held-back block's interior is ``val``, its edges ``guard`` (a
patient that straddles the block edge may have slices there) and every other block ``train``, so no
``val`` image has a ``train`` neighbour closer than ``margin`` numbers. The block is the group and
the holdout key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medic_ad.data.adapters._common import (
    BAD_LABEL,
    BAD_ROW,
    MISSING_MASK,
    cell,
    csv_header,
    image_sample,
    label_of,
    list_images,
    mask_matches,
    read_keyed_csv,
    require_file,
    resolve,
    split_cell,
)
from medic_ad.data.registry import LoadReport, register_dataset
from medic_ad.data.schema import Label, Sample

IMAGE_DIRS = ("images", "image", "imgs", "img")
MASK_DIRS = ("masks", "mask")
LABELS_CSV = "labels.csv"
MASK_SUFFIXES = ("", "_mask", "_seg", "_label")


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def detect(root: Path) -> float:
    """1.0 with both an images/ and a masks/ folder; 0.2 with images/ only."""
    images, masks = _first_dir(root, IMAGE_DIRS), _first_dir(root, MASK_DIRS)
    if images and masks:
        return 1.0
    cols = {c.lower() for c in csv_header(root / LABELS_CSV)} if (root / LABELS_CSV).is_file() else set()
    if {"image", "mask"} <= cols:
        return 0.9
    return 0.2 if images else 0.0


@register_dataset(
    "image_mask",
    detect=detect,
    description="images/ and masks/ with matching names, optional labels.csv (image,mask[,split])",
)
def load(
    root: Path,
    *,
    split: str | None,
    report: LoadReport,
    labels_csv: str = LABELS_CSV,
    label: Label | None = "abnormal",
    check_masks: bool = True,
    blocks: dict | None = None,
) -> list[Sample]:
    """Image/mask samples; ``Sample.dataset`` is the folder name.

    Args:
        label: image label when the CSV has no ``label`` column.
        check_masks: skip pairs whose mask size differs from the image (reads headers only).
        blocks: ``{size, every, offset, margin}``: split numbered images by blocks of ``size`` numbers;
            blocks with ``index % every == offset`` are held back (module docstring).
    """
    name = root.name
    if (root / labels_csv).is_file():
        pairs = _pairs_from_csv(root, root / labels_csv, split, label, report)
    else:
        pairs = _pairs_by_name(root, label, report)
    if blocks is not None:
        pairs = _block_split(pairs, BlockSplit(**blocks), report)
        if split is not None:
            pairs = [p for p in pairs if p[3] == split]
    samples = []
    for image, mask, row_label, row_split, group in report.track(pairs, "checking masks"):
        if check_masks and mask is not None and not mask_matches(image, mask, report):
            continue
        sample = image_sample(name, root, image, row_label, mask=mask, split=row_split, group=group)
        if blocks is not None:
            sample.meta["patient"] = sample.group
        samples.append(sample)
    return samples


@dataclass(frozen=True)
class BlockSplit:
    """Held-back blocks of running image numbers (module docstring)."""

    size: int
    every: int
    offset: int
    margin: int

    def __post_init__(self) -> None:
        if not (self.size > 0 and self.every > 1 and 0 <= self.offset < self.every
                and 0 <= self.margin and 2 * self.margin < self.size):
            raise ValueError(f"blocks: need size > 0, every > 1, 0 <= offset < every, "
                             f"0 <= 2 * margin < size; got {self}")

    def split_of(self, number: int) -> str:
        if (number // self.size) % self.every != self.offset:
            return "train"
        inside = number % self.size
        return "val" if self.margin <= inside < self.size - self.margin else "guard"


def _block_split(pairs: list["Pair"], blocks: BlockSplit, report: LoadReport) -> list["Pair"]:
    out = []
    for image, mask, row_label, _, _ in pairs:
        stem = image.name.split(".")[0]
        if not stem.isdigit():
            report.skip("image not named by a number (blocks)", image)
            continue
        number = int(stem)
        out.append((image, mask, row_label, blocks.split_of(number), f"block{number // blocks.size}"))
    return out


Pair = tuple[Path, Path | None, Label | None, str | None, str | None]


def _pairs_from_csv(
    root: Path, csv_path: Path, split: str | None, default: Label | None, report: LoadReport
) -> list[Pair]:
    table = read_keyed_csv(csv_path, ("image", "path"), report)
    if table is None:
        return []
    cols, image_col, rows = table
    out: list[Pair] = []
    for row in rows:
        report.rows += 1
        rel = row.get(image_col, "")
        if not rel:
            report.skip(BAD_ROW, f"{csv_path}: row {report.rows}")
            continue
        row_split = split_cell(row, cols)
        if split is not None and row_split != split:
            continue
        row_label = default
        raw_label = cell(row, cols, "label")
        if raw_label:
            row_label = label_of(raw_label)
            if row_label is None:
                report.skip(BAD_LABEL, f"{csv_path}: {rel}")
                continue
        image = resolve(root, rel)
        if not require_file(image, report):
            continue
        mask_rel = cell(row, cols, "mask")
        mask = resolve(root, mask_rel) if mask_rel else None
        if mask is not None and not require_file(mask, report, MISSING_MASK):
            continue
        group = cell(row, cols, "group")
        out.append((image, mask, row_label, row_split, group or None))
    return out


def _pairs_by_name(root: Path, default: Label | None, report: LoadReport) -> list[Pair]:
    image_dir, mask_dir = _first_dir(root, IMAGE_DIRS), _first_dir(root, MASK_DIRS)
    if image_dir is None or mask_dir is None:
        return []
    masks = {p.name: p for p in list_images(mask_dir)}
    by_stem = {p.name.split(".")[0]: p for p in masks.values()}
    used: set[Path] = set()
    out: list[Pair] = []
    for image in list_images(image_dir):
        report.rows += 1
        stem = image.name.split(".")[0]
        mask = masks.get(image.name) or next(
            (by_stem[stem + s] for s in MASK_SUFFIXES if stem + s in by_stem), None
        )
        if mask is None:
            report.skip(MISSING_MASK, image)
            continue
        used.add(mask)
        out.append((image, mask, default, None, None))
    if len(used) < len(masks):
        report.note("mask without image", len(masks) - len(used))
    return out
