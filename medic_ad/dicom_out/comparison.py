"""A longitudinal comparison as a Comprehensive 3D SR in the current study: the change, its probabilities,
and both studies' compared slices.

One ``comparisons.jsonl`` row becomes one TID 1500 report with one measurement group (TID 1501):
- the finding is the change (SCT Worsening / Improving / No status change), also as a qualitative
  evaluation "Change since prior";
- one "Probability" measurement per label, each named by a local code (``99MEDICAD``) since DCM
  has no concept for "probability of worsening";
- the group's source images are the current study's key slice and the prior's matching slice, so a
  viewer can open the two slices that were compared;
- the evidence is both series: the current series in CurrentRequestedProcedureEvidenceSequence, the
  prior study's in PertinentOtherEvidenceSequence (highdicom splits evidence by study).
The patient and study modules come from the current series; identifiers and the algorithm follow
the study SR (``sr.py``), and the UIDs are derived from both series, so a rerun replaces the object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from medic_ad.dicom_out.common import (Algorithm, check_sources, derived_uid, object_identity, referenced_frames,
                                       series_description)
from medic_ad.dicom_out.sr import answer_container, observer

__all__ = ["CHANGE_CODES", "CHANGE_CONCEPT", "PROBABILITY_CODES", "build_comparison_sr", "comparison_path"]

CHANGE_CONCEPT = Code("CHANGE", "99MEDICAD", "Change since prior study")
#: the model's change labels as SNOMED CT findings
CHANGE_CODES = {
    "worsened": Code("230993007", "SCT", "Worsening"),
    "improved": Code("385425000", "SCT", "Improving"),
    "no change": Code("260388006", "SCT", "No status change"),
}
PROBABILITY_CODES = {label: Code(f"P-{label.upper().replace(' ', '-')}", "99MEDICAD", f"Probability of {label}")
                     for label in CHANGE_CODES}
REFERENCE_KEYS = ("current_study_uid", "current_series_uid", "prior_study_uid", "prior_series_uid",
                  "current_slice_index", "prior_slice_index")


def comparison_path(out_dir: Path, row: dict[str, Any]) -> Path:
    """``out_dir/<current study>/<current series>.comparison.<prior series>.dcm``."""
    return (Path(out_dir) / str(row["current_study_uid"])
            / f"{row['current_series_uid']}.comparison.{row['prior_series_uid']}.dcm")


def _slice(sources: Sequence[pydicom.Dataset], index: Any, role: str) -> pydicom.Dataset:
    if not isinstance(index, int) or not 0 <= index < len(sources):
        raise ValueError(f"the {role} slice index {index} is outside the {role} series' {len(sources)} slices")
    return sources[index]


def _frame(frames: Sequence[int | None] | None, index: int, n: int) -> int | None:
    """The frame number of slice ``index`` when it is a frame of a multi-frame file, else None."""
    if frames is None:
        return None
    if len(frames) != n:
        raise ValueError(f"{len(frames)} frame numbers for a series of {n} slices")
    return frames[index]


def build_comparison_sr(row: dict[str, Any], current: Sequence[pydicom.Dataset], prior: Sequence[pydicom.Dataset],
                        algorithm: Algorithm, *, current_frames: Sequence[int | None] | None = None,
                        prior_frames: Sequence[int | None] | None = None) -> hd.sr.Comprehensive3DSR:
    """The SR of one ``ok`` comparison row over the current and prior series (each ordered as the row counts).

    ``current_frames`` / ``prior_frames``: per slice position, its frame number (1-based) in a
    multi-frame source, else None; a compared slice that is a frame is referenced with its frame number.
    """
    missing = [k for k in REFERENCE_KEYS if row.get(k) is None]
    if missing:
        raise ValueError(f"comparison row lacks {', '.join(missing)}")
    if row.get("status") != "ok" or row.get("label") not in CHANGE_CODES:
        raise ValueError(f"comparison row has no result to report (status {row.get('status')}, "
                         f"label {row.get('label')})")
    check_sources(current, row["current_study_uid"], row["current_series_uid"])
    check_sources(prior, row["prior_study_uid"], row["prior_series_uid"])
    if row["prior_study_uid"] == row["current_study_uid"]:
        raise ValueError("the prior and the current are the same study")
    current_key = _slice(current, row["current_slice_index"], "current")
    prior_key = _slice(prior, row["prior_slice_index"], "prior")
    pair_uid = f"{row['current_series_uid']}/{row['prior_series_uid']}"
    label = row["label"]
    probs = {k: float(v) for k, v in (row.get("probs") or {}).items() if k in PROBABILITY_CODES}

    algorithm_id, context = observer(algorithm)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(algorithm, pair_uid, "comparison-finding"),
                                                     identifier="MEDIC-AD comparison with prior study"),
        algorithm_id=algorithm_id,
        finding_type=CHANGE_CODES[label],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(CHANGE_CONCEPT, CHANGE_CODES[label])],
        measurements=[hd.sr.Measurement(name=PROBABILITY_CODES[k], value=v, unit=codes.UCUM.NoUnits,
                                        algorithm_id=algorithm_id) for k, v in probs.items()],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(
            ds, referenced_frame_numbers=referenced_frames(ds, _frame(frames, row[key], len(sources))))
            for ds, frames, key, sources in ((current_key, current_frames, "current_slice_index", current),
                                             (prior_key, prior_frames, "prior_slice_index", prior))],
    )
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.SCT.ImagingProcedure,
                                     imaging_measurements=[group])
    summary = f"{label} since the prior study " + ", ".join(f"P({k}) {v:.3f}" for k, v in probs.items())
    report[0].ContentSequence.append(answer_container(summary))

    return hd.sr.Comprehensive3DSR(
        # current first: the SR's patient and study modules come from evidence[0]; a multi-frame file once
        evidence=list({str(ds.SOPInstanceUID): ds for ds in [*current, *prior]}.values()),
        content=report[0],
        **object_identity(algorithm, pair_uid, "comparison"),
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=series_description("comparison SR"),
    )
