"""Same-patient chest X-ray pairs (Cohen et al. COVID-19 image data collection): ``pairs.csv``.

Columns: ``patientid, prior, current, prior_offset_days, current_offset_days, view, finding,
current_clinical_notes, image_license``. The pairs carry no change label. ``view``, ``finding``,
the day offsets and the licence go into ``Sample.meta``; the dataset's own anonymous ``patientid``
becomes the group. The free-text clinical notes (ages, sexes, histories) stay out unless
``include_notes=True``.
"""

from __future__ import annotations

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


@register_dataset(
    NAME,
    detect=detect,
    description="pairs.csv (patientid, prior, current, offsets, view, finding) with images/",
)
def load(
    root: Path, *, split: str | None, report: LoadReport, include_notes: bool = False
) -> list[Sample]:
    """Prior/current pairs, prior first; ``id`` is ``cxr_pairs/<row number>``."""
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
        patient = row.get("patientid", "")
        samples.append(
            Sample(
                id=f"{NAME}/{i}",
                images=[prior, current],
                dataset=NAME,
                group=f"{NAME}/{patient}" if patient else None,
                meta=meta,
            )
        )
    return samples
