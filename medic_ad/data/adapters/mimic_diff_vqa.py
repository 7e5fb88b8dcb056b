"""MIMIC-Diff-VQA / Medical-Diff-VQA (Hu et al. KDD 2023; PhysioNet ``medical-diff-vqa``).

``mimic_pair_questions.csv`` columns: ``study_id`` (main study), ``subject_id``, ``ref_id``
(reference study), ``question_type`` (abnormality, location, level, view, type, presence,
difference), ``question``, ``answer``, ``split`` (train/val/test). ``mimic_all.csv`` maps each
``study_id`` to its ``dicom_id`` images and ``view``; images come from MIMIC-CXR-JPG at
``files/p<first 2 digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg`` under ``image_root``
(default: the dataset folder). A frontal view (PA, then AP) is picked per study.

Difference questions become pairs ``[reference, main]`` (the answer describes the main image
relative to the reference); other question types keep the main image only. The free-text answer
is kept as the target (a language loss). Where the answer's own template states a direction
(:func:`change_from_difference`: only added findings or raised levels -> worsened, only missing
findings or lowered levels -> improved, "nothing has changed" -> no change), a second sample
``<id>/choice`` carries that label (no question: the change template asks worsened / improved /
no change); ``change_choices=False`` leaves them out. An added finding is counted as worse whatever
it is (a new support device too): a label derived from the answer text, not a radiologist's.
``meta["patient"]`` is the MIMIC-CXR subject (``mimic-cxr/p<subject>``), the key the
cross-dataset patient check compares with MMXU.
"""

from __future__ import annotations

import re
from pathlib import Path

from medic_ad.data.adapters._common import BAD_ROW, read_csv, require_file
from medic_ad.data.errors import DatasetFormatError
from medic_ad.data.registry import LoadReport, register_dataset
from medic_ad.data.adapters.mmxu import mimic_patient
from medic_ad.data.schema import Change, Sample
from medic_ad.data.splits import canonical_split

NAME = "mimic_diff_vqa"
QUESTIONS_CSV = "mimic_pair_questions.csv"
STUDIES_CSV = "mimic_all.csv"
_VIEW_RANK = {"postero-anterior": 0, "pa": 0, "antero-posterior": 1, "ap": 1}
_LEVEL_RANK = {"trace": 0, "minimal": 0, "minimum": 0, "tiny": 0, "mild": 1, "small": 1, "moderate": 2,
               "medium": 2, "severe": 3, "large": 3, "extensive": 3}
_NOTHING = re.compile(r"^\s*nothing has changed\.?\s*$")
_ADDED = re.compile(r"\badditional findings? of\b")
_MISSING = re.compile(r"\bmissing the findings? of\b")
_LEVEL = re.compile(r"\blevel of .+? has changed from (\w+) to (\w+)")


def change_from_difference(answer: str) -> Change | None:
    """The direction a Medical-Diff-VQA difference answer states, None when mixed or unclear."""
    text = answer.strip().lower()
    if _NOTHING.match(text):
        return "no change"
    worse, better = bool(_ADDED.search(text)), bool(_MISSING.search(text))
    for before, after in _LEVEL.findall(text):
        if before not in _LEVEL_RANK or after not in _LEVEL_RANK:
            return None
        worse |= _LEVEL_RANK[after] > _LEVEL_RANK[before]
        better |= _LEVEL_RANK[after] < _LEVEL_RANK[before]
    if worse != better:
        return "worsened" if worse else "improved"
    return None


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
    change_choices: bool = True,
) -> list[Sample]:
    """MIMIC-Diff-VQA samples of ``question_types`` (None: all types), plus labelled change choices."""
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
        meta["patient"] = mimic_patient(subject) if subject else None
        sample = Sample(
            id=f"{NAME}/{i}",
            images=images,
            question=row["question"],
            answer=row["answer"],
            dataset=NAME,
            split=row_split,
            group=f"{NAME}/{subject}" if subject else None,
            meta=meta,
        )
        samples.append(sample)
        if qtype == "difference" and change_choices:
            change = change_from_difference(row["answer"])
            if change is None:
                report.note("difference answer states no single direction (no change choice)")
                continue
            samples.append(Sample(id=f"{sample.id}/choice", images=images, change=change, dataset=NAME,
                                  split=row_split, group=sample.group, meta=dict(meta)))
    return samples
