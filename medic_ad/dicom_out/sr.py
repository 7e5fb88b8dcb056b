"""The study's result as a Comprehensive 3D SR: a TID 1500 Imaging Measurement Report.

Conventions (IHE AI Results, as MONAI Deploy's SR writer follows them):
- the observer is a device: the model, named with its version, its checkpoint digest as the device
  serial number and a device UID derived from that digest;
- one measurement group (TID 1501) holds the finding (its "Finding" row: SCT Abnormal / Normal), the score as DCM
  "Probability" (no units), the algorithm identification (TID 4019: name, version, the checkpoint
  digest as its parameter) and the key slice as the group's source image;
- the model's answer is free text, so it goes where TID 1500 allows TEXT: a "Qualitative
  Evaluations" container at the root, as an "Impression";
- VerificationFlag UNVERIFIED, CompletionFlag COMPLETE and "research use only" in SeriesDescription;
  the evidence lists every source instance, so the SR references the source series;
- no image library (TID 1600): its descriptors require attributes a projection radiograph often
  lacks (PatientOrientation), and the key slice is referenced by the measurement group anyway.
"""

from __future__ import annotations

from typing import Sequence

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from medic_ad.dicom_out.common import (MANUFACTURER, Algorithm, check_sources, derived_uid, object_identity,
                                       referenced_frames, series_description)
from medic_ad.studies.result import StudyResult

__all__ = ["ANSWER_CONCEPT", "QUALITATIVE_EVALUATIONS", "SCORE_CONCEPT", "answer_container", "build_sr", "observer"]

SCORE_CONCEPT = codes.DCM.Probability
ANSWER_CONCEPT = codes.DCM.Impression
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")


def _key_slice(result: StudyResult, sources: Sequence[pydicom.Dataset]) -> pydicom.Dataset:
    index = result.key_slice_index
    if index is None or not 0 <= index < len(sources):
        raise ValueError(f"key slice index {index} is outside the series' {len(sources)} slices")
    key = sources[index]
    if result.key_sop_uid is not None and key.SOPInstanceUID != result.key_sop_uid:
        raise ValueError(f"slice {index} of the series is not the result's key SOP instance {result.key_sop_uid}")
    return key


def observer(algorithm: Algorithm) -> tuple[hd.sr.AlgorithmIdentification, hd.sr.ObservationContext]:
    """The model as the SR's algorithm (name, version, checkpoint digest) and as its device observer."""
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name, version=algorithm.version, parameters=[f"checkpoint {algorithm.checkpoint_digest}"],
        manufacturer=MANUFACTURER,
    )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid(algorithm, "device", "observer"),
        name=algorithm.name,
        manufacturer_name=MANUFACTURER,
        model_name=algorithm.label,
        serial_number=algorithm.checkpoint_digest,
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(observer_type=codes.DCM.Device,
                                                      observer_identifying_attributes=device),
    )
    return algorithm_id, context


def answer_container(text: str) -> hd.sr.ContainerContentItem:
    """The model's words as an Impression inside a "Qualitative Evaluations" container."""
    evaluations = hd.sr.ContainerContentItem(name=QUALITATIVE_EVALUATIONS,
                                             relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    evaluations.ContentSequence = hd.sr.ContentSequence([hd.sr.TextContentItem(
        name=ANSWER_CONCEPT, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)])
    return evaluations


def build_sr(result: StudyResult, sources: Sequence[pydicom.Dataset], algorithm: Algorithm, *,
             frames: Sequence[int | None] | None = None) -> hd.sr.Comprehensive3DSR:
    """The SR for ``result`` over its ordered source slices; patient and study modules come from them.

    ``frames``: per slice position, its frame number (1-based) in a multi-frame source, else None; a
    key slice that is a frame is referenced as the file's SOP instance and that ReferencedFrameNumber.
    """
    check_sources(sources, result.study_uid, result.series_uid)
    if result.status != "ok" or result.score is None or result.abnormal is None:
        raise ValueError(f"study {result.study_uid} has no finished result to report (status {result.status})")
    key = _key_slice(result, sources)
    if frames is not None and len(frames) != len(sources):
        raise ValueError(f"{len(frames)} frame numbers for a series of {len(sources)} slices")
    key_frame = frames[result.key_slice_index] if frames is not None else None

    algorithm_id, context = observer(algorithm)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(algorithm, result.series_uid, "finding"), identifier="MEDIC-AD study finding"),
        algorithm_id=algorithm_id,
        measurements=[hd.sr.Measurement(name=SCORE_CONCEPT, value=float(result.score), unit=codes.UCUM.NoUnits,
                                        algorithm_id=algorithm_id)],
        finding_type=codes.SCT.Abnormal if result.abnormal else codes.SCT.Normal,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(
            key, referenced_frame_numbers=referenced_frames(key, key_frame))],
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=[group],
    )
    if result.answer:
        report[0].ContentSequence.append(answer_container(result.answer))

    return hd.sr.Comprehensive3DSR(
        # a multi-frame file stands for several slice positions: each instance is evidence once
        evidence=list({str(ds.SOPInstanceUID): ds for ds in sources}.values()),
        content=report[0],
        **object_identity(algorithm, result.series_uid, "sr"),
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=series_description("SR"),
    )
