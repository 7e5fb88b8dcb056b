"""PathVQA (He et al. 2020, arXiv 2003.10286), from JSON or JSON lines - never pickle.

The original release stores ``qas/{split}/{split}_qa.pkl``: a list of ``{"image": "train_0422",
"question", "answer"}`` with images at ``images/{split}/{image}.jpg``. Pickle can run code, so
this adapter reads the same records from JSON instead: ``qas/{split}/{split}_qa.json`` (or
``.jsonl``), or ``{split}.json`` / ``{split}.jsonl`` at the root. ``image`` may carry its extension
and a folder. Yes/no answers are ``closed``, all others ``open`` (the PathVQA convention).
See ``docs/data.md`` for a one-off conversion from the pickles or the Hugging Face parquet files.
The release unpacks into ``pvqa/``: ``root`` may be that folder or the one holding it.
"""

from __future__ import annotations

from pathlib import Path

from medic_ad.data.adapters._common import peek, read_vqa_records, require_file
from medic_ad.data.registry import LoadReport, register_dataset
from medic_ad.data.schema import Sample

NAME = "pathvqa"
SPLITS = ("train", "val", "test")
UNPACKED = "pvqa"


def _base(root: Path) -> Path:
    if not any(_split_file(root, s) for s in SPLITS) and any(_split_file(root / UNPACKED, s) for s in SPLITS):
        return root / UNPACKED
    return root


def _split_file(root: Path, split: str) -> Path | None:
    for rel in (
        f"qas/{split}/{split}_qa.json",
        f"qas/{split}/{split}_qa.jsonl",
        f"{split}.json",
        f"{split}.jsonl",
    ):
        path = root / rel
        if path.is_file() and '"image"' in peek(path, 4096):
            return path
    return None


def detect(root: Path) -> float:
    """1.0 with PathVQA-style JSON records (image, question, answer) and an images/ folder (in root or root/pvqa)."""
    root = _base(root)
    if not any(_split_file(root, s) for s in SPLITS):
        return 0.0
    return 1.0 if (root / "images").is_dir() else 0.4


def _image_path(root: Path, split: str, image: str) -> Path:
    rel = Path(image)
    names = [rel] if rel.suffix else [rel.with_suffix(".jpg"), rel.with_suffix(".png")]
    for name in names:
        for base in (root / "images" / split, root / "images", root):
            if (base / name).is_file():
                return base / name
    return root / "images" / split / names[0]


@register_dataset(
    NAME,
    detect=detect,
    description="PathVQA as JSON/JSONL: qas/{split}/{split}_qa.json or {split}.json (image, question, "
    "answer) with images/{split}/",
)
def load(root: Path, *, split: str | None, report: LoadReport) -> list[Sample]:
    """PathVQA question/answer samples; ``meta["answer_type"]`` is ``"closed"`` for yes/no."""
    root = _base(root)
    samples = []
    for split_name in SPLITS:
        file = _split_file(root, split_name)
        if file is None or (split is not None and split != split_name):
            continue
        for i, rec, image, question, answer in read_vqa_records(file, "image", report):
            path = _image_path(root, split_name, image)
            if not require_file(path, report):
                continue
            samples.append(
                Sample(
                    id=f"{NAME}/{split_name}/{rec.get('question_id', rec.get('qid', i))}",
                    images=[path],
                    question=question,
                    answer=answer,
                    dataset=NAME,
                    split=split_name,
                    group=f"{NAME}/{Path(image).stem}",
                    meta={"answer_type": "closed" if answer.lower() in ("yes", "no") else "open"},
                )
            )
    return samples
