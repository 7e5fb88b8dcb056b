"""Grouping by UID, ordering by position, multi-frame and NIfTI volumes."""

from __future__ import annotations

import shutil

import pytest

from study_builders import corrupt_dicom, write_ct_series, write_multiframe_ct, write_nifti_volume
from medic_ad.studies.inputs import expand_inputs
from medic_ad.studies.series import group_files


def test_groups_by_uid_not_by_name_or_folder(tmp_path):
    a = write_ct_series(tmp_path / "a", n=4, seed=1)
    b = write_ct_series(tmp_path / "b", n=3, seed=2, study_uid=a.study_uid)  # a second series of study a
    c = write_ct_series(tmp_path / "c", n=2, seed=3)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    # every file in one folder, names that sort against the series (and so against slice order)
    for i, p in enumerate(sorted(a.files + b.files + c.files, key=lambda p: p.name)[::-1]):
        shutil.copy(p, mixed / f"IMG{i:04d}")
    _, found = expand_inputs([mixed])
    series, failed = group_files(found)
    assert not failed
    got = {(s.study_uid, s.series_uid): [r.sop_uid for r in s.slices] for s in series}
    assert got == {(x.study_uid, x.series_uid): x.sop_uids for x in (a, b, c)}
    assert [s.key for s in series] == sorted(got)


def test_orders_by_position_on_the_normal_not_instance_number(tmp_path):
    built = write_ct_series(tmp_path / "s", n=6, seed=5)
    (series,), _ = group_files(built.files[::-1])
    assert [r.sop_uid for r in series.slices] == built.sop_uids
    assert [r.position for r in series.slices] == sorted(r.position for r in series.slices)
    assert series.order_reason is None
    numbers = [r.instance_number for r in series.slices]
    assert numbers != sorted(numbers)  # the builder shuffles them: position decided


def test_falls_back_to_instance_number_and_says_why(tmp_path):
    built = write_ct_series(tmp_path / "s", n=4, positions=False)
    (series,), _ = group_files(built.files[::-1])
    assert [r.instance_number for r in series.slices] == [1, 2, 3, 4]
    assert "InstanceNumber" in series.order_reason and "ImagePositionPatient" in series.order_reason


def test_multiframe_is_one_series_of_frames(tmp_path):
    built = write_multiframe_ct(tmp_path / "mf.dcm", n_frames=5)
    (series,), failed = group_files([built.files[0]])
    assert not failed and series.key == (built.study_uid, built.series_uid)
    assert series.n_slices == 5 and [r.index for r in series.slices] == [0, 1, 2, 3, 4]
    assert {r.sop_uid for r in series.slices} == {built.sop_uids[0]}


@pytest.mark.parametrize("flip_z", [False, True])
def test_nifti_volume_is_a_series_with_content_derived_uids(tmp_path, flip_z):
    path = tmp_path / "vol.nii.gz"
    write_nifti_volume(path, n=5, flip_z=flip_z)
    (series,), _ = group_files([path])
    assert series.kind == "nifti" and series.n_slices == 5
    assert series.study_uid.startswith("2.25.") and series.study_uid != series.series_uid
    assert [r.position for r in series.slices] == sorted(r.position for r in series.slices)  # inferior first
    copy = tmp_path / "renamed.nii.gz"
    shutil.copy(path, copy)
    (again,), _ = group_files([copy])
    assert again.key == series.key  # the content names it, not the file name


def test_corrupt_and_unknown_files_are_failed_rows(tmp_path):
    bad = corrupt_dicom(tmp_path / "bad.dcm")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello, not an image")
    series, failed = group_files([bad, junk])
    assert not series and len(failed) == 2
    assert all(r.status == "failed" and r.n_slices == 0 and r.study_uid.startswith("2.25.") for r in failed)
    reasons = " | ".join(r.reason for r in failed)
    assert "corrupt DICOM header" in reasons and "not a DICOM, NIfTI or image file" in reasons


def test_manifest_csv_paths_relative_to_it(tmp_path):
    built = write_ct_series(tmp_path / "data", n=3)
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label\n" + "".join(f"data/{p.name},x\n" for p in built.files))
    named, found = expand_inputs([manifest])
    assert not named and sorted(found) == sorted(tmp_path / "data" / p.name for p in built.files)
    (tmp_path / "nopath.csv").write_text("file\nx\n")
    with pytest.raises(ValueError, match="'path' column"):
        expand_inputs([tmp_path / "nopath.csv"])
