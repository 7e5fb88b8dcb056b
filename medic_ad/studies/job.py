"""The archive job: ordered series in, one ``studies.jsonl`` row (and the DICOM objects) per study out.

Per rank: skip what is done, decode this rank's slices in DataLoader workers, run the model on
batches of slices (batches may span studies), and as soon as a study's last slice is scored write
its DICOM objects (and store them, with ``--store``), then append its row; a study whose store
failed gets no row, so a rerun retries it. Then, after every rank is through, rank 0 merges the parts.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from medic_ad.data.io import MedicalImage
from medic_ad.studies import records
from medic_ad.studies.dataset import SliceDataset, decoded_batches
from medic_ad.studies.dicom_objects import StoreError
from medic_ad.studies.result import StudyResult
from medic_ad.studies.scoring import ScoreRule, pick_slices
from medic_ad.studies.series import Series
from medic_ad.studies.shard import Ranks

if TYPE_CHECKING:
    from medic_ad.models.interface import MedicalVLM
    from medic_ad.studies.dicom_objects import DicomOutput

__all__ = ["JobSummary", "PredictConfig", "STUDIES", "predict_studies", "score_series", "study_key"]

log = logging.getLogger("medic_ad.studies")

#: the name of the per-study records (``studies.jsonl``)
STUDIES = "studies"


def study_key(row: dict[str, Any]) -> tuple[str, str]:
    return (str(row["study_uid"]), str(row["series_uid"]))


@dataclass(frozen=True)
class PredictConfig:
    """``slices``: None for all, else N evenly spaced; ``window``: (low, high) HU for CT and NIfTI, None for
    the files' own; ``stop_after``: stop (as if killed) once this many studies are written in this run."""

    slices: int | None = None
    window: tuple[float, float] | None = None
    score: ScoreRule = ScoreRule()
    explain: bool = False
    batch_size: int = 8
    num_workers: int = 0
    progress: bool = True
    stop_after: int | None = None


@dataclass
class JobSummary:
    written: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    stopped: bool = False
    #: studies whose objects were written but not stored (``--store``): no row, so a rerun retries them
    not_stored: int = 0
    results: list[StudyResult] = field(default_factory=list)


@dataclass
class _Pending:
    picks: list[int]
    scores: dict[int, float] = field(default_factory=dict)
    answers: dict[int, str] = field(default_factory=dict)
    heatmaps: dict[int, np.ndarray] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.scores) + len(self.errors) >= len(self.picks)


class _Stop(Exception):
    pass


def _heatmap_volume(maps: list[np.ndarray]) -> np.ndarray:
    """(slices, H, W) float32; a slice of another size is resized to the first one's."""
    shape = maps[0].shape
    if any(m.shape != shape for m in maps):
        from medic_ad.serve.overlay import resize_map

        maps = [m if m.shape == shape else resize_map(m, shape) for m in maps]
    return np.clip(np.stack(maps).astype(np.float32), 0.0, 1.0)


def _finish(series: Series, pending: _Pending, config: PredictConfig) -> StudyResult:
    if pending.errors:
        return StudyResult(series.study_uid, series.series_uid, series.n_slices, status="failed",
                           reason=pending.errors[0])
    scores = [pending.scores[p] for p in pending.picks]
    score, key = config.score.apply(scores)
    position = pending.picks[key]
    heatmaps = _heatmap_volume([pending.heatmaps[p] for p in pending.picks]) if config.explain else None
    return StudyResult(
        study_uid=series.study_uid, series_uid=series.series_uid, n_slices=series.n_slices,
        score=round(score, 6), abnormal=bool(score >= 0.5), key_slice_index=position,
        key_sop_uid=series.slices[position].sop_uid, answer=pending.answers[position],
        slice_indices=list(pending.picks), slice_scores=[round(s, 6) for s in scores], heatmaps=heatmaps,
        status="ok", reason=series.order_reason)


def _progress(total: int, config: PredictConfig, ranks: Ranks):
    if not config.progress or not ranks.main or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="study", desc="predict", file=sys.stderr, dynamic_ncols=True)


def predict_studies(model: "MedicalVLM", series: list[Series], failed: list[StudyResult], out: Path,
                    config: PredictConfig, *, ranks: Ranks | None = None, dicom: "DicomOutput | None" = None,
                    keep_results: bool = False) -> JobSummary:
    """Run this rank's share of ``series`` and write its rows (see the module docstring); rank 0 merges.

    ``failed``: rows for files the scan could not read, written as they are. ``keep_results``: keep the
    :class:`StudyResult` objects (heatmaps included) in the summary, for callers that use them in memory.
    """
    ranks = ranks or Ranks()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = records.done_keys(out, STUDIES, study_key)
    todo = [s for s in series if ranks.mine(s.study_uid) and s.key not in done]
    todo_failed = [r for r in failed if ranks.mine(r.study_uid) and (r.study_uid, r.series_uid) not in done]
    summary = JobSummary(skipped=sum(ranks.mine(s.study_uid) for s in series) - len(todo))
    bar = _progress(len(todo) + len(todo_failed), config, ranks)
    try:
        with records.PartWriter(records.part_path(out, STUDIES, ranks.rank, ranks.world)) as part:
            def emit(result: StudyResult) -> None:
                part.append(result.row())
                summary.written += 1
                summary.failed += result.status != "ok"
                if keep_results:
                    summary.results.append(result)
                if bar is not None:
                    bar.update(1)
                if config.stop_after is not None and summary.written >= config.stop_after:
                    raise _Stop

            for row in todo_failed:
                emit(row)
            def not_stored(result: StudyResult, err: Exception) -> None:
                log.warning("study %s not stored, a rerun retries it: %s", result.study_uid, err)
                summary.not_stored += 1
                if bar is not None:
                    bar.update(1)

            _run_series(model, todo, config, dicom, emit, not_stored)
    except _Stop:
        summary.stopped = True
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - started
    if summary.stopped:
        return summary  # as a kill would leave it: the part file, no merge
    ranks.wait()
    if ranks.main:
        records.merge_parts(out, STUDIES, study_key)
    ranks.wait()
    return summary


def score_series(model: "MedicalVLM", series: Series, config: PredictConfig, *,
                 on_slice: Callable[[int, MedicalImage], None] | None = None) -> StudyResult:
    """One series through the archive job's batches, in memory (nothing written): its :class:`StudyResult`.

    ``on_slice(position, image)`` sees each decoded slice the model scored, for callers that draw
    them afterwards (the web UI's slice scroller) without decoding them twice.
    """
    results: list[StudyResult] = []
    _run_series(model, [series], config, None, results.append,
                on_slice=None if on_slice is None else (lambda _i, p, im: on_slice(p, im)))
    return results[0]


def _run_series(model: "MedicalVLM", todo: list[Series], config: PredictConfig, dicom: "DicomOutput | None",
                emit, not_stored=None, *, on_slice: Callable[[int, int, MedicalImage], None] | None = None) -> None:
    picks = [pick_slices(s.n_slices, config.slices) for s in todo]
    pending = {i: _Pending(p) for i, p in enumerate(picks)}
    dataset = SliceDataset(todo, picks, config.window)
    next_to_emit = 0

    def drain() -> None:
        # rows go out in series order, each as soon as it and all before it are complete
        nonlocal next_to_emit
        while next_to_emit < len(todo) and pending[next_to_emit].complete:
            result = _finish(todo[next_to_emit], pending.pop(next_to_emit), config)
            series = todo[next_to_emit]
            next_to_emit += 1
            if dicom is not None:
                try:
                    result = _write_dicom(dicom, result, series)
                except StoreError as err:
                    if not_stored is None:
                        raise
                    not_stored(result, err)
                    continue
            emit(result)

    drain()  # series without slices to score (none today) would finish here
    for batch in decoded_batches(dataset, batch_size=config.batch_size, num_workers=config.num_workers):
        ready = [item for item in batch if item.image is not None]
        for item in batch:
            if item.error is not None:
                pending[item.series].errors.append(item.error)
        if ready:
            images = [item.image for item in ready]
            if config.explain:
                outs = model.explain(images, batch_size=len(images))
            else:
                outs = model.detect(images, batch_size=len(images))
            for item, r in zip(ready, outs):
                if on_slice is not None:
                    on_slice(item.series, item.position, item.image)
                p = pending[item.series]
                p.scores[item.position] = float(r.score)
                p.answers[item.position] = str(r.answer)
                if config.explain:
                    p.heatmaps[item.position] = np.asarray(r.heatmap, dtype=np.float32)
        drain()


def _write_dicom(dicom: "DicomOutput", result: StudyResult, series: Series) -> StudyResult:
    try:
        dicom.write(result, series)
    except StoreError:
        raise
    except Exception as exc:  # the writer's own messages may quote header values: only its type goes out
        log.warning("DICOM output failed for one study (%s)", type(exc).__name__)
        result.status, result.reason = "failed", f"DICOM output failed ({type(exc).__name__})"
    return result
