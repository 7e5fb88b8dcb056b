"""VQA-RAD (Lau et al. 2018, OSF 89kps): ``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/``.

Each record: ``{"qid", "image_name", "image_organ", "question", "answer", "answer_type":
"CLOSED"|"OPEN", "question_type", "phrase_type", ...}``. ``phrase_type`` ``test_freeform`` /
``test_para`` marks the test split, the rest is train. The MEVF re-release (``trainset.json`` /
``testset.json``, same record fields) also loads, its split taken from the file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medic_ad.data.adapters._common import peek, read_vqa_records, require_file
from medic_ad.data.registry import LoadReport, register_dataset
from medic_ad.data.schema import Sample

NAME = "vqa_rad"
PUBLIC_JSON = "VQA_RAD Dataset Public.json"
IMAGE_DIRS = ("VQA_RAD Image Folder", "images", "imgs")


def _annotation_files(root: Path) -> list[Path]:
    if (root / PUBLIC_JSON).is_file():
        return [root / PUBLIC_JSON]
    return sorted(p for p in root.glob("*.json") if '"image_name"' in peek(p, 4096))


def detect(root: Path) -> float:
    """1.0 with a VQA-RAD JSON (records with image_name) beside its image folder."""
    files = _annotation_files(root)
    if not files:
        return 0.0
    return 1.0 if any((root / d).is_dir() for d in IMAGE_DIRS) else 0.4


def _split_of(rec: dict[str, Any], file: Path) -> str | None:
    phrase = str(rec.get("phrase_type") or "").lower()
    if phrase:
        return "test" if phrase.startswith("test") else "train"
    stem = file.stem.lower()
    return "test" if stem.startswith("test") else "train" if stem.startswith("train") else None


def _answer_type(value: Any) -> str | None:
    text = str(value or "").strip().lower()
    return text if text in ("open", "closed") else None


@register_dataset(
    NAME,
    detect=detect,
    description="VQA-RAD: 'VQA_RAD Dataset Public.json' (image_name, question, answer, answer_type) "
    "with 'VQA_RAD Image Folder/'",
)
def load(root: Path, *, split: str | None, report: LoadReport) -> list[Sample]:
    """VQA-RAD question/answer samples; ``meta["answer_type"]`` is ``"open"``/``"closed"``."""
    image_dir = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), root)
    samples = []
    for file in _annotation_files(root):
        for i, rec, name, question, answer in read_vqa_records(file, "image_name", report):
            row_split = _split_of(rec, file)
            if split is not None and row_split != split:
                continue
            image = image_dir / name
            if not require_file(image, report):
                continue
            qid = rec.get("qid", f"{file.stem}/{i}")
            samples.append(
                Sample(
                    id=f"{NAME}/{qid}",
                    images=[image],
                    question=question,
                    answer=answer,
                    dataset=NAME,
                    split=row_split,
                    group=f"{NAME}/{name}",
                    meta={
                        "answer_type": _answer_type(rec.get("answer_type")),
                        "question_type": rec.get("question_type"),
                        "organ": rec.get("image_organ"),
                    },
                )
            )
    return samples
