"""The UI's handlers (what the browser triggers) on real studies, refusals and redraws; the Blocks build."""

from __future__ import annotations

import numpy as np

from medic_ad.serve.ui import (analyse_series, build_ui, compare_studies, detect_study, redraw_comparison,
                                redraw_overlay, show_slice)


def test_detect_study_shows_answer_score_and_overlay(service, br35h) -> None:
    md, label, picture, state = detect_study(service, br35h[0].read_bytes(), alpha=0.5)
    assert md.startswith("### Answer: ") and "P(abnormal)" in md
    assert set(label) == {"abnormal", "normal"} and abs(sum(label.values()) - 1) < 1e-6
    assert picture.ndim == 3 and picture.dtype == np.uint8
    faint, strong = redraw_overlay(state, 0.0), redraw_overlay(state, 1.0)
    assert faint.shape == strong.shape == picture.shape and not np.array_equal(faint, strong)
    assert redraw_overlay(None, 0.5) is None


def test_refusals_are_readable(service, bad_corpus) -> None:
    folder, expected = bad_corpus
    for name in ("blank.png", "page_renamed.png", "strip_1x2000.png", "truncated.dcm"):
        md, label, picture, state = detect_study(service, (folder / name).read_bytes())
        assert md.startswith("### Refused") and f"`{expected[name]}`" in md
        assert label is None and picture is None and state is None
        assert str(folder) not in md
    md, *_ = detect_study(service, None)
    assert "no file uploaded" in md


def test_compare_studies_and_pair_refusal(service, cxr_pair, bad_pairs) -> None:
    prior, current = cxr_pair
    md, probs, picture, state = compare_studies(service, prior.read_bytes(), current.read_bytes(), "right lung")
    assert md.startswith("### Answer: ") and "Change map" in md
    assert set(probs) == {"worsened", "improved", "no change"}
    assert picture.shape[1] > 2 * picture.shape[0]
    assert redraw_comparison(state, 0.9).shape == picture.shape
    ct, mr, reason = bad_pairs["ct_vs_mr"]
    md, probs, picture, _ = compare_studies(service, ct.read_bytes(), mr.read_bytes())
    assert "Refused" in md and reason in md and picture is None


def test_analyse_series_and_scroll(service, ct_study) -> None:
    built, zip_path = ct_study
    md, slider, picture, caption, state = analyse_series(service, [zip_path.read_bytes()], "all", "", 0.5)
    assert md.startswith("### Answer: ") and "Study score" in md and "Key slice" in md
    row = state.to_dict()  # what POST /v1/study answers: the tab shows its study score and series UID
    assert row["series_uid"] == built.series_uid and row["study_uid"] == built.study_uid
    assert f"**Series UID** `{row['series_uid']}`" in md and f"**Study UID** `{row['study_uid']}`" in md
    assert f"**score** `{row['score']}`" in md and f"**{row['score']:.3f}**" in md
    key = state.key
    assert slider["visible"] and (slider["minimum"], slider["maximum"], slider["value"]) == (0, 4, key)
    assert "key slice" in caption and f"slice {state.result.key_slice_index} " in caption
    other = (key + 1) % 5
    moved, moved_caption = show_slice(state, other, 0.5)
    assert moved.shape == picture.shape and moved_caption != caption and "key slice" not in moved_caption
    faint, _ = show_slice(state, key, 0.0)
    assert not np.array_equal(faint, picture)  # a redraw at another opacity, no model call
    assert show_slice(None, 0, 0.5) == (None, "")
    # the files of the series, and two evenly spaced slices of it
    md2, slider2, *_ , state2 = analyse_series(service, [p.read_bytes() for p in built.files], "2", "brain", 0.5)
    assert state2.result.slice_indices == [0, 4] and slider2["maximum"] == 1


def test_series_refusals_are_readable(service, ct_study, tmp_path) -> None:
    from study_builders import write_ct_series

    built, _ = ct_study
    other = write_ct_series(tmp_path / "o", n=2, seed=9)
    md, slider, picture, caption, state = analyse_series(service, [built.files[0].read_bytes(),
                                                                   other.files[0].read_bytes()])
    assert md.startswith("### Refused") and "2 studies" in md and "`mixed_studies`" in md
    assert not slider["visible"] and picture is None and state is None and caption == ""
    md, *_ = analyse_series(service, None)
    assert "no files uploaded" in md
    md, *_ = analyse_series(service, [built.files[0].read_bytes()], "none")
    assert "`bad_option`" in md


def test_build_ui(service) -> None:
    demo = build_ui(service)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"study-file", "detect-button", "detect-answer", "opacity", "overlay", "prior-file", "current-file",
            "compare-button", "sidebyside", "series-files", "series-button", "series-answer", "series-slider",
            "series-caption", "series-opacity", "series-overlay"} <= ids
