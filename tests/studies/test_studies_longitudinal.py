"""Prior and current paired by StudyDate per patient, the key region compared, both studies referenced."""

from __future__ import annotations

import json

from study_builders import write_ct_series
from medic_ad.studies.longitudinal import matching_slice, pair_by_date, pair_named
from medic_ad.studies.series import group_files


def test_pairs_each_patients_studies_in_date_order(tmp_path):
    files = []
    built = {}
    for name, pid, date in (("p1_2024", "A", "20240101"), ("p1_2022", "A", "20220101"), ("p1_2023", "A", "20230101"),
                            ("p2", "B", "20240101")):
        built[name] = write_ct_series(tmp_path / name, n=3, patient_id=pid, study_date=date, seed=len(built))
        files += built[name].files
    series, _ = group_files(files)
    pairs = {(p.prior.study_uid, p.current.study_uid) for p in pair_by_date(series)}
    assert pairs == {(built["p1_2022"].study_uid, built["p1_2023"].study_uid),
                     (built["p1_2023"].study_uid, built["p1_2024"].study_uid)}
    named = pair_named(series, built["p2"].study_uid, built["p1_2022"].study_uid)
    assert named.prior.study_uid == built["p2"].study_uid


def test_prior_slice_at_the_closest_table_position(tmp_path):
    prior = write_ct_series(tmp_path / "a", n=6, z0=-100.0, study_date="20200101")   # z -100 … -75
    current = write_ct_series(tmp_path / "b", n=4, z0=-90.0, study_date="20210101")  # z -90 … -75
    series, _ = group_files(prior.files + current.files)
    p, c = sorted(series, key=lambda s: s.study_date)
    assert matching_slice(p, c, 0) == (2, None)  # -90 mm
    assert matching_slice(p, c, 3) == (5, None)


def test_predict_compare_writes_rows_referencing_both_studies(tmp_path, capsys):
    from medic_ad.cli.main import main

    prior = write_ct_series(tmp_path / "in" / "a", n=4, lesion=(), patient_id="P", study_date="20200101", seed=1)
    current = write_ct_series(tmp_path / "in" / "b", n=4, lesion=(2,), patient_id="P", study_date="20210101", seed=2)
    argv = ["predict", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--model-type", "dummy",
            "--num-workers", "0", "--no-progress", "--compare"]
    assert main(argv) == 0, capsys.readouterr().err
    (row,) = [json.loads(x) for x in (tmp_path / "o" / "comparisons.jsonl").read_text().splitlines()]
    assert (row["prior_study_uid"], row["prior_series_uid"]) == (prior.study_uid, prior.series_uid)
    assert (row["current_study_uid"], row["current_series_uid"]) == (current.study_uid, current.series_uid)
    assert row["current_slice_index"] == 2 and row["prior_slice_index"] == 2
    assert row["status"] == "ok" and row["label"] == "worsened" and abs(sum(row["probs"].values()) - 1) < 1e-5
    assert main(argv) == 0  # a rerun keeps one row per pair
    assert len((tmp_path / "o" / "comparisons.jsonl").read_text().splitlines()) == 1
