"""MMXU (Mu et al. ACL Findings 2025; huggingface.co/datasets/LinjieMu/MMXU).

``MMXU-test.jsonl`` as released holds records with exactly ``id``, ``content_type``, ``question``,
``options`` (letter -> text), ``answer`` (a letter), ``cur_image_path`` and ``prior_image_path`` (a
string). ``MMXU-dev.jsonl`` records may add ``related_region_name``, ``explanation``, reports and
region boxes, and give ``prior_image_path`` as a list (the first is used). A file is recognised by
its first record (``options``, ``answer``, ``cur_image_path``, ``prior_image_path``), so a folder
holding only the test file loads and a test file beside a dev file is never skipped.

Images are MIMIC-CXR-JPG paths (``files/p10/...``) under ``image_root`` (default: the dataset
folder). The change label is ``content_type`` (worsened / improved / no change, in the spellings
:func:`change_from_option` knows); where it states none, the text of the answer option is mapped
by keyword instead, and options that fit none keep ``change=None`` (both counted in the report's
notes). The radiology reports are restricted MIMIC text and are not kept. ``MMXU-dev`` is the
development/training split and gets ``split="train"``. ``meta["patient"]`` is the MIMIC-CXR
subject (``mimic-cxr/p<subject>``), the key the cross-dataset patient check compares.
"""

from __future__ import annotations

import re
from pathlib import Path

from medic_ad.data.adapters._common import BAD_ROW, peek, read_json_records, require_file, resolve
from medic_ad.data.registry import LoadReport, register_dataset
from medic_ad.data.schema import Change, Sample

NAME = "mmxu"
RECORD_KEYS = ("options", "answer", "cur_image_path", "prior_image_path")

_NO_CHANGE = re.compile(r"\bno (significant |interval )?change|\bunchanged|\bstable|\bsimilar|\bpersist")
_IMPROVED = re.compile(r"\bimprov|\bdecreas|\bresol|\breduc|\bsmaller|\bless\b|\bbetter|\bclear")
_WORSENED = re.compile(r"\bworse|\bincreas|\bprogress|\blarger|\benlarg|\bmore\b|\bnew\b|\bdeteriorat")


def change_from_option(text: str) -> Change | None:
    """The change label an option text states ("Worsened", "Slightly improved", ...), else None."""
    t = text.strip().lower()
    for pattern, change in ((_NO_CHANGE, "no change"), (_IMPROVED, "improved"), (_WORSENED, "worsened")):
        if pattern.search(t):
            return change  # type: ignore[return-value]
    return None


def _first_record(path: Path) -> str:
    return peek(path, 65536).split("\n", 1)[0]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*.jsonl") if all(f'"{k}"' in _first_record(p) for k in RECORD_KEYS))


def _split_of(file: Path) -> str | None:
    stem = file.stem.lower()
    if "test" in stem:
        return "test"
    if "dev" in stem or "train" in stem:
        return "train"
    return None


def detect(root: Path) -> float:
    """1.0 when an MMXU JSONL file (options, answer, cur/prior image paths) is present."""
    return 1.0 if _files(root) else 0.0


def mimic_patient(subject: str) -> str:
    """The cross-dataset patient key of a MIMIC-CXR subject id (``10000032`` or ``p10000032``)."""
    return f"mimic-cxr/p{subject.lstrip('p')}"


def _subject(path: str) -> str | None:
    match = re.search(r"(?:^|/)(p\d{6,})(?:/|$)", path)
    return match.group(1) if match else None


@register_dataset(
    NAME,
    detect=detect,
    description="MMXU: MMXU-{test,dev}.jsonl (question, options, answer letter, cur/prior image paths)",
)
def load(
    root: Path, *, split: str | None, report: LoadReport, image_root: str | Path | None = None
) -> list[Sample]:
    """MMXU multiple-choice pairs, prior first; ``answer`` is the option letter."""
    base = Path(image_root) if image_root else root
    samples = []
    for file in _files(root):
        file_split = _split_of(file)
        if split is not None and file_split != split:
            continue
        for i, rec in enumerate(read_json_records(file, report)):
            report.rows += 1
            sample = _sample(rec, base, file, i, file_split, report)
            if sample is not None:
                samples.append(sample)
    return samples


def _sample(
    rec: dict, base: Path, file: Path, i: int, split: str | None, report: LoadReport
) -> Sample | None:
    options, answer = rec.get("options"), rec.get("answer")
    cur, prior = rec.get("cur_image_path"), rec.get("prior_image_path")
    if isinstance(prior, list):
        prior = prior[0] if prior else None
    valid_options = isinstance(options, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in options.items()
    )
    if not (
        valid_options
        and isinstance(answer, str)
        and answer.strip() in options
        and isinstance(rec.get("question"), str)
        and isinstance(cur, str)
        and isinstance(prior, str)
    ):
        report.skip(BAD_ROW, f"{file}:{i + 1}")
        return None
    images = [resolve(base, prior), resolve(base, cur)]
    if not all(require_file(p, report) for p in images):
        return None
    letter = answer.strip()
    content_type = rec.get("content_type")
    change = change_from_option(content_type) if isinstance(content_type, str) else None
    if change is None:
        report.note("content_type states no change label: answer option text used")
        change = change_from_option(options[letter])
        if change is None:
            report.note("answer option not mappable to a change label")
    subject = _subject(cur)
    n_prior = len(rec["prior_image_path"]) if isinstance(rec.get("prior_image_path"), list) else 1
    return Sample(
        id=f"{NAME}/{rec.get('id', f'{file.stem}/{i}')}",
        images=images,
        question=rec["question"].strip(),
        answer=letter,
        options=dict(options),
        change=change,
        region=rec.get("related_region_name") or None,
        dataset=NAME,
        split=split,
        group=f"{NAME}/{subject}" if subject else None,
        meta={
            "patient": mimic_patient(subject) if subject else None,
            "content_type": content_type,
            "explanation": rec.get("explanation"),
            "n_prior_images": n_prior,
        },
    )
