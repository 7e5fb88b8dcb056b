"""Predicting: one JSON line per sample, written and flushed as soon as its batch is done.

Every line holds ``v`` (format version), ``id``, ``task``, ``kind``, ``dataset``, ``model``
(row name) and ``model_path``, ``prompt``, ``raw`` (the generated answer), ``parsed`` (the
answer as parsed when predicted — the scorer parses ``raw`` again, so a better parser re-scores
old files), the gold ``label`` and ``time_s`` (the batch's wall time divided by its size). Per kind:

* detection: ``score`` = P(Yes) against P(No) of the first answer token (one prefill), ``image``.
* change: ``options`` (letter → text), ``probs`` (letter → P from the first answer token),
  ``answer`` (gold letter), ``label`` (gold change, or null when the options name none).
* vqa: ``reference``, ``answer_type`` (closed / open), ``options`` when the question has them.
* grounding: ``hist_pos`` / ``hist_neg``: 256-bin histograms of the 8-bit heatmap over mask and
  background pixels (enough for pixel AUROC and IoU at any threshold), ``mask_pixels``,
  ``heatmap_max``, and ``heatmap_file`` when heatmaps are saved (``heatmaps/<n>.npz``, uint8).

Resuming: ids already in the file are skipped; a torn last line (the process died mid-write) is
detected and cut off before appending; lines from another task or model stop the run with one
clear message.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from medic_ad.eval.tasks import TaskSpec

if TYPE_CHECKING:
    from medic_ad.models.interface import MedicalVLM

__all__ = ["FORMAT_VERSION", "PredictSummary", "predict_task", "read_predictions", "register_predictor"]

FORMAT_VERSION = 1

Predictor = Callable[..., list[dict[str, Any]]]
_PREDICTORS: dict[str, Predictor] = {}


def register_predictor(kind: str) -> Callable[[Predictor], Predictor]:
    """Decorator: ``fn(model, task, samples, *, max_new_tokens, free) -> list of line dicts``."""

    def wrap(fn: Predictor) -> Predictor:
        _PREDICTORS[kind] = fn
        return fn

    return wrap


# ---------------------------------------------------------------------------------------------- reading


def read_predictions(path: str | Path, *, repair: bool = False) -> tuple[list[dict[str, Any]], bool]:
    """The records of a predictions file and whether its last line was torn (and dropped).

    ``repair=True`` also cuts the torn tail off the file (before appending to it). A malformed line
    that is not the last one means the file is corrupt: ``ValueError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file does not exist")
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    torn = False
    good_end = 0
    pos = 0
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        end = pos + len(line) + (0 if last else 1)
        if not line.strip():
            pos = end
            if not last:
                good_end = end
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
            if not isinstance(rec, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            if last:
                torn = True
                break
            if not records:
                raise ValueError(f"{path}: not a predictions file (line {i + 1} is not a JSON object; "
                                 "predictions are JSON lines)") from None
            raise ValueError(f"{path}: line {i + 1} is not a JSON object (the file is corrupt, "
                             "not just cut short)") from None
        if last:  # complete JSON but no newline: keep it, give it its newline
            records.append(rec)
            if repair:
                with open(path, "ab") as fh:
                    fh.write(b"\n")
            good_end = end + 1
            break
        records.append(rec)
        good_end = end
        pos = end
    if torn and repair:
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
    return records, torn


# ---------------------------------------------------------------------------------------------- predicting


@dataclass
class PredictSummary:
    path: Path
    n_total: int
    n_before: int
    n_new: int
    torn_line_dropped: bool
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "n_total": self.n_total, "n_resumed": self.n_before, "n_new": self.n_new,
                "torn_line_dropped": self.torn_line_dropped, "wall_s": round(self.wall_s, 3),
                "s_per_sample": round(self.wall_s / self.n_new, 4) if self.n_new else None}


def _check_existing(records: list[dict[str, Any]], path: Path, task: str, model_name: str,
                    settings: dict[str, Any]) -> None:
    for rec in records:
        if rec.get("task") != task:
            raise ValueError(f"{path}: holds predictions for task {rec.get('task')!r}, not {task!r}; "
                             "use another --out or --overwrite")
        if rec.get("model") != model_name:
            raise ValueError(f"{path}: holds predictions of model {rec.get('model')!r}, not {model_name!r}; "
                             "use another --out or --overwrite")
        old = {k: rec.get(k) for k in settings if k in rec}
        if old and old != {k: settings[k] for k in old}:
            diff = ", ".join(f"{k} {old[k]!r} → {settings[k]!r}" for k in old if old[k] != settings[k])
            raise ValueError(f"{path}: was predicted with other settings ({diff}); "
                             "use the same settings to resume, another --out, or --overwrite")


def predict_task(model: "MedicalVLM", task: TaskSpec, samples: Any, out_path: str | Path, *, model_name: str,
                 model_path: str | None = None, batch_size: int = 8, max_new_tokens: int | None = None,
                 free_decoding: bool = False, progress: bool = True, save_heatmaps: bool = False,
                 overwrite: bool = False, stop_after: int | None = None) -> PredictSummary:
    """Predict every sample of ``samples`` not yet in ``out_path`` and append one line each.

    ``stop_after`` ends the run after that many new samples (tests use it to simulate a kill). The model
    is prepared for inference first (:meth:`~medic_ad.models.interface.MedicalVLM.for_inference`: MEDIC-AD
    folds its LoRA in; ``set_stage(1|2)`` takes it out again).
    """
    from medic_ad.eval.samples import sample_ids

    if batch_size < 1:
        raise ValueError(f"--batch-size must be ≥ 1, got {batch_size}")
    if task.kind not in _PREDICTORS:
        raise ValueError(f"no predictor for task kind {task.kind!r}")
    if task.kind == "grounding" and not model.has_heatmaps:
        raise ValueError(f"model {model_name!r} has no heatmap decoder; grounding needs a MEDIC-AD checkpoint")
    model.for_inference()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if overwrite and out_path.exists():
        out_path.unlink()
    n_tokens = max_new_tokens if max_new_tokens is not None else task.new_tokens
    settings = {"prompt": task.the_prompt, "decoding": "free" if free_decoding else "forced",
                "max_new_tokens": n_tokens}
    if task.kind in ("change", "vqa"):
        del settings["prompt"]  # per-sample questions
    if task.kind == "grounding":
        settings = {"prompt": task.the_prompt}
    torn = False
    done: set[str] = set()
    if out_path.exists():
        records, torn = read_predictions(out_path, repair=True)
        _check_existing(records, out_path, task.name, model_name, settings)
        done = {r["id"] for r in records if "id" in r}
    ids = sample_ids(samples)
    todo = [i for i, sid in enumerate(ids) if sid not in done]
    n_before = len(ids) - len(todo)
    if stop_after is not None:
        todo = todo[:stop_after]
    heat_dir = out_path.with_suffix("").with_name(out_path.stem + "_heatmaps") if save_heatmaps else None
    bar = _progress(len(ids), n_before, f"{model_name} · {task.name}", progress)
    step = batch_size if task.kind in ("detection", "change", "vqa") else 1
    start = time.perf_counter()
    n_new = 0
    try:
        with open(out_path, "a", encoding="utf-8") as fh:
            for b in range(0, len(todo), step):
                chunk = [samples[i] for i in todo[b:b + step]]
                t0 = time.perf_counter()
                lines = _PREDICTORS[task.kind](model, task, chunk, max_new_tokens=n_tokens, free=free_decoding,
                                               heat_dir=heat_dir)
                dt = (time.perf_counter() - t0) / len(chunk)
                for sample, line in zip(chunk, lines):
                    rec = {"v": FORMAT_VERSION, "id": sample.id, "task": task.name, "kind": task.kind,
                           "dataset": sample.dataset, "model": model_name, "model_path": model_path, **line,
                           **{k: v for k, v in settings.items() if k != "prompt"}, "time_s": round(dt, 5)}
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    fh.flush()
                n_new += len(chunk)
                bar.update(len(chunk))
            os.fsync(fh.fileno())
    finally:
        bar.close()
    return PredictSummary(out_path, len(ids), n_before, n_new, torn, time.perf_counter() - start)


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="sample", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, leave=False)


# ---------------------------------------------------------------------------------------------- per kind


def _ref(x: Any) -> str | None:
    return str(x) if isinstance(x, (str, Path)) else None


@register_predictor("detection")
def _predict_detection(model: "MedicalVLM", task: TaskSpec, samples: list, *, max_new_tokens: int, free: bool,
                       **_: Any) -> list[dict[str, Any]]:
    from medic_ad.data.templates import ChatExample
    from medic_ad.eval.parsing import yes_no_label
    from medic_ad.models.interface import DETECTION_OPTIONS

    prompt = task.the_prompt
    rows = model.choose([ChatExample([s.images[0]], prompt) for s in samples], DETECTION_OPTIONS,
                        max_new_tokens=max(max_new_tokens, 1), force=not free)
    return [{"prompt": prompt, "raw": r.answer, "parsed": yes_no_label(r.answer), "score": round(r.probs[0], 6),
             "label": s.label, "image": _ref(s.images[0])} for s, r in zip(samples, rows)]


def change_question(sample: Any, task: TaskSpec) -> tuple[str, dict[str, str], str | None]:
    """(question with options, options, gold letter) of a change sample: its own (MMXU) or MMXU-style."""
    from medic_ad.data.templates import change_example

    ex = change_example(sample, question=task.prompt)
    text = ex.messages[0]["content"][-1]["text"]
    if sample.options is not None and sample.answer is not None:
        return text, dict(sample.options), sample.answer
    from medic_ad.data.templates import CHANGE_LETTER, CHANGE_OPTIONS

    return text, dict(CHANGE_OPTIONS), CHANGE_LETTER[sample.change]


@register_predictor("change")
def _predict_change(model: "MedicalVLM", task: TaskSpec, samples: list, *, max_new_tokens: int, free: bool,
                    **_: Any) -> list[dict[str, Any]]:
    from medic_ad.data.templates import ChatExample, choice_answer
    from medic_ad.eval.parsing import parse_change, parse_choice

    questions = [change_question(s, task) for s in samples]
    rows: list[dict[str, Any] | None] = [None] * len(samples)
    # Samples with the same options share one batch (and so the options scored).
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for i, (_, options, _) in enumerate(questions):
        groups.setdefault(tuple(options.items()), []).append(i)
    for items, idx in groups.items():
        letters, options = [letter for letter, _ in items], dict(items)
        chosen = model.choose([ChatExample(list(samples[i].images), questions[i][0]) for i in idx],
                              [choice_answer(letter, options) for letter in letters],
                              max_new_tokens=max(max_new_tokens, 1), force=not free)
        for row, i in zip(chosen, idx):
            text, options, gold = questions[i]
            rows[i] = {"prompt": text, "raw": row.answer, "parsed": parse_choice(row.answer, options),
                       "parsed_change": parse_change(row.answer, options), "options": options,
                       "probs": {letter: round(float(p), 6) for letter, p in zip(letters, row.probs)},
                       "answer": gold, "label": samples[i].change, "region": samples[i].region,
                       "images": [_ref(x) for x in samples[i].images],
                       "source": (samples[i].meta or {}).get("source")}
    return rows  # type: ignore[return-value]


def vqa_answer_type(sample: Any, task: TaskSpec) -> str:
    from medic_ad.eval.parsing import normalize_answer

    if task.answer_type != "auto":
        return task.answer_type
    stated = (sample.meta or {}).get("answer_type")
    if stated in ("open", "closed"):
        return stated
    if sample.options or normalize_answer(sample.answer) in ("yes", "no"):
        return "closed"
    return "open"


@register_predictor("vqa")
def _predict_vqa(model: "MedicalVLM", task: TaskSpec, samples: list, *, max_new_tokens: int, free: bool,
                 **_: Any) -> list[dict[str, Any]]:
    from medic_ad.data.templates import ChatExample, format_options
    from medic_ad.eval.parsing import normalize_answer

    prompts = []
    for s in samples:
        q = s.question
        if s.options and not all(v in q for v in s.options.values()):
            q = f"{q} {format_options(s.options)}"
        prompts.append(q)
    answers = model.answer([ChatExample(list(s.images), q) for s, q in zip(samples, prompts)],
                           max_new_tokens=max(1, max_new_tokens))
    out = []
    for s, q, a in zip(samples, prompts, answers):
        reference = s.options[s.answer] if s.options and s.answer in s.options else s.answer
        out.append({"prompt": q, "raw": a, "parsed": normalize_answer(a), "reference": reference,
                    "answer": s.answer, "options": s.options, "answer_type": vqa_answer_type(s, task),
                    "label": None, "images": [_ref(x) for x in s.images]})
    return out


@register_predictor("grounding")
def _predict_grounding(model: "MedicalVLM", task: TaskSpec, samples: list, *, heat_dir: Path | None = None,
                       **_: Any) -> list[dict[str, Any]]:
    from medic_ad.data.io import load_image_any, load_mask
    from medic_ad.eval.metrics import heatmap_histograms

    out = []
    for s in samples:
        image = load_image_any(s.images[0])
        heat = model.explain(image, max_new_tokens=1).heatmap
        mask = load_mask(s.masks[0], size=image.pixels.shape[:2])
        pos, neg = heatmap_histograms(heat, mask)
        line: dict[str, Any] = {"prompt": task.the_prompt, "raw": None, "parsed": None, "label": s.label,
                                "image": _ref(s.images[0]), "mask": _ref(s.masks[0]), "mask_pixels": int(mask.sum()),
                                "heatmap_max": round(float(heat.max()), 5), "hist_pos": pos, "hist_neg": neg}
        if heat_dir is not None:
            heat_dir.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha1(s.id.encode()).hexdigest()[:16] + ".npz"
            np.savez_compressed(heat_dir / name, heatmap=np.rint(heat * 255).astype(np.uint8), id=s.id)
            line["heatmap_file"] = f"{heat_dir.name}/{name}"
        out.append(line)
    return out
