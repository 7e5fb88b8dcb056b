"""Running evaluations: models × tasks → predictions files, metrics, ``results.json``, ``report.md``.

Layout of an output folder::

    <out>/predictions/<model>/<task>.jsonl     one line per sample (resumable)
    <out>/results.json                         metrics of every (task, model), data notes, skips
    <out>/report.md                            tables in the paper's shape
    <out>/figures/roc_<task>.png, confusion_<task>_<model>.png

The data of every task is loaded (and checked) before any model, so a bad folder fails in a
second, not after a 7B model has loaded. In suite mode a task whose folder is missing or that a
model cannot do (grounding with a bare backbone) is skipped with its reason in the report.
"""

from __future__ import annotations

import datetime as _dt
import gc
import logging
from pathlib import Path
from typing import Any, Callable

from medic_ad.eval.models import EvalModel
from medic_ad.eval.tasks import SuiteSpec, TaskSpec, get_suite, get_task

__all__ = ["evaluate", "suite_tasks"]

logger = logging.getLogger("medic_ad.eval")


def suite_tasks(suite: str | SuiteSpec) -> tuple[SuiteSpec, list[TaskSpec]]:
    spec = suite if isinstance(suite, SuiteSpec) else get_suite(suite)
    return spec, [get_task(t) for t in spec.task_names]


def evaluate(
    models: list[EvalModel],
    tasks: list[TaskSpec],
    out_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    free_decoding: bool = False,
    device: str = "cpu",
    dtype: str | None = "auto",
    progress: bool = True,
    overwrite: bool = False,
    save_heatmaps: bool = False,
    threshold: float = 0.5,
    pixel_threshold: float = 0.5,
    decision: str = "text",
    judge: Callable[[str, str, str], float] | None = None,
    skip_unavailable: bool = False,
    tables: dict[str, dict[str, Any]] | None = None,
    suite: str | None = None,
    published: bool = True,
    title: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Predict and score every task with every model; write the results and the report."""
    from medic_ad.eval.predict import predict_task
    from medic_ad.eval.report import write_report
    from medic_ad.eval.samples import load_task_samples, sample_ids
    from medic_ad.eval.score import score_file

    say = log or (lambda msg: logger.info(msg))
    if not models:
        raise ValueError("no model to evaluate")
    if not tasks:
        raise ValueError("no task to evaluate")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be ≥ 1, got {limit}")
    out_dir = Path(out_dir)
    skipped: list[dict[str, str]] = []
    data: dict[str, Any] = {}
    for task in tasks:
        try:
            data[task.name] = load_task_samples(task, data_root=data_root, limit=limit, progress=progress)
            say(f"{task.name}: {len(data[task.name].samples)} sample(s) from {data[task.name].root}")
        except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
            if not skip_unavailable:
                raise
            skipped.append({"task": task.name, "reason": str(exc)})
            say(f"{task.name}: skipped ({exc})")
    results: dict[str, dict[str, Any]] = {}
    predictions: dict[str, dict[str, Any]] = {}
    for em in models:
        runnable = [t for t in tasks if t.name in data]
        if not em.has_heatmaps:
            for t in [t for t in runnable if t.kind == "grounding"]:
                skipped.append({"task": t.name, "model": em.name,
                                "reason": f"a {em.kind} model has no heatmap decoder (grounding needs MEDIC-AD)"})
            runnable = [t for t in runnable if t.kind != "grounding"]
        if not runnable:
            continue
        say(f"loading {em.name} ({em.kind}) from {em.path}")
        model = em.load(device=device, dtype=dtype)
        try:
            for task in runnable:
                td = data[task.name]
                path = out_dir / "predictions" / em.name / f"{task.name}.jsonl"
                summary = predict_task(model, task, td.samples, path, model_name=em.name, model_path=str(em.path),
                                       batch_size=batch_size, max_new_tokens=max_new_tokens,
                                       free_decoding=free_decoding, progress=progress, save_heatmaps=save_heatmaps,
                                       overwrite=overwrite)
                metrics = score_file(path, task=task.name, ids=sample_ids(td.samples), threshold=threshold,
                                     pixel_threshold=pixel_threshold, decision=decision, judge=judge)
                metrics["predictions"] = path.relative_to(out_dir).as_posix()
                results.setdefault(task.name, {})[em.name] = metrics
                predictions.setdefault(task.name, {})[em.name] = summary.to_dict()
                say(f"{em.name} · {task.name}: {_headline(metrics)}"
                    + (f" (resumed {summary.n_before})" if summary.n_before else ""))
        finally:
            em.release()
            del model
            gc.collect()
    out = {
        "version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "suite": suite,
        "settings": {"limit": limit, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                     "free_decoding": free_decoding, "decision": decision, "threshold": threshold,
                     "pixel_threshold": pixel_threshold, "device": device, "dtype": dtype},
        "models": {m.name: m.describe() for m in models},
        "tasks": {t.name: {"kind": t.kind, "title": t.title, "description": t.description,
                           "data": data[t.name].describe() if t.name in data else None, "spec": t.to_dict()}
                  for t in tasks},
        "tables": tables,
        "results": results,
        "timing": predictions,
        "skipped": skipped,
    }
    if not results:
        reasons = "; ".join(f"{s['task']}: {s['reason']}" for s in skipped) or "nothing to run"
        raise ValueError(f"no task could be evaluated ({reasons})")
    paths = write_report(out, out_dir, published=published, title=title)
    out["files"] = {k: str(v) for k, v in paths.items()}
    return out


def _headline(m: dict[str, Any]) -> str:
    kind = m.get("kind")
    if kind == "detection":
        auc = "–" if m.get("auroc") is None else f"{m['auroc']:.3f}"
        return f"F1 {m['f1']:.3f} P {m['precision']:.3f} R {m['recall']:.3f} AUROC {auc} unparseable {m['unparseable']}"
    if kind == "change":
        return f"accuracy {m['accuracy']:.3f} unparseable {m.get('unparseable', 0)}"
    if kind == "grounding":
        auc = "–" if m.get("auroc") is None else f"{m['auroc']:.3f}"
        return f"pixel AUROC {auc} mIoU {m['miou']:.3f}"
    closed = "–" if m.get("closed_accuracy") is None else f"{m['closed_accuracy']:.3f}"
    recall = "–" if m.get("open_recall") is None else f"{m['open_recall']:.3f}"
    return f"closed accuracy {closed} open recall {recall}"
