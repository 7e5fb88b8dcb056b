"""``medic-ad predict`` end to end: rows, options, volumes, explain, resume, failures, privacy, the tiny model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from study_builders import PHI, corrupt_dicom, write_ct_series, write_multiframe_ct, write_nifti_volume
from medic_ad.studies.job import PredictConfig, predict_studies
from medic_ad.studies.result import JSONL_FIELDS
from medic_ad.studies.series import group_files


@pytest.fixture
def predict(capsys):
    """``predict(*argv)`` → (exit code, stdout, stderr) of ``medic-ad predict`` on the dummy model, no workers."""
    from medic_ad.cli.main import main

    def run(*argv, model: tuple[str, ...] = ("--model-type", "dummy")) -> tuple[int, str, str]:
        code = main(["predict", *map(str, argv), *model, "--num-workers", "0", "--no-progress"])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _rows(out: Path, name: str = "studies") -> list[dict]:
    return [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]


def test_folder_of_three_studies(predict, archive, tmp_path):
    root, built = archive
    code, _, err = predict(root, "--out", tmp_path / "out")
    assert code == 0, err
    rows = _rows(tmp_path / "out")
    assert [tuple(r) for r in rows] == [JSONL_FIELDS] * 3
    assert [(r["study_uid"], r["series_uid"]) for r in rows] == sorted((b.study_uid, b.series_uid) for b in built)
    by_series = {r["series_uid"]: r for r in rows}
    for b in built:
        r = by_series[b.series_uid]
        assert r["status"] == "ok" and r["n_slices"] == b.n and r["reason"] is None
        assert r["abnormal"] == bool(b.lesion)
        if b.lesion:
            assert r["key_slice_index"] in b.lesion and 0.65 < r["score"] < 0.75
        assert r["key_sop_uid"] == b.sop_uids[r["key_slice_index"]]
    assert not (tmp_path / "out" / "parts").exists()
    assert "3 studies written" in err


def test_slices_and_score_options(predict, archive, tmp_path):
    root, built = archive
    assert predict(root, "--out", tmp_path / "o", "--slices", "2", "--score", "topk_mean:2")[0] == 0
    by_series = {r["series_uid"]: r for r in _rows(tmp_path / "o")}
    b = built[1]  # 5 slices, lesion at 1-3: slices 0 and 4 are chosen, both clear
    r = by_series[b.series_uid]
    assert r["key_slice_index"] in (0, 4) and r["score"] < 0.5 and not r["abnormal"]
    code, _, err = predict(root, "--out", tmp_path / "o2", "--score", "mean")
    assert code == 2 and "--score" in err


def test_multiframe_and_nifti_volumes_with_a_window(predict, tmp_path):
    mf = write_multiframe_ct(tmp_path / "in" / "mf.dcm", n_frames=5, lesion=(3,))
    write_nifti_volume(tmp_path / "in" / "up.nii.gz", n=5, lesion=(1,))
    write_nifti_volume(tmp_path / "in" / "down.nii.gz", n=6, lesion=(4,), flip_z=True)
    assert predict(tmp_path / "in", "--out", tmp_path / "o", "--window", "abdomen")[0] == 0
    rows = _rows(tmp_path / "o")
    by_n = {r["n_slices"]: r for r in rows if r["series_uid"] != mf.series_uid}
    mf_row = next(r for r in rows if r["series_uid"] == mf.series_uid)
    assert mf_row["key_slice_index"] == 3 and mf_row["key_sop_uid"] == mf.sop_uids[0] and mf_row["abnormal"]
    assert by_n[5]["key_slice_index"] == 1 and by_n[6]["key_slice_index"] == 4
    assert by_n[5]["key_sop_uid"] is None and by_n[5]["study_uid"].startswith("2.25.")


def test_explain_gives_a_heatmap_volume(archive, tmp_path, dummy):
    root, built = archive
    series, failed = group_files(built[0].files)
    config = PredictConfig(explain=True, slices=3, progress=False)
    summary = predict_studies(dummy, series, failed, tmp_path / "o", config, keep_results=True)
    (result,) = summary.results
    assert result.slice_indices == [0, 2, 4] and len(result.slice_scores) == 3
    h = result.heatmaps
    assert h.shape == (3, 64, 64) and h.dtype.name == "float32" and 0.0 <= h.min() and h.max() <= 1.0


def test_workers_give_the_same_rows(predict, archive, tmp_path):
    from medic_ad.cli.main import main

    root, _ = archive
    assert predict(root, "--out", tmp_path / "a")[0] == 0
    assert main(["predict", str(root), "--out", str(tmp_path / "b"), "--model-type", "dummy", "--num-workers", "2",
                 "--no-progress", "--batch-size", "3"]) == 0
    assert (tmp_path / "a" / "studies.jsonl").read_text() == (tmp_path / "b" / "studies.jsonl").read_text()


def test_killed_run_resumes_to_the_same_output(predict, archive, tmp_path):
    root, _ = archive
    assert predict(root, "--out", tmp_path / "full")[0] == 0
    out = tmp_path / "killed"
    assert predict(root, "--out", out, "--stop-after", "1")[0] == 0  # dies after its first study
    part = next((out / "parts").glob("studies.rank0-of-1.jsonl"))
    assert len(part.read_text().splitlines()) == 1 and not (out / "studies.jsonl").exists()
    with open(part, "a") as fh:
        fh.write('{"study_uid": "1.2.3", "series_ui')  # a line torn by the kill
    code, _, err = predict(root, "--out", out)
    assert code == 0 and "2 studies written" in err and "1 already done" in err
    assert (out / "studies.jsonl").read_text() == (tmp_path / "full" / "studies.jsonl").read_text()
    code, _, err = predict(root, "--out", out)  # a finished job: nothing to do, same file
    assert code == 0 and "0 studies written" in err and "3 already done" in err
    assert (out / "studies.jsonl").read_text() == (tmp_path / "full" / "studies.jsonl").read_text()


def test_corrupt_files_become_failed_rows_or_one_error(predict, archive, tmp_path):
    root, built = archive
    corrupt_dicom(root / "broken.dcm")
    truncated = built[2].files[0]
    truncated.write_bytes(truncated.read_bytes()[:-2000])
    code, out, err = predict(root, "--out", tmp_path / "o")
    assert code == 0 and "Traceback" not in err
    rows = _rows(tmp_path / "o")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 4 and len(failed) == 2
    assert any("broken.dcm: corrupt DICOM header" in r["reason"] for r in failed)
    assert any(r["series_uid"] == built[2].series_uid and "truncated" in r["reason"] for r in failed)
    code, out, err = predict(corrupt_dicom(tmp_path / "named.dcm"), "--out", tmp_path / "o3")
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("medic-ad: error: ") and "named.dcm" in lines[0]
    assert not (tmp_path / "o3").exists()


def test_no_patient_field_leaves_the_dicom_files(predict, tmp_path, caplog):
    from medic_ad.cli.main import main

    a = write_ct_series(tmp_path / "in" / "a", n=3, phi=True, patient_id=PHI["PatientID"], study_date="20200101")
    write_ct_series(tmp_path / "in" / "b", n=3, phi=True, patient_id=PHI["PatientID"], study_date="20210101", seed=4)
    a.files[1].write_bytes(a.files[1].read_bytes()[:-1000])  # a failure message too
    caplog.set_level(logging.DEBUG)
    code = main(["-v", "predict", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--model-type", "dummy",
                 "--num-workers", "0", "--compare"])
    assert code == 0
    from_cli = predict(tmp_path / "in", "--out", tmp_path / "o2", "--prior", a.study_uid, "--current", "9.9")
    texts = [caplog.text, *(str(r.args) for r in caplog.records), *from_cli[1:]]
    texts += [p.read_text(errors="replace") for p in (tmp_path / "o").rglob("*") if p.is_file()
              and p.suffix != ".dcm"]
    assert len(texts) > 4
    for secret in PHI.values():
        for variant in (secret, secret.replace("^", " ")):
            assert not any(variant in t for t in texts), secret
    assert (tmp_path / "o" / "comparisons.jsonl").is_file()


def test_tiny_checkpoint_end_to_end(archive, tmp_path, tiny_checkpoint, capsys):
    from medic_ad.cli.main import main

    root, built = archive
    code = main(["predict", str(root), "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint),
                 "--slices", "2", "--batch-size", "4", "--num-workers", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rows = _rows(tmp_path / "o")
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    assert all(0.0 <= r["score"] <= 1.0 and r["abnormal"] == (r["score"] >= 0.5) for r in rows)
    assert all(r["key_slice_index"] in (0, r["n_slices"] - 1) for r in rows)
