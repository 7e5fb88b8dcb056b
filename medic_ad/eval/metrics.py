"""Metric functions (scikit-learn where it fits). Inputs are plain lists; outputs are JSON-ready dicts.

Detection: *abnormal* is the positive class; an unparseable answer (``None`` prediction) counts as
wrong — a false negative for an abnormal case, a false positive for a normal one — and is reported.
With one class only, precision/recall/F1 follow scikit-learn's ``zero_division=0`` and AUROC is
``None`` (undefined). Change: accuracy per true class and overall; ``None`` predictions count
wrong. Pixels (``docs/eval.md`` § Grounding protocol): dataset-wide pixel AUROC over every pixel of
every image; per-image IoU at ``threshold`` averaged over images (mIoU); an image whose mask and
prediction are both empty scores IoU 1, an empty mask with a non-empty prediction scores 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "CHANGE_LABELS",
    "HIST_BINS",
    "change_metrics",
    "choice_accuracy",
    "detection_metrics",
    "heatmap_histograms",
    "pixel_metrics",
    "pixel_metrics_from_histograms",
    "roc_points",
    "vqa_metrics",
]

CHANGE_LABELS = ("worsened", "improved", "no change")
HIST_BINS = 256  # heatmaps are scored at 8-bit resolution: bin = round(255 * h)


def _is_abnormal(label: Any) -> bool:
    if isinstance(label, str):
        if label not in ("abnormal", "normal"):
            raise ValueError(f"detection label must be 'abnormal' or 'normal', got {label!r}")
        return label == "abnormal"
    return bool(label)


def _pred_abnormal(p: Any) -> bool | None:
    if p is None:
        return None
    if isinstance(p, str):
        return _is_abnormal(p)
    return bool(p)


def _prf(t: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        "precision": float(precision_score(t, p, zero_division=0)),
        "recall": float(recall_score(t, p, zero_division=0)),
        "f1": float(f1_score(t, p, zero_division=0)),
    }


def detection_metrics(y_true: Sequence[Any], y_pred: Sequence[Any],
                      scores: Sequence[float | None] | None = None, *, threshold: float = 0.5) -> dict[str, Any]:
    """Precision / recall / F1 (abnormal positive), AUROC and the best-F1 threshold from ``scores``.

    ``y_true``: ``"abnormal"``/``"normal"`` (or booleans). ``y_pred``: the parsed answers (booleans,
    the same strings, or ``None`` for unparseable). ``scores``: P(abnormal), e.g. P(Yes) from the
    first answer token; ``score_based`` holds P/R/F1 of ``score >= threshold``.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if not len(y_true):
        raise ValueError("no samples to score")
    t = np.array([_is_abnormal(v) for v in y_true], dtype=bool)
    parsed = [_pred_abnormal(v) for v in y_pred]
    unparseable = np.array([v is None for v in parsed], dtype=bool)
    p = np.array([(not ti) if v is None else v for ti, v in zip(t, parsed)], dtype=bool)
    out: dict[str, Any] = {
        "n": int(t.size), "n_abnormal": int(t.sum()), "n_normal": int((~t).sum()),
        **_prf(t, p),
        "accuracy": float((t == p).mean()),
        "unparseable": int(unparseable.sum()),
        "majority_f1": float(f1_score(t, np.full_like(t, t.mean() >= 0.5), zero_division=0)),
        "confusion": {
            "tp": int((t & p).sum()), "fn": int((t & ~p).sum()), "fp": int((~t & p).sum()), "tn": int((~t & ~p).sum()),
            "unparseable_abnormal": int((t & unparseable).sum()), "unparseable_normal": int((~t & unparseable).sum()),
        },
        "auroc": None, "best_f1": None, "best_threshold": None, "score_based": None, "n_scored": 0,
    }
    if scores is not None:
        if len(scores) != len(y_true):
            raise ValueError(f"{len(y_true)} labels but {len(scores)} scores")
        s = np.array([np.nan if v is None else float(v) for v in scores], dtype=float)
        ok = ~np.isnan(s)
        out["n_scored"] = int(ok.sum())
        if ok.any():
            out["score_based"] = {**_prf(t[ok], s[ok] >= threshold), "threshold": threshold}
        if ok.any() and len(set(t[ok].tolist())) == 2:
            out["auroc"] = float(roc_auc_score(t[ok], s[ok]))
            prec, rec, thr = precision_recall_curve(t[ok], s[ok])
            f1s = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
            best = int(np.argmax(f1s))
            out["best_f1"], out["best_threshold"] = float(f1s[best]), float(thr[best])
    return out


def roc_points(y_true: Sequence[Any], scores: Sequence[float | None], *, max_points: int = 200) -> dict[str, list]:
    """ROC curve (fpr, tpr) of the scored samples, at most ``max_points`` points; empty with one class."""
    t = np.array([_is_abnormal(v) for v in y_true], dtype=bool)
    s = np.array([np.nan if v is None else float(v) for v in scores], dtype=float)
    ok = ~np.isnan(s)
    if not ok.any() or len(set(t[ok].tolist())) < 2:
        return {"fpr": [], "tpr": []}
    fpr, tpr, _ = roc_curve(t[ok], s[ok])
    if fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}


def change_metrics(y_true: Sequence[str], y_pred: Sequence[str | None]) -> dict[str, Any]:
    """Accuracy per true class (worsened / improved / no change) and overall (MMXU protocol).

    ``per_class`` is ``None`` for a class with no sample; ``confusion[true][pred]`` counts, with
    ``"unparseable"`` as an extra predicted column; ``answer_shares`` is how often each answer was given
    (a model that gives one answer to almost everything has collapsed, whatever its accuracy).
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if not len(y_true):
        raise ValueError("no samples to score")
    for v in y_true:
        if v not in CHANGE_LABELS:
            raise ValueError(f"change label must be one of {CHANGE_LABELS}, got {v!r}")
    correct = np.array([a == b for a, b in zip(y_true, y_pred)])
    per_class: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for c in CHANGE_LABELS:
        idx = [i for i, v in enumerate(y_true) if v == c]
        per_class[c] = float(correct[idx].mean()) if idx else None
        counts[c] = len(idx)
    columns = (*CHANGE_LABELS, None)
    confusion = {a: {("unparseable" if b is None else b): sum(1 for x, y in zip(y_true, y_pred) if x == a and y == b)
                     for b in columns} for a in CHANGE_LABELS}
    present = [v for v in per_class.values() if v is not None]
    return {"n": len(y_true), "accuracy": float(correct.mean()), "per_class": per_class, "n_per_class": counts,
            "balanced_accuracy": float(np.mean(present)),
            "answer_shares": {c: sum(1 for v in y_pred if v == c) / len(y_pred) for c in CHANGE_LABELS},
            "unparseable": sum(1 for v in y_pred if v is None), "confusion": confusion}


def choice_accuracy(y_true: Sequence[str], y_pred: Sequence[str | None]) -> dict[str, Any]:
    """Multiple-choice accuracy by option letter (for questions whose options name no change)."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} answers but {len(y_pred)} predictions")
    if not len(y_true):
        raise ValueError("no samples to score")
    correct = [a == b for a, b in zip(y_true, y_pred)]
    return {"n": len(correct), "accuracy": float(np.mean(correct)), "unparseable": sum(v is None for v in y_pred)}


# ---------------------------------------------------------------------------------------------- pixels


def pixel_metrics(heatmaps: Sequence[np.ndarray], masks: Sequence[np.ndarray], *,
                  threshold: float = 0.5) -> dict[str, Any]:
    """Dataset-wide pixel AUROC and mean per-image IoU at ``threshold`` (exact, in memory)."""
    if len(heatmaps) != len(masks) or not len(heatmaps):
        raise ValueError("need one heatmap per mask and at least one pair")
    ious, scores, labels, empty = [], [], [], 0
    for h, m in zip(heatmaps, masks):
        h, m = np.asarray(h, dtype=np.float32), np.asarray(m) > 0
        if h.shape != m.shape:
            raise ValueError(f"heatmap {h.shape} and mask {m.shape} differ in size")
        pred = h >= threshold
        union = (pred | m).sum()
        ious.append(1.0 if union == 0 else float((pred & m).sum() / union))
        empty += int(not m.any())
        scores.append(h.ravel())
        labels.append(m.ravel())
    s, y = np.concatenate(scores), np.concatenate(labels)
    auroc = float(roc_auc_score(y, s)) if 0 < y.sum() < y.size else None
    return {"n": len(ious), "auroc": auroc, "miou": float(np.mean(ious)), "threshold": threshold,
            "n_empty_masks": empty}


def heatmap_histograms(heatmap: np.ndarray, mask: np.ndarray) -> tuple[list[int], list[int]]:
    """Counts of mask (positive) and background (negative) pixels per 8-bit heatmap level.

    Two 256-bin histograms per image are everything the pixel metrics need: dataset-wide AUROC
    (on the 8-bit heatmap) and IoU at *any* threshold, so a predictions file can be re-scored at
    another threshold without the heatmaps.
    """
    h = np.asarray(heatmap, dtype=np.float32)
    m = np.asarray(mask) > 0
    if h.shape != m.shape:
        raise ValueError(f"heatmap {h.shape} and mask {m.shape} differ in size")
    if not np.isfinite(h).all():
        raise ValueError("heatmap holds NaN or infinite values")
    levels = np.clip(np.rint(np.clip(h, 0.0, 1.0) * (HIST_BINS - 1)), 0, HIST_BINS - 1).astype(np.int64)
    pos = np.bincount(levels[m], minlength=HIST_BINS)
    neg = np.bincount(levels[~m], minlength=HIST_BINS)
    return pos.tolist(), neg.tolist()


def threshold_level(threshold: float) -> int:
    """Smallest 8-bit level counted as foreground at ``threshold``: level ≥ k ⇔ h ≥ (k − 0.5)/255."""
    return int(np.clip(np.ceil(threshold * (HIST_BINS - 1) + 0.5 - 1e-9), 0, HIST_BINS))


def _iou_per_level(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """(n_images, 257) IoU when levels ≥ k are foreground, k = 0..256 (k = 256: nothing is)."""
    tp = np.concatenate([np.cumsum(pos[:, ::-1], 1)[:, ::-1], np.zeros((pos.shape[0], 1))], 1)
    fp = np.concatenate([np.cumsum(neg[:, ::-1], 1)[:, ::-1], np.zeros((neg.shape[0], 1))], 1)
    fn = pos.sum(1, keepdims=True) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union == 0, 1.0, tp / np.maximum(union, 1))


def pixel_metrics_from_histograms(pos_hists: Sequence[Sequence[int]], neg_hists: Sequence[Sequence[int]], *,
                                  threshold: float = 0.5) -> dict[str, Any]:
    """Pixel AUROC (dataset-wide) and mIoU at ``threshold`` from :func:`heatmap_histograms`.

    Also ``miou_best`` / ``best_threshold``: the threshold that maximises mIoU over the dataset
    (an oracle, for reference only), ``miou_lesion`` (images with a non-empty mask only) and
    ``dice`` (mean per-image Dice at ``threshold``; empty/empty scores 1).
    """
    if len(pos_hists) != len(neg_hists) or not len(pos_hists):
        raise ValueError("need one positive and one negative histogram per image, and at least one image")
    pos = np.asarray(pos_hists, dtype=np.float64)
    neg = np.asarray(neg_hists, dtype=np.float64)
    if pos.shape[1:] != (HIST_BINS,) or neg.shape != pos.shape:
        raise ValueError(f"histograms must have {HIST_BINS} bins")
    P, N = pos.sum(0), neg.sum(0)
    auroc = None
    if P.sum() > 0 and N.sum() > 0:
        neg_below = np.concatenate([[0.0], np.cumsum(N)[:-1]])
        auroc = float((P * (neg_below + 0.5 * N)).sum() / (P.sum() * N.sum()))
    ious = _iou_per_level(pos, neg)
    k = threshold_level(threshold)
    per_image = ious[:, k]
    mean_per_level = ious.mean(0)
    best = int(np.argmax(mean_per_level))
    lesion = pos.sum(1) > 0
    tp = pos[:, k:].sum(1)
    fp = neg[:, k:].sum(1)
    denom = pos.sum(1) + tp + fp
    dice = np.where(denom == 0, 1.0, 2 * tp / np.maximum(denom, 1))
    return {
        "n": int(pos.shape[0]), "auroc": auroc, "miou": float(per_image.mean()), "threshold": threshold,
        "miou_lesion": float(per_image[lesion].mean()) if lesion.any() else None,
        "dice": float(dice.mean()), "n_empty_masks": int((~lesion).sum()),
        "miou_best": float(mean_per_level[best]),
        "best_threshold": float(min(max((best - 0.5) / (HIST_BINS - 1), 0.0), 1.0)),
    }


# ---------------------------------------------------------------------------------------------- VQA


def vqa_metrics(records: Sequence[dict[str, Any]], *,
                judge: Callable[[str, str, str], float] | None = None) -> dict[str, Any]:
    """Closed questions: exact match after normalisation; open questions: token recall.

    Each record holds ``answer_type`` (``closed``/``open``), ``correct`` (closed: bool or None when
    unparseable) and ``recall`` (open). With ``judge(question, reference, prediction) -> [0, 1]``
    open answers are also judged (``judge_score``).
    """
    if not len(records):
        raise ValueError("no samples to score")
    closed = [r for r in records if r["answer_type"] == "closed"]
    opened = [r for r in records if r["answer_type"] == "open"]
    out: dict[str, Any] = {"n": len(records), "n_closed": len(closed), "n_open": len(opened),
                           "closed_accuracy": None, "open_recall": None, "judge_score": None,
                           "unparseable": sum(1 for r in closed if r.get("correct") is None)}
    if closed:
        out["closed_accuracy"] = float(np.mean([bool(r.get("correct")) for r in closed]))
    if opened:
        out["open_recall"] = float(np.mean([float(r["recall"]) for r in opened]))
        if judge is not None:
            vals = [float(judge(r.get("prompt") or "", r.get("reference") or "", r.get("raw") or "")) for r in opened]
            if any(not 0.0 <= v <= 1.0 for v in vals):
                raise ValueError("the judge must return scores in [0, 1]")
            out["judge_score"] = float(np.mean(vals))
    return out
