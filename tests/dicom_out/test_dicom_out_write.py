"""write_study_objects: the seam medic-ad predict calls; whole files only."""

from __future__ import annotations

import os

import pydicom
import pytest
from ct_series import MODEL

from medic_ad.dicom_out import object_path, write_study_objects
from medic_ad.dicom_out import write as write_module


def test_writes_sr_heatmap_and_overlay(ct_series, study_result, tmp_path):
    paths = write_study_objects(study_result, ct_series, tmp_path, heatmaps=True, overlay=True, **MODEL)
    kinds = ["sr", "heatmap", "overlay"]
    assert paths == [object_path(tmp_path, study_result.study_uid, study_result.series_uid, k) for k in kinds]
    modalities = [pydicom.dcmread(p).Modality for p in paths]
    assert modalities[0] == "SR"
    assert sorted(os.listdir(paths[0].parent)) == sorted(p.name for p in paths)  # no temporary file left


def test_sr_only_without_heatmaps(ct_series, study_result, tmp_path):
    study_result.heatmaps = None
    (path,) = write_study_objects(study_result, ct_series, tmp_path, heatmaps=False, **MODEL)
    assert path.name.endswith(".sr.dcm")


def test_a_rerun_replaces_the_same_objects(ct_series, study_result, tmp_path):
    first = write_study_objects(study_result, ct_series, tmp_path, heatmaps=True, **MODEL)
    uids = [pydicom.dcmread(p).SOPInstanceUID for p in first]
    again = write_study_objects(study_result, ct_series, tmp_path, heatmaps=True, **MODEL)
    assert again == first
    assert [pydicom.dcmread(p).SOPInstanceUID for p in again] == uids


def test_nothing_is_written_when_an_object_cannot_be_built(ct_series, study_result, tmp_path):
    study_result.heatmaps = study_result.heatmaps[:1]
    with pytest.raises(ValueError):
        write_study_objects(study_result, ct_series, tmp_path, heatmaps=True, **MODEL)
    assert not any(tmp_path.rglob("*"))


def test_a_failed_write_leaves_no_partial_file(ct_series, study_result, tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(write_module.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_study_objects(study_result, ct_series, tmp_path, heatmaps=True, **MODEL)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_projection_image_gets_sr_and_overlay_but_no_parametric_map(ct_series, study_result, tmp_path):
    """A radiograph has no Frame of Reference: the Parametric Map is refused by name, the rest is written."""
    for ds in ct_series:
        for keyword in ("FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient", "SliceLocation"):
            delattr(ds, keyword)
        ds.Modality = "DX"
    with pytest.raises(ValueError, match="no Frame of Reference"):
        write_study_objects(study_result, ct_series, tmp_path, heatmaps=True, **MODEL)
    paths = write_study_objects(study_result, ct_series, tmp_path, heatmaps=False, overlay=True, **MODEL)
    assert [p.name.split(".")[-2] for p in paths] == ["sr", "overlay"]
