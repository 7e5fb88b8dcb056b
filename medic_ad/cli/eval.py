"""``medic-ad eval``: predict → score → tables in the paper's shape, for checkpoints and baselines.

    medic-ad eval --model CKPT [--model NAME=DIR ...] --task TASK [--data DIR] [--format NAME]
                  [--out DIR] [--limit N] [--batch-size B]
    medic-ad eval --model CKPT --suite paper [--limit N]
    medic-ad eval score PREDICTIONS.jsonl [--threshold T] [--decision text|score]   (or --rescore FILE)
    medic-ad eval compare runA/results.json runB/results.json [--out DIR]
    medic-ad eval ablate --model full=A --model nomod=B ... [--task ...] [--reference full]
    medic-ad eval tasks

``--model`` takes a MEDIC-AD checkpoint folder or a plain Qwen2.5-VL-architecture folder (the
baseline: same prompts, same Yes/No-prefill scoring, no MEDIC-AD modules). Predictions are JSONL,
one line per sample, flushed as written: re-running the same command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

DEFAULT_OUT = Path("runs/eval")


def _run_options(p: argparse.ArgumentParser, *, model_required: bool = False) -> None:
    p.add_argument("--model", action="append", default=None, metavar="[NAME=]DIR",
                   required=model_required,
                   help="MEDIC-AD checkpoint or Qwen2.5-VL folder; repeat to put models side by side")
    p.add_argument("--task", action="append", default=None, metavar="TASK",
                   help="registered task name (see `medic-ad eval tasks`) or a task YAML file; repeatable")
    p.add_argument("--data", type=Path, metavar="DIR",
                   help="dataset folder (any layout an adapter reads) for --task; required by the generic tasks "
                        "detection, change, grounding, vqa")
    p.add_argument("--format", metavar="NAME", help="dataset adapter for --data (default: detected from the layout)")
    p.add_argument("--split", metavar="SPLIT", help="keep only this split of the data")
    p.add_argument("--data-root", type=Path, metavar="DIR",
                   help="where the tasks' own folders live (default: $MEDIC_AD_DATA or ../shared/data)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: runs/eval/<suite or tasks>)")
    p.add_argument("--limit", type=int, metavar="N", help="N evenly spaced samples per task (keeps both classes)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="samples per model batch (default: 8)")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="answer length (default: the task's, 8 for "
                                                                      "detection/change, 32 for VQA)")
    p.add_argument("--free-decoding", action="store_true",
                   help="plain greedy answers; by default the first answer token is the one the score chose "
                        "(Yes/No, option letter), as MedicAD.detect does")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--dtype", default="auto", help="model dtype: auto, bf16, fp16, fp32 (default: auto)")
    _score_options(p)
    p.add_argument("--save-heatmaps", action="store_true", help="grounding: also keep every heatmap (uint8 .npz)")
    p.add_argument("--overwrite", action="store_true", help="start the predictions afresh instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _score_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, default=0.5,
                   help="detection: P(Yes) threshold of the score-based numbers (default: 0.5)")
    p.add_argument("--pixel-threshold", type=float, default=0.5, help="grounding: heatmap threshold of mIoU")
    p.add_argument("--decision", choices=("text", "score"), default="text",
                   help="decide from the parsed text answer (the paper's protocol, default) or from the "
                        "scores: detection P(Yes) >= --threshold, change the most probable option letter")
    p.add_argument("--judge", metavar="MODULE:FUNCTION",
                   help="open VQA: a callable judge(question, reference, prediction) -> score in [0, 1]")
    p.add_argument("--no-published", action="store_true", help="leave the paper's published rows out of tables")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate checkpoints and baselines: tasks, the paper's suite, re-scoring, ablations",
        description="Predict, score and tabulate in the paper's shape, for MEDIC-AD checkpoints and bare "
                    "Qwen2.5-VL baselines. Without an ACTION: evaluate --model(s) on --task(s) or a --suite. "
                    "Actions: score (re-score predictions), compare (merge results), ablate (Table 4 / Fig. 5), "
                    "tasks (list).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  medic-ad eval --model runs/demo/checkpoint --task head_ct --limit 20\n"
               "  medic-ad eval --model ckpt --task detection --data ~/data/my_folder\n"
               "  medic-ad eval --model ckpt --model qwen=~/models/Qwen2.5-VL-7B --suite paper\n"
               "  medic-ad eval score runs/eval/head_ct/predictions/ckpt/head_ct.jsonl --decision score\n"
               "  medic-ad eval compare runs/eval/a/results.json runs/eval/b/results.json --out runs/eval/ab\n"
               "  medic-ad eval ablate --model full=ckA --model nomod=ckB --reference full --limit 40")
    _run_options(p)
    p.add_argument("--suite", metavar="NAME", help="run a suite of tasks in the paper's layout (paper)")
    p.add_argument("--rescore", type=Path, metavar="PREDICTIONS.jsonl", help="same as `medic-ad eval score FILE`")
    p.set_defaults(func=run, eval_action=None)
    actions = p.add_subparsers(dest="eval_action", metavar="[ACTION]")
    actions.required = False

    s = actions.add_parser("score", help="re-score predictions files (no model needed)",
                           description="Score one or more predictions JSONL files again: parsing, thresholds and "
                                       "judges are applied to the stored raw answers.")
    s.add_argument("predictions", nargs="+", type=Path, metavar="PREDICTIONS.jsonl")
    s.add_argument("--task", metavar="TASK", help="refuse files holding another task's predictions")
    s.add_argument("--out", type=Path, metavar="DIR", help="also write results.json, report.md and figures here")
    _score_options(s)
    s.set_defaults(func=run)

    c = actions.add_parser("compare", help="one report over several results.json files (models side by side)")
    c.add_argument("results", nargs="+", type=Path, metavar="RESULTS.json")
    c.add_argument("--out", type=Path, required=True, metavar="DIR", help="where report.md and figures go")
    c.add_argument("--title", help="report title")
    c.add_argument("--no-published", action="store_true", help="leave the paper's published rows out")
    c.add_argument("--json", action="store_true", help="print the merged results as JSON")
    c.set_defaults(func=run)

    a = actions.add_parser("ablate", help="several checkpoints → Table 4 / Fig. 5 of the paper",
                           description="Evaluate checkpoints that differ in one switch (modulate, multi_scale, "
                                       "pool_size, num_soft_prompts, ...) on the same tasks and write the ablation "
                                       "table (rows labelled by their config difference) and sensitivity plots.")
    _run_options(a, model_required=True)
    a.add_argument("--reference", metavar="NAME", help="the full model the others are compared with (default: first)")
    a.set_defaults(func=run)

    t = actions.add_parser("tasks", help="list the registered tasks and suites")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------- actions


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "eval_action", None)
    if action is None and getattr(args, "rescore", None) is not None:
        args.predictions = [args.rescore]
        args.task = args.task[0] if args.task else None
        action = "score"
    if action == "score":
        return _score(args)
    if action == "compare":
        return _compare(args)
    if action == "tasks":
        return _tasks(args)
    if action == "ablate":
        return _ablate(args)
    return _evaluate(args)


def _load_judge(spec: str | None):
    if not spec:
        return None
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--judge must be MODULE:FUNCTION, got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--judge {spec}: cannot import ({exc})") from None
    if not callable(fn):
        raise ValueError(f"--judge {spec}: not callable")
    return fn


def _tasks_from_args(args: argparse.Namespace) -> tuple[list, Any, str]:
    from medic_ad.eval.suite import suite_tasks
    from medic_ad.eval.tasks import get_task

    suite = getattr(args, "suite", None)
    if suite and args.task:
        raise ValueError("give --task or --suite, not both")
    if suite:
        if args.data is not None:
            raise ValueError("--data points one --task at a folder; a suite reads its own folders (see --data-root)")
        spec, tasks = suite_tasks(suite)
        return tasks, spec, spec.name
    if not args.task:
        raise ValueError("name what to evaluate: --task TASK (see `medic-ad eval tasks`) or --suite paper")
    tasks = [get_task(t) for t in args.task]
    if args.data is not None or args.format or args.split:
        if args.data is not None and not args.data.exists():
            raise FileNotFoundError(f"{args.data}: data folder does not exist")
        tasks = [t.with_data(args.data, args.format, args.split) for t in tasks]
    for t in tasks:
        if t.generic:
            raise ValueError(f"task {t.name!r} reads any folder: pass --data DIR")
    name = "+".join(t.name for t in tasks)
    return tasks, None, name


def _check_common(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be ≥ 1, got {args.limit}")
    for name in ("threshold", "pixel_threshold"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1]")


def _run_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(data_root=args.data_root, limit=args.limit, batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens, free_decoding=args.free_decoding, device=args.device,
                dtype=args.dtype, progress=not args.no_progress and sys.stderr.isatty(), overwrite=args.overwrite,
                save_heatmaps=args.save_heatmaps, threshold=args.threshold, pixel_threshold=args.pixel_threshold,
                decision=args.decision, judge=_load_judge(args.judge), published=not args.no_published,
                log=lambda msg: print(f"[eval] {msg}", file=sys.stderr, flush=True))


def _evaluate(args: argparse.Namespace) -> int:
    from medic_ad.eval.models import resolve_models
    from medic_ad.eval.suite import evaluate

    _check_common(args)
    tasks, suite, name = _tasks_from_args(args)
    if not args.model:
        raise ValueError("no --model given (a MEDIC-AD checkpoint or a Qwen2.5-VL folder)")
    models = resolve_models(args.model)
    out = args.out or DEFAULT_OUT / name
    results = evaluate(models, tasks, out, skip_unavailable=suite is not None,
                       tables=suite.tables if suite else None, suite=suite.name if suite else None,
                       title=f"MEDIC-AD evaluation: {name}", **_run_kwargs(args))
    _print(results, args)
    return 0


def _print(results: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(results, indent=2))
        return
    from medic_ad.eval.report import markdown_report

    print(markdown_report(results, published=not args.no_published).split("\n## Data")[0].rstrip())
    files = results.get("files") or {}
    if files:
        print(f"\nwrote {files.get('markdown')}, {files.get('json')} and {files.get('figures')}/")


def _score(args: argparse.Namespace) -> int:
    from medic_ad.eval.report import write_report
    from medic_ad.eval.score import load_predictions, score_records

    for name in ("threshold", "pixel_threshold"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1]")
    judge = _load_judge(args.judge)
    results: dict[str, Any] = {"version": 1, "models": {}, "tasks": {}, "results": {}, "skipped": [], "tables": None}
    for path in args.predictions:
        records = load_predictions(path, task=args.task)
        metrics = score_records(records, threshold=args.threshold, pixel_threshold=args.pixel_threshold,
                                decision=args.decision, judge=judge)
        metrics["predictions"] = str(path)
        task, model, kind = records[0]["task"], records[0].get("model") or path.parent.name, records[0]["kind"]
        if model in results["results"].get(task, {}):
            model = f"{model} ({path})"
        results["models"].setdefault(model, {"path": records[0].get("model_path"), "kind": "from predictions"})
        results["tasks"].setdefault(task, {"kind": kind, "title": _task_title(task), "data": None})
        results["results"].setdefault(task, {})[model] = metrics
    if getattr(args, "out", None):
        paths = write_report(results, args.out, published=not args.no_published,
                             title="MEDIC-AD evaluation (re-scored)")
        results["files"] = {k: str(v) for k, v in paths.items()}
    _print(results, args)
    return 0


def _task_title(name: str) -> str:
    from medic_ad.eval.tasks import get_task

    try:
        return get_task(name).title
    except ValueError:
        return name


def _compare(args: argparse.Namespace) -> int:
    from medic_ad.eval.report import load_results, merge_results, write_report

    parts = [load_results(p) for p in args.results]
    labels = [p.parent.name or p.stem for p in args.results]
    merged = merge_results(parts, labels)
    paths = write_report(merged, args.out, published=not args.no_published, title=args.title or "MEDIC-AD comparison")
    merged["files"] = {k: str(v) for k, v in paths.items()}
    _print(merged, args)
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from medic_ad.eval.ablations import write_ablation_report
    from medic_ad.eval.models import resolve_models
    from medic_ad.eval.suite import evaluate
    from medic_ad.eval.tasks import get_task

    _check_common(args)
    models = resolve_models(args.model)
    baselines = [m.name for m in models if m.kind != "medic_ad"]
    if baselines:
        raise ValueError(f"ablations compare MEDIC-AD checkpoints; {', '.join(baselines)} is a bare backbone")
    if len(models) < 2:
        raise ValueError("an ablation needs at least two checkpoints (--model A --model B ...)")
    if args.task:
        tasks, _, _ = _tasks_from_args(args)
        skip = False
    else:
        tasks = [get_task(t) for t in ("brain_mri", "head_ct", "br35h", "covid_cxr", "mmxu", "br35h_mask_pairs")]
        skip = True
    out = args.out or DEFAULT_OUT / "ablation"
    results = evaluate(models, tasks, out, skip_unavailable=skip, title="MEDIC-AD ablations: all runs",
                       **_run_kwargs(args))
    abl = write_ablation_report(results, models, out, reference=args.reference, published=not args.no_published)
    if args.json:
        print(json.dumps({"results": results, "ablation": abl}, indent=2))
    else:
        print(Path(abl["markdown"]).read_text().rstrip())
        print(f"\nwrote {abl['markdown']}, {out / 'report.md'}" + (f" and {len(abl['figures'])} sensitivity plot(s)"
                                                                    if abl["figures"] else ""))
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from medic_ad.eval.tasks import get_suite, get_task, list_suites, list_tasks

    tasks = [get_task(n) for n in list_tasks()]
    if args.json:
        print(json.dumps({"tasks": {t.name: t.to_dict() for t in tasks},
                          "suites": {s: get_suite(s).tables for s in list_suites()}}, indent=2))
        return 0
    width = max(len(t.name) for t in tasks)
    for t in tasks:
        if t.generic:
            where = "--data DIR"
        elif t.data is None:  # rendered, not read (format synthetic)
            where = f"{t.format} (seed {(t.synthetic or {}).get('seed')})"
        else:
            where = f"{t.data}{' (' + t.split + ')' if t.split else ''}"
        print(f"{t.name:<{width}}  {t.kind:<9}  {where:<24}  {t.description}")
    for s in list_suites():
        spec = get_suite(s)
        print(f"\nsuite {s}: " + "; ".join(f"{tb['title'].split(':')[0]}: {', '.join(tb['tasks'])}"
                                          for tb in spec.tables.values()))
    return 0
