"""Helpers the adapters share: file listing, CSV/JSON reading, label names, row checks."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from medic_ad.data.errors import DatasetFormatError, ImageReadError
from medic_ad.data.io import image_size
from medic_ad.data.registry import LoadReport
from medic_ad.data.schema import Label

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom", ".nii", ".gz"})

NORMAL_NAMES = frozenset({"normal", "no", "good", "negative", "healthy", "0", "false"})
ABNORMAL_NAMES = frozenset(
    {"abnormal", "yes", "ungood", "bad", "positive", "anomaly", "anomalous", "tumor", "tumour", "1", "true"}
)

MISSING_IMAGE = "missing image file"
MISSING_MASK = "missing mask file"
MASK_SIZE = "mask size differs from its image"
UNREADABLE = "unreadable image header"
BAD_LABEL = "unknown label"
BAD_JSON = "malformed JSON line"
BAD_ROW = "malformed row"


def label_of(name: str) -> Label | None:
    """``"normal"``/``"abnormal"`` for a class name such as yes/no, good/Ungood, 0/1; else None."""
    key = name.strip().lower()
    if key in NORMAL_NAMES:
        return "normal"
    if key in ABNORMAL_NAMES:
        return "abnormal"
    return None


def is_image_file(path: Path) -> bool:
    """A visible file whose suffix is an image format we read (or none: DICOM often has none)."""
    if path.name.startswith(".") or not path.is_file():
        return False
    if path.suffix.lower() == ".gz":
        return path.name.lower().endswith(".nii.gz")
    return path.suffix.lower() in IMAGE_SUFFIXES or path.suffix == ""


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def has_images(folder: Path) -> bool:
    """Whether ``folder`` directly holds at least one image file."""
    return folder.is_dir() and any(is_image_file(p) for p in folder.iterdir())


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a UTF-8 CSV file (a BOM is tolerated)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
            return [c.strip() for c in reader.fieldnames or []], rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetFormatError(path, f"malformed CSV ({type(exc).__name__})") from None


def csv_header(path: Path) -> list[str]:
    """Column names of a CSV file (empty if unreadable)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [c.strip() for c in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def peek(path: Path, n: int = 4096) -> str:
    """The first ``n`` bytes of a text file, decoded leniently (for layout detection)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(n).decode("utf-8", errors="replace")
    except OSError:
        return ""


def read_json_records(path: Path, report: LoadReport) -> list[dict[str, Any]]:
    """Records of a JSON list file or a JSON-lines file; malformed lines are skipped and counted.

    Raises:
        DatasetFormatError: a ``.json`` file that does not parse, or is not a list of objects.
    """
    text = path.read_text(encoding="utf-8-sig")
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" or stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(path, f"malformed JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(data, list):
            raise DatasetFormatError(path, "expected a JSON list of records")
        records = []
        for i, item in enumerate(data):
            if isinstance(item, dict):
                records.append(item)
            else:
                report.rows += 1
                report.skip(BAD_ROW, f"{path}[{i}]")
        return records
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            report.rows += 1
            report.skip(BAD_JSON, f"{path}:{lineno}")
            continue
        if isinstance(item, dict):
            records.append(item)
        else:
            report.rows += 1
            report.skip(BAD_ROW, f"{path}:{lineno}")
    return records


def resolve(base: Path, relative: str) -> Path:
    """``relative`` under ``base`` (absolute paths kept)."""
    p = Path(relative)
    return p if p.is_absolute() else base / p


def require_file(path: Path, report: LoadReport, reason: str = MISSING_IMAGE) -> bool:
    """True if ``path`` is a file; otherwise count a skipped row and return False."""
    if path.is_file():
        return True
    report.skip(reason, path)
    return False


def mask_matches(image: Path, mask: Path, report: LoadReport) -> bool:
    """True if ``mask`` has the size of ``image``; otherwise count a skipped row."""
    try:
        same = image_size(image) == image_size(mask)
    except (ImageReadError, FileNotFoundError) as exc:
        report.skip(UNREADABLE, str(exc))
        return False
    if not same:
        report.skip(MASK_SIZE, mask)
    return same


def relative_id(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` in POSIX form (the usual sample id suffix)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
