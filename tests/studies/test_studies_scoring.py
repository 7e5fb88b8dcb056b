"""Slice choice, windowing config, the study score (max / top-k mean) and the key slice."""

from __future__ import annotations

import numpy as np
import pytest

from study_builders import write_ct_series
from medic_ad.data.io.transforms import CT_WINDOWS, parse_window
from medic_ad.studies.dataset import SliceDataset, decode_slice
from medic_ad.studies.scoring import ScoreRule, parse_slices, pick_slices
from medic_ad.studies.series import group_files


def test_pick_slices_all_or_evenly_spaced():
    assert pick_slices(5, None) == [0, 1, 2, 3, 4]
    assert pick_slices(9, 3) == [0, 4, 8]
    assert pick_slices(10, 1) == [5]
    assert pick_slices(3, 10) == [0, 1, 2]
    assert parse_slices("all") is None and parse_slices("4") == 4
    for bad in ("0", "some", "-2"):
        with pytest.raises(ValueError, match="--slices"):
            parse_slices(bad)


def test_windows_by_name_and_centre_width():
    assert parse_window("brain") == (0.0, 80.0)
    assert parse_window("lung") == (-1350.0, 150.0)
    assert parse_window("Abdomen") == (-160.0, 240.0)
    assert parse_window("40/80") == parse_window("brain")
    assert set(CT_WINDOWS) >= {"brain", "lung", "abdomen", "bone"}
    for bad in ("nope", "40", "40/0", "a/b"):
        with pytest.raises(ValueError, match="window"):
            parse_window(bad)


def test_window_config_changes_the_decoded_ct_slice(tmp_path):
    (series,), _ = group_files(write_ct_series(tmp_path / "s", n=2, lesion=()).files)
    ref = series.slices[0]
    own = decode_slice(series, ref, None).pixels.mean()  # the header's 40/400: 0 HU ≈ 0.4
    lung = decode_slice(series, ref, parse_window("lung")).pixels.mean()  # 0 HU ≈ 0.9
    brain = decode_slice(series, ref, parse_window("brain")).pixels.mean()  # 0 HU is the bottom: ≈ 0
    assert 0.35 < own < 0.45 and 0.85 < lung < 0.95 and brain < 0.1


def test_dataset_items_follow_picks_and_report_bad_slices(tmp_path):
    built = write_ct_series(tmp_path / "s", n=4)
    (series,), _ = group_files(built.files)
    built.files[2].write_bytes(built.files[2].read_bytes()[:-3000])  # truncate one slice's pixels
    bad_pos = built.sop_uids.index(series.slices[2].sop_uid)
    ds = SliceDataset([series], [[0, bad_pos]])
    ok, bad = ds[0], ds[1]
    assert ok.image is not None and ok.image.pixels.shape == (64, 64) and ok.error is None
    assert bad.image is None and bad.error.startswith(f"slice {bad_pos}:") and "truncated" in bad.error


def test_score_rules_and_key_slice():
    scores = [0.1, 0.9, 0.5, 0.7]
    assert ScoreRule.parse("max").apply(scores) == (0.9, 1)
    s, key = ScoreRule.parse("topk_mean:2").apply(scores)
    assert s == pytest.approx(0.8) and key == 1
    assert ScoreRule.parse("topk_mean:10").apply(scores)[0] == pytest.approx(np.mean(scores))
    assert str(ScoreRule.parse("topk_mean:3")) == "topk_mean:3"
    for bad in ("mean", "topk_mean", "topk_mean:0", "topk_mean:x"):
        with pytest.raises(ValueError, match="--score"):
            ScoreRule.parse(bad)


@pytest.mark.parametrize("n, batch_size, workers", [(7, 3, 1), (6, 3, 1), (2, 3, 1), (7, 3, 0)])
def test_decoded_batches_match_the_plain_loader(tmp_path, n, batch_size, workers):
    """The first batch decoded here and the workers' shutdown moved off the path change nothing the
    caller sees: the same items in the same order, in the same batches."""
    from medic_ad.studies.dataset import decoded_batches, slice_loader

    (series,), _ = group_files(write_ct_series(tmp_path / "s", n=n, lesion=(1,)).files)
    ds = SliceDataset([series], [list(range(n))])
    plain = list(slice_loader(ds, batch_size=batch_size, num_workers=0))
    got = list(decoded_batches(ds, batch_size=batch_size, num_workers=workers))
    assert [[(it.series, it.position) for it in b] for b in got] == \
        [[(it.series, it.position) for it in b] for b in plain]
    for a, b in zip((it for b in got for it in b), (it for b in plain for it in b)):
        assert np.array_equal(a.image.pixels, b.image.pixels)


def test_decoded_batches_stop_early_shuts_the_workers_down(tmp_path):
    import multiprocessing

    from medic_ad.studies.dataset import decoded_batches

    (series,), _ = group_files(write_ct_series(tmp_path / "s", n=8, lesion=()).files)
    ds = SliceDataset([series], [list(range(8))])
    batches = decoded_batches(ds, batch_size=2, num_workers=1)
    next(batches), next(batches)
    batches.close()  # as a job stopped after N studies leaves it
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]
