"""Evaluation harness: tasks as YAML, predictions as JSONL, scoring, reports in the paper's shape.

Predict first, score second (``docs/eval.md``)::

    from medic_ad.eval import evaluate, get_task, resolve_models

    results = evaluate(resolve_models(["runs/demo/checkpoint"]), [get_task("head_ct")], "runs/eval/head_ct")

Modules: ``tasks`` (registry, YAML loading), ``samples`` (a task's samples), ``predict`` (JSONL,
resumable), ``parsing`` (answers → labels), ``metrics``, ``score`` (re-scorable), ``report``
(markdown + PNG), ``baseline`` (a bare Qwen2.5-VL as a model row), ``models`` (which folder is
which), ``suite`` (models × tasks), ``ablations`` (Table 4 / Fig. 5), ``published`` (the paper's rows),
``targets`` (what ``medic-ad demo`` holds the tiny default to).
The torch-heavy parts are imported on first use.
"""

from medic_ad.eval.metrics import (
    change_metrics,
    choice_accuracy,
    detection_metrics,
    heatmap_histograms,
    pixel_metrics,
    pixel_metrics_from_histograms,
    roc_points,
    vqa_metrics,
)
from medic_ad.eval.parsing import (
    change_from_text,
    normalize_answer,
    parse_change,
    parse_choice,
    parse_yes_no,
    token_recall,
)
from medic_ad.eval.tasks import SuiteSpec, TaskSpec, get_suite, get_task, list_suites, list_tasks, load_task_file

__all__ = [
    "SuiteSpec",
    "TaskSpec",
    "change_from_text",
    "change_metrics",
    "choice_accuracy",
    "detection_metrics",
    "evaluate",
    "get_suite",
    "get_task",
    "heatmap_histograms",
    "list_suites",
    "list_tasks",
    "load_eval_model",
    "load_predictions",
    "load_task_file",
    "load_task_samples",
    "normalize_answer",
    "parse_change",
    "parse_choice",
    "parse_yes_no",
    "pixel_metrics",
    "pixel_metrics_from_histograms",
    "predict_task",
    "resolve_models",
    "roc_points",
    "score_file",
    "score_records",
    "token_recall",
    "vqa_metrics",
    "write_report",
]

_LAZY = {
    "evaluate": "medic_ad.eval.suite",
    "load_eval_model": "medic_ad.eval.models",
    "resolve_models": "medic_ad.eval.models",
    "load_predictions": "medic_ad.eval.score",
    "score_file": "medic_ad.eval.score",
    "score_records": "medic_ad.eval.score",
    "load_task_samples": "medic_ad.eval.samples",
    "predict_task": "medic_ad.eval.predict",
    "write_report": "medic_ad.eval.report",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medic_ad.eval' has no attribute {name!r}")
