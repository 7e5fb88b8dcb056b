"""Metric functions against hand-computed values, degenerate cases included."""

from __future__ import annotations

import numpy as np
import pytest

from medic_ad.eval.metrics import (
    change_metrics,
    choice_accuracy,
    detection_metrics,
    heatmap_histograms,
    pixel_metrics,
    pixel_metrics_from_histograms,
    roc_points,
    threshold_level,
    vqa_metrics,
)

A, N = "abnormal", "normal"


def test_detection_by_hand():
    m = detection_metrics([A, A, A, N, N], [True, False, None, True, False], [0.9, 0.4, None, 0.6, 0.1])
    # TP 1, FN 2 (one of them unparseable), FP 1, TN 1
    assert m["confusion"] == {"tp": 1, "fn": 2, "fp": 1, "tn": 1, "unparseable_abnormal": 1, "unparseable_normal": 0}
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(0.4)
    assert m["accuracy"] == pytest.approx(0.4)
    assert m["unparseable"] == 1 and m["n_scored"] == 4
    # scored: t = 1 1 0 0, s = .9 .4 .6 .1 → 3 of 4 pairs ordered
    assert m["auroc"] == pytest.approx(0.75)
    # thresholds: .9 → F1 .667, .6 → .5, .4 → .8, .1 → .667
    assert m["best_f1"] == pytest.approx(0.8) and m["best_threshold"] == pytest.approx(0.4)
    assert m["score_based"]["f1"] == pytest.approx(0.5)


def test_detection_unparseable_normal_is_a_false_positive():
    m = detection_metrics([N, N, A], [None, False, True])
    assert m["confusion"]["fp"] == 1 and m["confusion"]["unparseable_normal"] == 1
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == 1.0


def test_detection_string_predictions_match_booleans():
    a = detection_metrics([A, N, A], ["abnormal", "normal", None])
    b = detection_metrics([A, N, A], [True, False, None])
    assert {k: a[k] for k in ("precision", "recall", "f1")} == {k: b[k] for k in ("precision", "recall", "f1")}


def test_detection_one_class_only():
    m = detection_metrics([A, A, A], [True, True, False], [0.9, 0.8, 0.2])
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(2 / 3)
    assert m["auroc"] is None and m["best_threshold"] is None  # undefined with one class
    m = detection_metrics([N, N], [False, False], [0.1, 0.2])
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 1.0)
    assert roc_points([N, N], [0.1, 0.2]) == {"fpr": [], "tpr": []}


def test_detection_all_unparseable():
    m = detection_metrics([A, N, A, N], [None] * 4, [None] * 4)
    assert m["unparseable"] == 4 and m["f1"] == 0.0 and m["accuracy"] == 0.0
    assert m["auroc"] is None and m["score_based"] is None and m["n_scored"] == 0


def test_detection_bad_input():
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        detection_metrics([A, N], [True])
    with pytest.raises(ValueError, match="no samples"):
        detection_metrics([], [])
    with pytest.raises(ValueError, match="'abnormal' or 'normal'"):
        detection_metrics(["sick"], [True])


def test_roc_points_ends_and_size():
    rng = np.random.default_rng(0)
    t = [A if i % 2 else N for i in range(1000)]
    s = rng.random(1000).tolist()
    r = roc_points(t, s, max_points=50)
    assert len(r["fpr"]) <= 50 and r["fpr"][0] == 0.0 and r["tpr"][-1] == 1.0


def test_change_by_hand():
    m = change_metrics(["worsened", "worsened", "improved", "no change"], ["worsened", "improved", "improved", None])
    assert m["per_class"] == {"worsened": 0.5, "improved": 1.0, "no change": 0.0}
    assert m["accuracy"] == 0.5 and m["unparseable"] == 1 and m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["confusion"]["no change"]["unparseable"] == 1
    assert m["confusion"]["worsened"] == {"worsened": 1, "improved": 1, "no change": 0, "unparseable": 0}


def test_change_one_class_and_all_unparseable():
    m = change_metrics(["improved", "improved"], [None, None])
    assert m["per_class"] == {"worsened": None, "improved": 0.0, "no change": None}
    assert m["accuracy"] == 0.0 and m["unparseable"] == 2
    with pytest.raises(ValueError, match="change label"):
        change_metrics(["better"], ["improved"])
    assert choice_accuracy(["A", "B", "C"], ["A", None, "B"]) == {"n": 3, "accuracy": pytest.approx(1 / 3),
                                                                    "unparseable": 1}


def test_pixel_metrics_by_hand():
    mask = np.zeros((2, 4), np.uint8)
    mask[0, :2] = 1
    heat = np.array([[0.9, 0.6, 0.4, 0.1], [0.2, 0.7, 0.0, 0.0]], np.float32)
    m = pixel_metrics([heat], [mask])
    # pred ≥ .5: (0,0) (0,1) (1,1) → inter 2, union 3
    assert m["miou"] == pytest.approx(2 / 3)
    # positives .9 .6 vs negatives .4 .1 .2 .7 0 0: 11 of 12 pairs ordered
    assert m["auroc"] == pytest.approx(11 / 12)
    h = pixel_metrics_from_histograms(*map(lambda x: [x], heatmap_histograms(heat, mask)))
    assert h["miou"] == pytest.approx(2 / 3) and h["auroc"] == pytest.approx(11 / 12)
    assert h["dice"] == pytest.approx(2 * 2 / (2 + 3))


def test_empty_masks_protocol():
    empty = np.zeros((4, 4), np.uint8)
    # empty mask, empty prediction → IoU 1; empty mask, any prediction → IoU 0; no lesion anywhere → AUROC None
    m = pixel_metrics([np.zeros((4, 4)), np.full((4, 4), 0.9)], [empty, empty])
    assert m["miou"] == 0.5 and m["auroc"] is None and m["n_empty_masks"] == 2
    pos, neg = zip(heatmap_histograms(np.zeros((4, 4)), empty), heatmap_histograms(np.full((4, 4), 0.9), empty))
    h = pixel_metrics_from_histograms(pos, neg)
    assert h["miou"] == 0.5 and h["auroc"] is None and h["miou_lesion"] is None and h["n_empty_masks"] == 2


def test_histograms_match_the_exact_metrics():
    rng = np.random.default_rng(1)
    heats, masks = [], []
    for _ in range(5):
        m = np.zeros((32, 32), np.uint8)
        y, x = rng.integers(0, 20, 2)
        m[y:y + 10, x:x + 8] = 1
        h = np.clip(0.5 * m + rng.random((32, 32)) * 0.7, 0, 1)
        heats.append(np.rint(h * 255) / 255)  # on the 8-bit grid both paths agree exactly
        masks.append(m)
    exact = pixel_metrics(heats, masks, threshold=0.5)
    hists = [heatmap_histograms(h, m) for h, m in zip(heats, masks)]
    fast = pixel_metrics_from_histograms([p for p, _ in hists], [n for _, n in hists], threshold=0.5)
    assert fast["auroc"] == pytest.approx(exact["auroc"], abs=1e-9)
    assert fast["miou"] == pytest.approx(exact["miou"], abs=1e-9)
    # any other threshold from the same histograms
    again = pixel_metrics_from_histograms([p for p, _ in hists], [n for _, n in hists], threshold=0.3)
    assert again["miou"] == pytest.approx(pixel_metrics(heats, masks, threshold=0.3)["miou"], abs=1e-9)
    assert 0 <= fast["best_threshold"] <= 1 and fast["miou_best"] >= fast["miou"]


def test_threshold_level_is_exact_at_one_half():
    assert threshold_level(0.5) == 128  # level 128 ⇔ h ≥ 127.5/255 = 0.5
    with pytest.raises(ValueError, match="differ in size"):
        heatmap_histograms(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        heatmap_histograms(np.full((2, 2), np.nan), np.zeros((2, 2)))


def test_vqa_metrics_closed_open_and_judge():
    records = [
        {"answer_type": "closed", "correct": True},
        {"answer_type": "closed", "correct": None},
        {"answer_type": "open", "recall": 0.5, "prompt": "q", "reference": "left lung", "raw": "lung"},
        {"answer_type": "open", "recall": 1.0, "prompt": "q", "reference": "liver", "raw": "liver"},
    ]
    m = vqa_metrics(records, judge=lambda q, ref, pred: 1.0 if ref == pred else 0.0)
    assert m["closed_accuracy"] == 0.5 and m["unparseable"] == 1
    assert m["open_recall"] == 0.75 and m["judge_score"] == 0.5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vqa_metrics(records, judge=lambda *a: 3.0)
