"""``medic-ad predict --out DIR`` writes the DICOM objects through the seam: read back, resumed, comparison SR."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import ParametricMapStorage, SecondaryCaptureImageStorage

from study_builders import write_ct_series, write_nifti_volume

pytest.importorskip("medic_ad.dicom_out")


@pytest.fixture
def predict(capsys):
    from medic_ad.cli.main import main

    def run(*argv) -> tuple[int, str]:
        code = main(["predict", *map(str, argv), "--model-type", "dummy", "--num-workers", "0", "--no-progress"])
        return code, capsys.readouterr().err

    return run


def _rows(out: Path, name: str = "studies") -> dict[str, dict]:
    """Rows by (current) study UID."""
    rows = map(json.loads, (out / f"{name}.jsonl").read_text().splitlines())
    return {r.get("study_uid", r.get("current_study_uid")): r for r in rows}


def _objects(out: Path) -> dict[str, float]:
    """Every file under DIR/dicom with its modification time."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted((out / "dicom").rglob("*")) if p.is_file()}


def test_predict_writes_sr_heatmap_and_overlay_and_a_rerun_keeps_them(predict, tmp_path):
    built = write_ct_series(tmp_path / "in", n=5, lesion=(1, 3))
    out = tmp_path / "o"
    code, err = predict(tmp_path / "in", "--out", out, "--explain", "--overlay")
    assert code == 0, err
    row = _rows(out)[built.study_uid]
    assert row["status"] == "ok"
    folder = out / "dicom" / built.study_uid
    assert sorted(p.name for p in folder.iterdir()) == [f"{built.series_uid}.{k}.dcm"
                                                        for k in ("heatmap", "overlay", "sr")]

    sr = hd.sr.srread(folder / f"{built.series_uid}.sr.dcm")
    (group,) = sr.content.get_image_measurement_groups()
    (score,) = group.get_measurements(name=codes.DCM.Probability)
    assert score.value == pytest.approx(row["score"], abs=1e-6)
    assert group.finding_type == (codes.SCT.Abnormal if row["abnormal"] else codes.SCT.Normal)
    (key,) = group.source_images
    assert key.referenced_sop_instance_uid == row["key_sop_uid"] == built.sop_uids[row["key_slice_index"]]
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == built.series_uid

    pm = pydicom.dcmread(folder / f"{built.series_uid}.heatmap.dcm")
    assert pm.SOPClassUID == ParametricMapStorage
    assert [s.SeriesInstanceUID for s in pm.ReferencedSeriesSequence] == [built.series_uid]
    assert int(pm.NumberOfFrames) == 5
    sc = pydicom.dcmread(folder / f"{built.series_uid}.overlay.dcm")
    assert sc.SOPClassUID == SecondaryCaptureImageStorage
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == row["key_sop_uid"]

    before = _objects(out)
    code, err = predict(tmp_path / "in", "--out", out, "--explain", "--overlay")
    assert code == 0 and "1 already done" in err
    assert _objects(out) == before  # skipped: not rewritten, not duplicated
    assert len(_rows(out)) == 1


def test_without_explain_only_the_sr(predict, tmp_path):
    built = write_ct_series(tmp_path / "in", n=3)
    assert predict(tmp_path / "in", "--out", tmp_path / "o")[0] == 0
    assert list(_objects(tmp_path / "o")) == [f"dicom/{built.study_uid}/{built.series_uid}.sr.dcm"]


def test_overlay_needs_explain(predict, tmp_path):
    write_ct_series(tmp_path / "in", n=3)
    code, err = predict(tmp_path / "in", "--out", tmp_path / "o", "--overlay")
    assert code == 2 and "--explain" in err


def test_radiograph_and_nifti_are_one_log_line_each(predict, tmp_path, caplog):
    radiograph = write_ct_series(tmp_path / "in" / "dx", n=1)
    for path in radiograph.files:  # a projection image: no frame of reference
        ds = pydicom.dcmread(path)
        del ds.FrameOfReferenceUID
        ds.save_as(path, enforce_file_format=True)
    write_nifti_volume(tmp_path / "in" / "vol.nii.gz")
    caplog.set_level(logging.INFO, logger="medic_ad")
    code, err = predict(tmp_path / "in", "--out", tmp_path / "o", "--explain")
    assert code == 0, err
    rows = _rows(tmp_path / "o")
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows.values())
    assert list(_objects(tmp_path / "o")) == [f"dicom/{radiograph.study_uid}/{radiograph.series_uid}.sr.dcm"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("no heatmap Parametric Map" in m and "Frame of Reference" in m for m in messages) == 1
    assert sum("no DICOM objects for a NIfTI input" in m for m in messages) == 1


def test_comparison_sr_references_both_studies(predict, tmp_path):
    prior = write_ct_series(tmp_path / "in" / "a", n=4, lesion=(1,), patient_id="PA", study_date="20230101", seed=1)
    current = write_ct_series(tmp_path / "in" / "b", n=4, lesion=(1, 2, 3), patient_id="PA", study_date="20240101",
                              seed=2)
    out = tmp_path / "o"
    code, err = predict(tmp_path / "in", "--out", out, "--compare")
    assert code == 0, err
    (row,) = _rows(out, "comparisons").values()
    assert row["status"] == "ok" and row["prior_study_uid"] == prior.study_uid
    path = out / "dicom" / current.study_uid / f"{current.series_uid}.comparison.{prior.series_uid}.dcm"
    sr = hd.sr.srread(path)
    assert sr.StudyInstanceUID == current.study_uid and sr.VerificationFlag == "UNVERIFIED"
    assert "research use only" in sr.SeriesDescription

    from medic_ad.dicom_out.comparison import CHANGE_CODES, PROBABILITY_CODES

    (group,) = sr.content.get_image_measurement_groups()
    assert group.finding_type == CHANGE_CODES[row["label"]]
    for label, p in row["probs"].items():
        (m,) = group.get_measurements(name=PROBABILITY_CODES[label])
        assert m.value == pytest.approx(p, abs=1e-6)
    refs = [s.referenced_sop_instance_uid for s in group.source_images]
    assert refs == [current.sop_uids[row["current_slice_index"]], prior.sop_uids[row["prior_slice_index"]]]
    (now,) = sr.CurrentRequestedProcedureEvidenceSequence
    (other,) = sr.PertinentOtherEvidenceSequence
    assert (now.StudyInstanceUID, now.ReferencedSeriesSequence[0].SeriesInstanceUID) == (current.study_uid,
                                                                                           current.series_uid)
    assert (other.StudyInstanceUID, other.ReferencedSeriesSequence[0].SeriesInstanceUID) == (prior.study_uid,
                                                                                             prior.series_uid)
    before = _objects(out)
    assert predict(tmp_path / "in", "--out", out, "--compare")[0] == 0
    assert _objects(out) == before


def _testdata(name: str) -> Path:
    """A multi-frame file of pydicom's test data (pydicom-data's copy when that package is installed)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom's test file {name} is not installed")
    return Path(path)


@pytest.mark.parametrize("slices", ["all", "1"])
def test_multiframe_source_objects_reference_its_frames(predict, tmp_path, slices):
    """An enhanced CT (one file, two frames with per-frame positions): the SR's key slice is the file's
    SOP instance with its frame number, and each Parametric Map frame derives from its source frame."""
    import shutil

    source = pydicom.dcmread(_testdata("eCT_Supplemental.dcm"))
    (tmp_path / "in").mkdir()
    shutil.copy(_testdata("eCT_Supplemental.dcm"), tmp_path / "in" / "ect.dcm")
    out = tmp_path / "o"
    code, err = predict(tmp_path / "in", "--out", out, "--explain", "--overlay", "--slices", slices)
    assert code == 0, err
    row = _rows(out)[source.StudyInstanceUID]
    assert row["status"] == "ok" and row["n_slices"] == 2 and row["key_sop_uid"] == source.SOPInstanceUID
    # the frame at each position of the series, as the job orders them (along the slice normal)
    from medic_ad.studies.series import group_files

    (series,), _ = group_files([tmp_path / "in" / "ect.dcm"])
    frame_at = [ref.index + 1 for ref in series.slices]
    assert sorted(frame_at) == [1, 2]
    scored = [0, 1] if slices == "all" else [1]
    folder = out / "dicom" / source.StudyInstanceUID
    sr = hd.sr.srread(folder / f"{source.SeriesInstanceUID}.sr.dcm")
    (group,) = sr.content.get_image_measurement_groups()
    (key,) = group.source_images
    assert key.referenced_sop_instance_uid == source.SOPInstanceUID
    assert key.referenced_frame_numbers == [frame_at[row["key_slice_index"]]]
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    (instance,) = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence  # the file once, not per frame
    assert instance.ReferencedSOPInstanceUID == source.SOPInstanceUID

    pm = pydicom.dcmread(folder / f"{source.SeriesInstanceUID}.heatmap.dcm")
    assert pm.SOPClassUID == ParametricMapStorage and int(pm.NumberOfFrames) == len(scored)
    assert pm.FrameOfReferenceUID == source.FrameOfReferenceUID
    referenced = []
    for frame in pm.PerFrameFunctionalGroupsSequence:  # highdicom orders the frames by position
        (ref,) = frame.DerivationImageSequence[0].SourceImageSequence
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        number = int(ref.ReferencedFrameNumber)
        referenced.append(number)
        # the map's frame lies where its source frame does
        assert list(frame.PlanePositionSequence[0].ImagePositionPatient) == \
            list(source.PerFrameFunctionalGroupsSequence[number - 1].PlanePositionSequence[0].ImagePositionPatient)
    assert sorted(referenced) == sorted(frame_at[p] for p in scored)
    sc = pydicom.dcmread(folder / f"{source.SeriesInstanceUID}.overlay.dcm")
    (ref,) = sc.SourceImageSequence
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert int(ref.ReferencedFrameNumber) == frame_at[row["key_slice_index"]]


def test_multiframe_without_frame_positions_gets_its_sr(predict, tmp_path, caplog):
    """A multi-frame MR that states no per-frame positions: the SR references the key frame; no map (one line)."""
    import shutil

    source = pydicom.dcmread(_testdata("emri_small.dcm"))
    (tmp_path / "in").mkdir()
    shutil.copy(_testdata("emri_small.dcm"), tmp_path / "in" / "mr.dcm")
    caplog.set_level(logging.INFO, logger="medic_ad")
    code, err = predict(tmp_path / "in", "--out", tmp_path / "o", "--explain")
    assert code == 0, err
    row = _rows(tmp_path / "o")[source.StudyInstanceUID]
    assert row["status"] == "ok" and row["n_slices"] == int(source.NumberOfFrames)
    folder = tmp_path / "o" / "dicom" / source.StudyInstanceUID
    assert sorted(p.name for p in folder.iterdir()) == [f"{source.SeriesInstanceUID}.sr.dcm"]
    (group,) = hd.sr.srread(folder / f"{source.SeriesInstanceUID}.sr.dcm").content.get_image_measurement_groups()
    (key,) = group.source_images
    assert key.referenced_sop_instance_uid == source.SOPInstanceUID
    assert key.referenced_frame_numbers == [row["key_slice_index"] + 1]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("no heatmap Parametric Map" in m and "plane position for frame" in m for m in messages) == 1


def test_multiframe_map_frames_keep_their_heatmaps():
    """Each Parametric Map frame holds the heatmap of the source frame it references (highdicom reorders them)."""
    import numpy as np

    from medic_ad.dicom_out.common import Algorithm
    from medic_ad.dicom_out.heatmap import build_heatmap_object
    from medic_ad.studies.dicom_objects import _source_slices
    from medic_ad.studies.result import StudyResult
    from medic_ad.studies.series import group_files

    (series,), _ = group_files([_testdata("eCT_Supplemental.dcm")])
    sources, frames = _source_slices(series)
    assert sorted(frames) == [1, 2] and len({id(ds) for ds in sources}) == 1  # one header for both frames
    values = [0.2, 0.8]  # by series position
    result = StudyResult(series.study_uid, series.series_uid, 2, score=0.8, abnormal=True, key_slice_index=1,
                         key_sop_uid=series.slices[1].sop_uid, answer="Yes.", slice_indices=[0, 1],
                         slice_scores=[0.2, 0.8], status="ok",
                         heatmaps=np.stack([np.full((8, 8), v, np.float32) for v in values]))
    pm = build_heatmap_object(result, sources, Algorithm("m", "1", "d"), frames=frames)
    for pixels, frame in zip(pm.pixel_array, pm.PerFrameFunctionalGroupsSequence):
        number = int(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
        assert float(pixels.mean()) == pytest.approx(values[frames.index(number)], abs=1e-5)


def test_comparison_sr_of_multiframe_studies_references_the_frames(predict, tmp_path):
    """Two enhanced CT studies of one patient (copies of pydicom's eCT_Supplemental.dcm): the comparison SR
    references each compared slice as its file's SOP instance and frame."""
    from pydicom.uid import generate_uid

    from medic_ad.studies.series import group_files

    (tmp_path / "in").mkdir()
    built = {}
    for name, date in (("prior", "20230101"), ("current", "20240101")):
        ds = pydicom.dcmread(_testdata("eCT_Supplemental.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID, ds.StudyDate = "PM", date
        ds.save_as(tmp_path / "in" / f"{name}.dcm", enforce_file_format=True)
        built[name] = ds
    out = tmp_path / "o"
    code, err = predict(tmp_path / "in", "--out", out, "--compare")
    assert code == 0, err
    assert all(r["status"] == "ok" for r in _rows(out).values())
    (row,) = _rows(out, "comparisons").values()
    assert row["status"] == "ok"
    current, prior = built["current"], built["prior"]
    path = out / "dicom" / current.StudyInstanceUID / \
        f"{current.SeriesInstanceUID}.comparison.{prior.SeriesInstanceUID}.dcm"
    (group,) = hd.sr.srread(path).content.get_image_measurement_groups()
    frame_at = {}
    for name in ("current", "prior"):
        (series,), _ = group_files([tmp_path / "in" / f"{name}.dcm"])
        frame_at[name] = [ref.index + 1 for ref in series.slices]
    refs = [(s.referenced_sop_instance_uid, s.referenced_frame_numbers) for s in group.source_images]
    assert refs == [(current.SOPInstanceUID, [frame_at["current"][row["current_slice_index"]]]),
                    (prior.SOPInstanceUID, [frame_at["prior"][row["prior_slice_index"]]])]


def test_legacy_multiframe_file_is_referenced_whole(predict, tmp_path):
    """A CT Image Storage file carrying NumberOfFrames (an IOD without frames): its objects are written and
    reference the instance, without a frame number (which its IOD cannot have)."""
    from study_builders import write_multiframe_ct

    built = write_multiframe_ct(tmp_path / "in" / "mf.dcm", n_frames=4, lesion=(2,))
    out = tmp_path / "o"
    code, err = predict(tmp_path / "in", "--out", out, "--explain", "--overlay")
    assert code == 0, err
    row = _rows(out)[built.study_uid]
    assert row["status"] == "ok", row
    folder = out / "dicom" / built.study_uid
    (group,) = hd.sr.srread(folder / f"{built.series_uid}.sr.dcm").content.get_image_measurement_groups()
    (key,) = group.source_images
    assert key.referenced_sop_instance_uid == built.sop_uids[0] and not key.referenced_frame_numbers
    sc = pydicom.dcmread(folder / f"{built.series_uid}.overlay.dcm")
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == built.sop_uids[0]
    assert "ReferencedFrameNumber" not in sc.SourceImageSequence[0]
    assert not (folder / f"{built.series_uid}.heatmap.dcm").exists()  # its frames state no positions
