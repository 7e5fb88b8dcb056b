"""Scoring: a predictions file (or its records) → metrics, without the model.

The scorer parses each line's ``raw`` answer again (:mod:`medic_ad.eval.parsing`), so an old file
re-scores with today's parser, at another threshold, or with a judge for open VQA answers.
One scoring function per task kind, registered with :func:`register_scorer`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from medic_ad.eval import metrics as M
from medic_ad.eval.parsing import change_from_text, normalize_answer, parse_choice, parse_yes_no, token_recall

__all__ = ["load_predictions", "register_scorer", "score_file", "score_records"]

Scorer = Callable[..., dict[str, Any]]
_SCORERS: dict[str, Scorer] = {}
_REQUIRED = {
    "detection": ("label", "raw", "score"),
    "change": ("raw", "options", "answer"),
    "vqa": ("raw", "reference", "answer_type"),
    "grounding": ("hist_pos", "hist_neg"),
}


def register_scorer(kind: str) -> Callable[[Scorer], Scorer]:
    def wrap(fn: Scorer) -> Scorer:
        _SCORERS[kind] = fn
        return fn

    return wrap


def load_predictions(path: str | Path, *, task: str | None = None, kind: str | None = None,
                     ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The records of one task's predictions file, checked: one task throughout, the expected task
    (or kind) when given, the fields its kind needs; later lines win for a repeated id; ``ids``
    keeps only those samples. A torn last line is dropped."""
    from medic_ad.eval.predict import read_predictions

    path = Path(path)
    records, _ = read_predictions(path)
    if not records:
        raise ValueError(f"{path}: no predictions in the file")
    first = records[0]
    if "task" not in first or "kind" not in first or "id" not in first:
        raise ValueError(f"{path}: not a medic-ad predictions file (line 1 has no id/task/kind)")
    tasks = sorted({str(r.get("task")) for r in records})
    if len(tasks) > 1:
        raise ValueError(f"{path}: mixes predictions of several tasks ({', '.join(tasks)})")
    if task is not None and tasks[0] != task:
        raise ValueError(f"{path}: holds predictions for task {tasks[0]!r}, not {task!r}")
    file_kind = first["kind"]
    if kind is not None and file_kind != kind:
        raise ValueError(f"{path}: holds {file_kind} predictions, not {kind}")
    if file_kind not in _SCORERS:
        raise ValueError(f"{path}: unknown task kind {file_kind!r}")
    need = _REQUIRED[file_kind]
    by_id: dict[str, dict[str, Any]] = {}
    for n, r in enumerate(records, 1):
        missing = [k for k in need if k not in r]
        if missing or r.get("kind") != file_kind:
            raise ValueError(f"{path}: record {n} lacks {', '.join(missing) or 'a consistent kind'} "
                             f"for a {file_kind} prediction")
        by_id[r["id"]] = r
    if ids is not None:
        wanted = set(ids)
        by_id = {k: v for k, v in by_id.items() if k in wanted}
        if not by_id:
            raise ValueError(f"{path}: none of the requested samples are in the file")
    return list(by_id.values())


def score_records(records: list[dict[str, Any]], *, threshold: float = 0.5, pixel_threshold: float = 0.5,
                  decision: str = "text", judge: Callable[[str, str, str], float] | None = None) -> dict[str, Any]:
    """Metrics of one task's records (see the per-kind scorers)."""
    if not records:
        raise ValueError("no predictions to score")
    kind = records[0]["kind"]
    if decision not in ("text", "score"):
        raise ValueError(f"decision must be 'text' or 'score', got {decision!r}")
    out = _SCORERS[kind](records, threshold=threshold, pixel_threshold=pixel_threshold, decision=decision,
                         judge=judge)
    times = [float(r["time_s"]) for r in records if isinstance(r.get("time_s"), (int, float))]
    out["kind"] = kind
    out["task"] = records[0].get("task")
    out["model"] = records[0].get("model")
    out["s_per_sample"] = round(sum(times) / len(times), 5) if times else None
    return out


def score_file(path: str | Path, *, task: str | None = None, ids: Iterable[str] | None = None,
               **kwargs: Any) -> dict[str, Any]:
    """:func:`score_records` of :func:`load_predictions`; ``predictions`` names the file."""
    out = score_records(load_predictions(path, task=task, ids=ids), **kwargs)
    out["predictions"] = str(path)
    return out


@register_scorer("detection")
def _score_detection(records: list[dict[str, Any]], *, threshold: float, decision: str, **_: Any) -> dict[str, Any]:
    y_true = [r["label"] for r in records]
    scores = [r.get("score") for r in records]
    if decision == "text":
        y_pred = [parse_yes_no(r["raw"]) for r in records]
    else:
        y_pred = [None if s is None else float(s) >= threshold for s in scores]
    out = M.detection_metrics(y_true, y_pred, scores, threshold=threshold)
    out["decision"] = decision
    out["roc"] = M.roc_points(y_true, scores)
    return out


@register_scorer("change")
def _score_change(records: list[dict[str, Any]], *, decision: str, **_: Any) -> dict[str, Any]:
    """Text decision: the option the parsed answer names; score decision: the most probable letter."""
    by_text = [parse_choice(r["raw"], r["options"]) for r in records]
    by_prob = [max(r["probs"], key=r["probs"].get) if r.get("probs") else None for r in records]
    letters = by_text if decision == "text" else by_prob
    out: dict[str, Any] = {"decision": decision,
                           "letter": M.choice_accuracy([r["answer"] for r in records], letters),
                           "letter_by_text": M.choice_accuracy([r["answer"] for r in records], by_text),
                           "letter_by_prob": M.choice_accuracy([r["answer"] for r in records], by_prob)}
    labelled = [(r, letter) for r, letter in zip(records, letters) if r.get("label") in M.CHANGE_LABELS]
    if labelled:
        preds = [None if letter is None else change_from_text(r["options"][letter]) for r, letter in labelled]
        out.update(M.change_metrics([r["label"] for r, _ in labelled], preds))
        out["n_unlabelled"] = len(records) - len(labelled)
    else:
        out.update({"n": len(records), "accuracy": out["letter"]["accuracy"], "per_class": None,
                    "unparseable": out["letter"]["unparseable"], "n_unlabelled": len(records)})
    return out


@register_scorer("vqa")
def _score_vqa(records: list[dict[str, Any]], *, judge=None, **_: Any) -> dict[str, Any]:
    scored = []
    for r in records:
        row = dict(r)
        if r["answer_type"] == "closed":
            row["correct"] = _closed_correct(r)
        else:
            row["recall"] = token_recall(r["raw"], r["reference"])
        scored.append(row)
    return M.vqa_metrics(scored, judge=judge)


def _closed_correct(r: dict[str, Any]) -> bool | None:
    """Exact match after normalisation; yes/no references by the yes/no parser; options by letter."""
    ref = normalize_answer(r["reference"])
    if r.get("options"):
        letter = parse_choice(r["raw"], r["options"])
        return None if letter is None else letter == r.get("answer")
    if ref in ("yes", "no"):
        v = parse_yes_no(r["raw"])
        return None if v is None else (v == (ref == "yes"))
    pred = normalize_answer(r["raw"])
    return None if not pred else pred == ref


@register_scorer("grounding")
def _score_grounding(records: list[dict[str, Any]], *, pixel_threshold: float, **_: Any) -> dict[str, Any]:
    return M.pixel_metrics_from_histograms([r["hist_pos"] for r in records], [r["hist_neg"] for r in records],
                                           threshold=pixel_threshold)
