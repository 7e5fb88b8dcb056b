"""Image folders with one subfolder per class, optionally listed in ``labels.csv``.

Layouts: ``{yes,no}/``, ``{abnormal,normal}/``, ``{good,Ungood}/`` (any of the names in
``_common.NORMAL_NAMES`` / ``ABNORMAL_NAMES``). When ``labels.csv`` exists it is authoritative:
columns ``path`` (or ``image``) and ``label``, optional ``group`` and ``split`` (Br35H, Head CT,
Brain MRI and COVID dev folders in ``shared/data``).
"""

from __future__ import annotations

from pathlib import Path

from medic_ad.data.adapters._common import (
    BAD_LABEL,
    BAD_ROW,
    cell,
    class_dirs,
    csv_header,
    has_images,
    image_sample,
    label_of,
    list_images,
    read_keyed_csv,
    require_file,
    resolve,
    split_cell,
)
from medic_ad.data.registry import LoadReport, register_dataset
from medic_ad.data.schema import Sample

LABELS_CSV = "labels.csv"


def detect(root: Path) -> float:
    """1.0 with a labels.csv (path,label); 0.9 with normal and abnormal class folders."""
    cols = {c.lower() for c in csv_header(root / LABELS_CSV)} if (root / LABELS_CSV).is_file() else set()
    if cols and {"path", "image"} & cols and "label" in cols:
        return 1.0
    classes = [d for d in class_dirs(root) if has_images(d)]
    labels = {label_of(d.name) for d in classes}
    if labels == {"normal", "abnormal"}:
        return 0.9
    return 0.3 if classes else 0.0


@register_dataset(
    "image_folder",
    detect=detect,
    description="class subfolders (yes/no, abnormal/normal, good/Ungood), optional labels.csv "
    "(path,label[,group][,split])",
)
def load(
    root: Path, *, split: str | None, report: LoadReport, labels_csv: str = LABELS_CSV
) -> list[Sample]:
    """Samples of a class-folder dataset; ``Sample.dataset`` is the folder name."""
    name = root.name
    csv_path = root / labels_csv
    if csv_path.is_file():
        return _from_csv(root, name, csv_path, split, report)
    samples = []
    for class_dir in class_dirs(root):
        label = label_of(class_dir.name)
        for path in list_images(class_dir):
            report.rows += 1
            samples.append(image_sample(name, root, path, label))
    return samples


def _from_csv(
    root: Path, name: str, csv_path: Path, split: str | None, report: LoadReport
) -> list[Sample]:
    table = read_keyed_csv(csv_path, ("path", "image"), report)
    if table is None:
        return []
    cols, path_col, rows = table
    samples = []
    for row in report.track(rows, "checking files"):
        report.rows += 1
        rel = row.get(path_col, "")
        if not rel:
            report.skip(BAD_ROW, f"{csv_path}: row {report.rows}")
            continue
        raw_label = row.get(cols["label"], "") if "label" in cols else Path(rel).parts[0]
        label = label_of(raw_label)
        if label is None:
            report.skip(BAD_LABEL, f"{csv_path}: {rel} ({raw_label!r})")
            continue
        row_split = split_cell(row, cols)
        if split is not None and row_split != split:
            continue
        path = resolve(root, rel)
        if not require_file(path, report):
            continue
        group = cell(row, cols, "group") or None
        samples.append(image_sample(name, root, path, label, split=row_split, group=group))
    return samples
