"""ChestX-Det (Lian et al. 2021; github.com/Deepwise-AILab/ChestX-Det-Dataset).

``ChestX_Det_{train,test}.json``: a list of ``{"file_name": "36199.png", "syms": [...],
"boxes": [[x1, y1, x2, y2], ...], "polygons": [[[x, y], ...], ...]}``, one polygon per finding.
The image zips unpack into ``train/`` and ``test/`` beside the JSON files (``train_data/``,
``test_data/`` or ``images/`` also work). Polygons are rasterised with ``PIL.ImageDraw`` into one binary mask per image (a finding
whose polygon has fewer than three points falls back to its box); images without findings are
``normal`` with an empty mask.

Masks are written once as PNG files into a cache folder (``masks="cache"``, the default:
``$MEDIC_AD_CACHE`` or ``~/.cache/medic_ad``), kept in memory (``"array"``), or left out (``"none"``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from medic_ad.data.adapters._common import BAD_ROW, UNREADABLE, peek, read_json_records, require_file
from medic_ad.data.errors import ImageReadError
from medic_ad.data.io import image_size
from medic_ad.data.registry import LoadReport, register_dataset
from medic_ad.data.schema import Sample

NAME = "chestx_det"
SPLITS = ("train", "test")


def _annotation_file(root: Path, split: str) -> Path | None:
    for name in (f"ChestX_Det_{split}.json", f"{split}.json"):
        path = root / name
        if path.is_file() and '"syms"' in peek(path, 4096):
            return path
    return None


def _image_dir(root: Path, split: str) -> Path:
    for name in (split, f"{split}_data", "images"):
        if (root / name).is_dir():
            return root / name
    return root


def detect(root: Path) -> float:
    """1.0 when a ChestX-Det annotation file (file_name/syms/polygons records) is present."""
    return 1.0 if any(_annotation_file(root, s) for s in SPLITS) else 0.0


def default_cache_dir() -> Path:
    """``$MEDIC_AD_CACHE`` or ``~/.cache/medic_ad``."""
    return Path(os.environ.get("MEDIC_AD_CACHE") or Path.home() / ".cache" / "medic_ad")


def rasterise(size: tuple[int, int], polygons: list[Any], boxes: list[Any]) -> np.ndarray:
    """Union of ``polygons`` (boxes where a polygon is degenerate) as a uint8 0/1 mask of ``size`` (h, w)."""
    canvas = Image.new("L", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for i in range(max(len(polygons), len(boxes))):
        points = polygons[i] if i < len(polygons) else []
        if len(points) >= 3:
            draw.polygon([(float(x), float(y)) for x, y in points], fill=1, outline=1)
        elif i < len(boxes) and len(boxes[i]) == 4:
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            draw.rectangle([x1, y1, x2, y2], fill=1, outline=1)
    return np.asarray(canvas, dtype=np.uint8)


def _write_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(mask * 255).save(tmp, format="PNG")
    tmp.replace(path)


@register_dataset(
    NAME,
    detect=detect,
    description="ChestX_Det_{train,test}.json (file_name, syms, boxes, polygons) with {train,test}/",
)
def load(
    root: Path,
    *,
    split: str | None,
    report: LoadReport,
    masks: Literal["cache", "array", "none"] = "cache",
    cache_dir: str | Path | None = None,
) -> list[Sample]:
    """ChestX-Det samples with rasterised masks; findings and boxes go into ``meta``."""
    if masks not in ("cache", "array", "none"):
        raise ValueError(f"masks must be 'cache', 'array' or 'none', got {masks!r}")
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    cache = Path(cache_dir) if cache_dir else default_cache_dir() / NAME / digest
    samples = []
    for split_name in SPLITS:
        ann = _annotation_file(root, split_name)
        if ann is None or (split is not None and split != split_name):
            continue
        image_dir = _image_dir(root, split_name)
        for rec in report.track(read_json_records(ann, report), f"{split_name} masks"):
            report.rows += 1
            sample = _sample(rec, ann, image_dir, split_name, masks, cache / split_name, report)
            if sample is not None:
                samples.append(sample)
    return samples


def _sample(
    rec: dict[str, Any],
    ann: Path,
    image_dir: Path,
    split: str,
    masks: str,
    cache: Path,
    report: LoadReport,
) -> Sample | None:
    file_name = rec.get("file_name")
    syms, boxes, polygons = rec.get("syms", []), rec.get("boxes", []), rec.get("polygons", [])
    if not isinstance(file_name, str) or not all(isinstance(v, list) for v in (syms, boxes, polygons)):
        report.skip(BAD_ROW, f"{ann}: {file_name!r}")
        return None
    image = image_dir / file_name
    if not require_file(image, report):
        return None
    mask: Path | np.ndarray | None = None
    if masks != "none":
        try:
            size = image_size(image)
            cached = cache / Path(file_name).with_suffix(".png").name
            if masks == "array":
                mask = rasterise(size, polygons, boxes)
            else:
                if not cached.is_file():
                    _write_png(cached, rasterise(size, polygons, boxes))
                mask = cached
        except (ImageReadError, ValueError, TypeError) as exc:
            report.skip(UNREADABLE if isinstance(exc, ImageReadError) else BAD_ROW, f"{image}")
            return None
    return Sample(
        id=f"{NAME}/{split}/{file_name}",
        images=[image],
        masks=[mask],
        label="abnormal" if syms else "normal",
        dataset=NAME,
        split=split,
        meta={"findings": [str(s) for s in syms], "boxes": boxes},
    )
