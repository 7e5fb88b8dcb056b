"""Same-patient chest X-ray pairs (Cohen et al. COVID-19 image data collection): ``pairs.csv``.

Columns: ``patientid, prior, current, prior_offset_days, current_offset_days, view, finding,
current_clinical_notes, image_license``. The pairs carry no change label. ``view``, ``finding``,
the day offsets and the licence go into ``Sample.meta``; the dataset's own anonymous ``patientid``
becomes the group. The free-text clinical notes (ages, sexes, histories) stay out unless
``include_notes=True``.

The dataset defines no split; this adapter gives one by patient (``val_share`` of the patients, chosen
by a digest of their ``patientid``, are ``val``), so that every pair and every image of one patient
sits on one side, and the same side on every machine. Some images appear under two ``patientid``
values (one person entered twice); patients that share an image are one patient for the split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from medic_ad.data.adapters._common import BAD_ROW, csv_header, read_csv, require_file, resolve
from medic_ad.data.registry import LoadReport, register_dataset
from medic_ad.data.schema import Sample

PAIRS_CSV = "pairs.csv"
NAME = "cxr_pairs"


def detect(root: Path) -> float:
    """1.0 when pairs.csv has prior and current columns."""
    cols = {c.lower() for c in csv_header(root / PAIRS_CSV)} if (root / PAIRS_CSV).is_file() else set()
    return 1.0 if {"prior", "current"} <= cols else 0.0


def _days(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def patient_split(patient: str, val_share: float) -> str:
    """``"val"`` for ``val_share`` of the patient ids (by digest), else ``"train"``."""
    digest = int(hashlib.sha1(f"{NAME}/{patient}".encode()).hexdigest()[:8], 16)
    return "val" if digest / 16**8 < val_share else "train"


def _same_person(samples: list[Sample]) -> list[str]:
    """For each sample, the smallest ``patientid`` among the patients linked to it by shared images."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    owner: dict[Path, str] = {}
    for sample in samples:
        group = sample.group or sample.id
        for image in sample.images:
            other = owner.setdefault(Path(image), group)
            a, b = sorted((find(group), find(other)))
            parent[b] = a
    return [find(s.group or s.id).removeprefix(f"{NAME}/") for s in samples]


@register_dataset(
    NAME,
    detect=detect,
    description="pairs.csv (patientid, prior, current, offsets, view, finding) with images/",
)
def load(
    root: Path, *, split: str | None, report: LoadReport, include_notes: bool = False,
    val_share: float = 0.25,
) -> list[Sample]:
    """Prior/current pairs, prior first; ``id`` is ``cxr_pairs/<row number>``; split by patient."""
    _, rows = read_csv(root / PAIRS_CSV)
    samples = []
    for i, row in enumerate(rows):
        report.rows += 1
        if not row.get("prior") or not row.get("current"):
            report.skip(BAD_ROW, f"{root / PAIRS_CSV}: row {i + 2}")
            continue
        prior, current = resolve(root, row["prior"]), resolve(root, row["current"])
        if not (require_file(prior, report) and require_file(current, report)):
            continue
        meta = {
            "view": row.get("view") or None,
            "finding": row.get("finding") or None,
            "prior_offset_days": _days(row.get("prior_offset_days", "")),
            "current_offset_days": _days(row.get("current_offset_days", "")),
            "image_license": row.get("image_license") or None,
        }
        if include_notes:
            meta["clinical_notes"] = row.get("current_clinical_notes") or None
        patient = row.get("patientid", "") or f"row{i}"
        samples.append(
            Sample(
                id=f"{NAME}/{i}",
                images=[prior, current],
                dataset=NAME,
                group=f"{NAME}/{patient}",
                meta=meta,
            )
        )
    for sample, person in zip(samples, _same_person(samples)):
        sample.split = patient_split(person, val_share)
    return samples
