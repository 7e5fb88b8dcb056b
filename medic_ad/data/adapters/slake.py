"""SLAKE (Liu et al. 2021, "SLAKE: A Semantically-Labeled Knowledge-Enhanced Dataset for Medical VQA").

``Slake1.0/{train,validate,test}.json``: lists of ``{"img_id", "img_name": "xmlab102/source.jpg",
"question", "answer", "q_lang": "en"|"zh", "location", "modality", "answer_type":
"OPEN"|"CLOSED", "base_type", "content_type", "triple", "qid"}``; images under ``imgs/``.
Only English questions are kept by default (``lang="en"``; ``lang=None`` keeps both). The archive
unpacks into ``Slake1.0/``: ``root`` may be that folder or the one holding it.
"""

from __future__ import annotations

from pathlib import Path

from medic_ad.data.adapters._common import peek, read_vqa_records, require_file
from medic_ad.data.registry import LoadReport, register_dataset
from medic_ad.data.schema import Sample

NAME = "slake"
SPLIT_FILES = {"train": "train.json", "val": "validate.json", "test": "test.json"}
UNPACKED = "Slake1.0"


def _base(root: Path) -> Path:
    return root / UNPACKED if _score(root) == 0.0 and _score(root / UNPACKED) > 0.0 else root


def detect(root: Path) -> float:
    """1.0 when a SLAKE split file (records with q_lang) is present, in ``root`` or ``root/Slake1.0``."""
    return _score(_base(root))


def _score(root: Path) -> float:
    for file in SPLIT_FILES.values():
        if (root / file).is_file() and '"q_lang"' in peek(root / file, 4096):
            return 1.0 if (root / "imgs").is_dir() else 0.4
    return 0.0


@register_dataset(
    NAME,
    detect=detect,
    description="SLAKE: {train,validate,test}.json (img_name, question, answer, q_lang) with imgs/",
)
def load(root: Path, *, split: str | None, report: LoadReport, lang: str | None = "en") -> list[Sample]:
    """SLAKE samples in language ``lang``; organ location and modality go into ``meta``."""
    root = _base(root)
    samples = []
    for split_name, file in SPLIT_FILES.items():
        path = root / file
        if not path.is_file() or (split is not None and split != split_name):
            continue
        for i, rec, name, question, answer in read_vqa_records(path, "img_name", report):
            if lang is not None and rec.get("q_lang") != lang:
                report.note(f"question not in language {lang!r}")
                continue
            image = root / "imgs" / name
            if not require_file(image, report):
                continue
            answer_type = str(rec.get("answer_type") or "").strip().lower()
            samples.append(
                Sample(
                    id=f"{NAME}/{rec.get('qid', f'{split_name}/{i}')}",
                    images=[image],
                    question=question,
                    answer=answer,
                    dataset=NAME,
                    split=split_name,
                    group=f"{NAME}/{Path(name).parent.as_posix()}",
                    meta={
                        "answer_type": answer_type if answer_type in ("open", "closed") else None,
                        "content_type": rec.get("content_type"),
                        "modality": rec.get("modality"),
                        "body_part": rec.get("location"),
                        "base_type": rec.get("base_type"),
                        "q_lang": rec.get("q_lang"),
                    },
                )
            )
    return samples
