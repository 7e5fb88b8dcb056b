"""The SR, Parametric Map and Secondary Capture built from a small CT series, read back."""

from __future__ import annotations

import copy

import highdicom as hd
import numpy as np
import pydicom
import pytest
from ct_series import MODEL
from pydicom.sr.codedict import codes
from pydicom.uid import ComprehensiveSRStorage, ParametricMapStorage, SecondaryCaptureImageStorage

from medic_ad.dicom_out import Algorithm, build_heatmap_object, build_overlay_capture, build_sr
from medic_ad.dicom_out.heatmap import heatmap_frames
from medic_ad.dicom_out.sr import ANSWER_CONCEPT
from medic_ad.serve.overlay import resize_map

ALGORITHM = Algorithm(MODEL["model_name"], MODEL["model_version"], MODEL["checkpoint_digest"])

# Patient and General Study module attributes the source carries
PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                 "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName")


def _reread(ds, tmp_path, name):
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def _texts(item) -> list[str]:
    """Every TEXT/UIDREF value in an SR content tree."""
    out = []
    for child in item.get("ContentSequence", []):
        if "TextValue" in child:
            out.append(str(child.TextValue))
        if "UID" in child:
            out.append(str(child.UID))
        out.extend(_texts(child))
    return out


def test_sr_reports_answer_score_key_slice_and_model(ct_series, study_result, tmp_path):
    path = _reread(build_sr(study_result, ct_series, ALGORITHM), tmp_path, "sr.dcm")
    sr = hd.sr.srread(path)

    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.SOPClassUID != ComprehensiveSRStorage
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.CompletionFlag == "COMPLETE"
    assert "research use only" in sr.SeriesDescription.lower()
    assert sr.Modality == "SR"

    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 1
    (score,) = groups[0].get_measurements(name=codes.DCM.Probability)
    assert score.value == pytest.approx(0.83)
    assert groups[0].finding_type == codes.SCT.Abnormal
    (key_ref,) = groups[0].source_images
    assert key_ref.referenced_sop_instance_uid == ct_series[2].SOPInstanceUID
    assert key_ref.referenced_sop_class_uid == ct_series[2].SOPClassUID

    texts = _texts(sr)
    assert study_result.answer in texts
    assert MODEL["model_name"] in texts and MODEL["model_version"] in texts
    assert any(MODEL["checkpoint_digest"] in t for t in texts)  # algorithm parameter and device serial
    assert sr.content.get_observer_contexts(observer_type=codes.DCM.Device)

    answers = [c for c in sr.ContentSequence if c.ConceptNameCodeSequence[0].CodeMeaning == "Qualitative Evaluations"]
    assert answers[0].ContentSequence[0].ConceptNameCodeSequence[0].CodeValue == ANSWER_CONCEPT.value

    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    (series,) = evidence.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == study_result.series_uid
    assert {r.ReferencedSOPInstanceUID for r in series.ReferencedSOPSequence} == {d.SOPInstanceUID for d in ct_series}


def test_sr_normal_study_without_answer(ct_series, study_result, tmp_path):
    study_result.abnormal, study_result.score, study_result.answer = False, 0.05, None
    sr = hd.sr.srread(_reread(build_sr(study_result, ct_series, ALGORITHM), tmp_path, "sr.dcm"))
    assert sr.content.get_image_measurement_groups()[0].finding_type == codes.SCT.Normal


def test_parametric_map_references_source_and_holds_heatmap(ct_series, study_result, tmp_path):
    path = _reread(build_heatmap_object(study_result, ct_series, ALGORITHM), tmp_path, "pm.dcm")
    pm = pydicom.dcmread(path)
    assert pm.SOPClassUID == ParametricMapStorage
    assert "research use only" in pm.SeriesDescription.lower()
    assert pm.StudyInstanceUID == study_result.study_uid
    (series,) = pm.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == study_result.series_uid
    assert int(pm.NumberOfFrames) == len(study_result.slice_indices)
    assert (pm.Rows, pm.Columns) == (ct_series[0].Rows, ct_series[0].Columns)
    assert pm.pixel_array.dtype == np.float32

    by_sop = {ct_series[i].SOPInstanceUID: (i, h) for i, h in zip(study_result.slice_indices, study_result.heatmaps)}
    for frame, groups in zip(pm.pixel_array, pm.PerFrameFunctionalGroupsSequence):
        sop = groups.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        index, heat = by_sop.pop(sop)
        expected = resize_map(heat, (pm.Rows, pm.Columns))
        np.testing.assert_allclose(frame, np.clip(expected, 0, 1), atol=1e-6)
        position = [float(v) for v in groups.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx([float(v) for v in ct_series[index].ImagePositionPatient])
        # the peak stays where the model put it, in the source's matrix
        peak = np.unravel_index(np.argmax(frame), frame.shape)
        small = np.unravel_index(np.argmax(heat), heat.shape)
        assert np.allclose(np.array(peak) / pm.Rows, np.array(small) / heat.shape[0], atol=0.1)
    assert not by_sop

    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    first, last = mapping.DoubleFloatRealWorldValueFirstValueMapped, mapping.DoubleFloatRealWorldValueLastValueMapped
    assert (first, last) == (0, 1)
    assert (mapping.RealWorldValueSlope, mapping.RealWorldValueIntercept) == (1, 0)
    assert hd.pm.ParametricMap.from_dataset(pm).SOPInstanceUID == pm.SOPInstanceUID


def test_heatmap_shape_must_match_scored_slices(ct_series, study_result):
    study_result.heatmaps = study_result.heatmaps[:2]
    with pytest.raises(ValueError, match="3 scored slices"):
        heatmap_frames(study_result, ct_series)


def test_overlay_capture_of_key_slice(ct_series, study_result, tmp_path):
    sc = pydicom.dcmread(_reread(build_overlay_capture(study_result, ct_series, ALGORITHM), tmp_path, "sc.dcm"))
    assert sc.SOPClassUID == SecondaryCaptureImageStorage
    assert sc.PhotometricInterpretation == "RGB"
    assert sc.pixel_array.shape == (ct_series[2].Rows, ct_series[2].Columns, 3)
    assert sc.BurnedInAnnotation == "NO"
    assert "research use only" in sc.SeriesDescription.lower()
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == ct_series[2].SOPInstanceUID
    assert sc.pixel_array.std() > 0


@pytest.mark.parametrize("builder", [build_sr, build_heatmap_object, build_overlay_capture])
def test_patient_and_study_modules_equal_the_source(builder, ct_series, study_result, tmp_path):
    ds = pydicom.dcmread(_reread(builder(study_result, ct_series, ALGORITHM), tmp_path, "obj.dcm"))
    for keyword in PATIENT_STUDY:
        assert ds.get(keyword) == ct_series[0].get(keyword), keyword
    assert ds.SeriesInstanceUID != study_result.series_uid
    assert ds.SOPInstanceUID not in {d.SOPInstanceUID for d in ct_series}


def test_uids_are_stable_for_one_checkpoint(ct_series, study_result):
    first = build_sr(study_result, ct_series, ALGORITHM)
    again = build_sr(study_result, ct_series, ALGORITHM)
    other = build_sr(study_result, ct_series, Algorithm("medic-ad-tiny", "0.1.0", "sha256:other"))
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    assert other.SOPInstanceUID != first.SOPInstanceUID


def test_builders_refuse_inconsistent_input(ct_series, study_result):
    wrong_key = ct_series[3].SOPInstanceUID
    study_result.key_sop_uid = wrong_key
    with pytest.raises(ValueError, match="key SOP instance"):
        build_sr(study_result, ct_series, ALGORITHM)
    study_result.key_sop_uid = ct_series[2].SOPInstanceUID
    with pytest.raises(ValueError, match="not in the result's study"):
        build_sr(study_result, ct_series[:2] + [_other_series(ct_series[2])], ALGORITHM)
    study_result.status, study_result.score = "failed", None
    with pytest.raises(ValueError, match="no finished result"):
        build_sr(study_result, ct_series, ALGORITHM)


def _other_series(ds):
    other = copy.deepcopy(ds)
    other.SeriesInstanceUID = pydicom.uid.generate_uid()
    return other
