"""Helpers the adapters share: file listing, CSV/JSON/VQA record reading, label names, row checks, samples."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from medic_ad.data.errors import DatasetFormatError, ImageReadError
from medic_ad.data.io import image_size
from medic_ad.data.registry import LoadReport
from medic_ad.data.schema import Label, Sample
from medic_ad.data.splits import canonical_split

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


def class_dirs(folder: Path) -> list[Path]:
    """Subfolders of ``folder`` named after a class (see :func:`label_of`), sorted by name."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and label_of(d.name) is not None)


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


def read_keyed_csv(
    path: Path, key_columns: tuple[str, ...], report: LoadReport
) -> tuple[dict[str, str], str, list[dict[str, str]]] | None:
    """A CSV's columns by lower-case name, the first of ``key_columns`` it has, and its rows.

    None, with one malformed row counted, when it has none of ``key_columns``.
    """
    header, rows = read_csv(path)
    cols = {c.lower(): c for c in header}
    key = next((cols[name] for name in key_columns if name in cols), None)
    if key is None:
        report.skip(BAD_ROW, f"{path} (no {key_columns[0]!r} column)")
        return None
    return cols, key, rows


def cell(row: dict[str, str], cols: dict[str, str], name: str) -> str:
    """``row``'s value in column ``name`` (a key of ``cols``); "" when the CSV has no such column."""
    return row.get(cols[name], "") if name in cols else ""


def split_cell(row: dict[str, str], cols: dict[str, str]) -> str | None:
    """The canonical split named in ``row``'s ``split`` column; None when empty or absent."""
    value = cell(row, cols, "split")
    return canonical_split(value) if value else None


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
    records = []
    for where, item in _json_items(path, report):
        if isinstance(item, dict):
            records.append(item)
        else:
            report.rows += 1
            report.skip(BAD_ROW, where)
    return records


def _json_items(path: Path, report: LoadReport) -> Iterator[tuple[str, Any]]:
    """(location, value) for each item of a JSON list file or each line of a JSON-lines file.

    Lines that do not parse are skipped and counted here; the caller checks each value's type.
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
        for i, item in enumerate(data):
            yield f"{path}[{i}]", item
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            report.rows += 1
            report.skip(BAD_JSON, f"{path}:{lineno}")
            continue
        yield f"{path}:{lineno}", item


class VqaRecord(NamedTuple):
    """One question/answer record with its image name, question and answer text stripped."""

    index: int
    fields: dict[str, Any]
    image: str
    question: str
    answer: str


def read_vqa_records(path: Path, image_key: str, report: LoadReport) -> Iterator[VqaRecord]:
    """The records of a VQA JSON/JSON-lines file that name an image (``image_key``), a question and an answer.

    Every record counts as a row; one missing any of the three is skipped as a malformed row.
    """
    for i, rec in enumerate(read_json_records(path, report)):
        report.rows += 1
        image, question, answer = rec.get(image_key), rec.get("question"), rec.get("answer")
        if not isinstance(image, str) or not isinstance(question, str) or answer is None:
            report.skip(BAD_ROW, f"{path}[{i}]")
            continue
        yield VqaRecord(i, rec, image, question.strip(), str(answer).strip())


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


def image_sample(
    dataset: str,
    root: Path,
    image: Path,
    label: Label | None,
    *,
    mask: Path | None = None,
    split: str | None = None,
    group: str | None = None,
) -> Sample:
    """A one-image sample with id ``dataset/<image path under root>`` and ``group`` under ``dataset/``."""
    return Sample(
        id=f"{dataset}/{relative_id(root, image)}",
        images=[image],
        masks=[mask],
        label=label,
        dataset=dataset,
        split=split,
        group=f"{dataset}/{group}" if group is not None else None,
    )
