"""MIMIC-Diff-VQA / Medical-Diff-VQA (Hu et al. KDD 2023; PhysioNet ``medical-diff-vqa``).

``mimic_pair_questions.csv`` columns: ``study_id`` (main study), ``subject_id``, ``ref_id``
(reference study), ``question_type`` (abnormality, location, level, view, type, presence,
difference), ``question``, ``answer``, ``split`` (train/val/test). ``mimic_all.csv`` maps each
``study_id`` to its ``dicom_id`` images and ``view``; images come from MIMIC-CXR-JPG at
``files/p<first 2 digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg`` under ``image_root``
(default: the dataset folder). A frontal view (PA, then AP) is picked per study.

Difference questions become pairs ``[reference, main]`` (the answer describes the main image
relative to the reference); other question types keep the main image only. The free-text answer
has no worsened/improved label, so ``change`` stays None.
"""

from __future__ import annotations

from pathlib import Path

from medic_ad.data.adapters._common import BAD_ROW, read_csv, require_file
from medic_ad.data.errors import DatasetFormatError
from medic_ad.data.registry import LoadReport, register_dataset
from medic_ad.data.schema import Sample
from medic_ad.data.splits import canonical_split

NAME = "mimic_diff_vqa"
QUESTIONS_CSV = "mimic_pair_questions.csv"
STUDIES_CSV = "mimic_all.csv"
_VIEW_RANK = {"postero-anterior": 0, "pa": 0, "antero-posterior": 1, "ap": 1}


def detect(root: Path) -> float:
    """1.0 when mimic_pair_questions.csv is present (0.4 without mimic_all.csv)."""
    if not (root / QUESTIONS_CSV).is_file():
        return 0.0
    return 1.0 if (root / STUDIES_CSV).is_file() else 0.4


def _study_images(studies_csv: Path, image_root: Path) -> dict[str, tuple[Path, int | None]]:
    """study_id -> (frontal image path, study_order)."""
    _, rows = read_csv(studies_csv)
    best: dict[str, tuple[int, Path, int | None]] = {}
    for row in rows:
        study, subject, dicom = row.get("study_id", ""), row.get("subject_id", ""), row.get("dicom_id", "")
        if not (study and subject and dicom):
            continue
        study, subject = study.split(".")[0], subject.split(".")[0]
        rank = _VIEW_RANK.get(row.get("view", "").strip().lower(), 2)
        path = image_root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        order_text = row.get("study_order", "").split(".")[0]
        order = int(order_text) if order_text.isdigit() else None
        if study not in best or rank < best[study][0]:
            best[study] = (rank, path, order)
    return {study: (path, order) for study, (_, path, order) in best.items()}


@register_dataset(
    NAME,
    detect=detect,
    description="MIMIC-Diff-VQA: mimic_pair_questions.csv + mimic_all.csv with MIMIC-CXR-JPG files/",
)
def load(
    root: Path,
    *,
    split: str | None,
    report: LoadReport,
    image_root: str | Path | None = None,
    question_types: tuple[str, ...] | None = ("difference",),
) -> list[Sample]:
    """MIMIC-Diff-VQA samples of ``question_types`` (None: all types)."""
    if not (root / STUDIES_CSV).is_file():
        raise DatasetFormatError(root, f"{STUDIES_CSV} is missing (needed to find each study's image)")
    studies = _study_images(root / STUDIES_CSV, Path(image_root) if image_root else root)
    _, rows = read_csv(root / QUESTIONS_CSV)
    samples = []
    for i, row in enumerate(report.track(rows, "checking images")):
        report.rows += 1
        qtype = row.get("question_type", "")
        if question_types is not None and qtype not in question_types:
            continue
        row_split = canonical_split(row["split"]) if row.get("split") else None
        if split is not None and row_split != split:
            continue
        main_id, ref_id = row.get("study_id", "").split(".")[0], row.get("ref_id", "").split(".")[0]
        if not (main_id and row.get("question") and row.get("answer")) or main_id not in studies:
            report.skip(BAD_ROW, f"{root / QUESTIONS_CSV}: row {i + 2}")
            continue
        main, main_order = studies[main_id]
        images = [main]
        meta: dict[str, object] = {"question_type": qtype, "study_id": main_id}
        if qtype == "difference":
            if ref_id not in studies:
                report.skip(BAD_ROW, f"{root / QUESTIONS_CSV}: row {i + 2} (unknown ref_id)")
                continue
            ref, ref_order = studies[ref_id]
            images = [ref, main]
            meta["ref_id"] = ref_id
            if main_order is not None and ref_order is not None:
                meta["ref_is_earlier"] = ref_order < main_order
        if not all(require_file(p, report) for p in images):
            continue
        subject = row.get("subject_id", "").split(".")[0]
        samples.append(
            Sample(
                id=f"{NAME}/{i}",
                images=images,
                question=row["question"],
                answer=row["answer"],
                dataset=NAME,
                split=row_split,
                group=f"{NAME}/{subject}" if subject else None,
                meta=meta,
            )
        )
    return samples
