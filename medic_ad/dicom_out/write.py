"""Writing one study's objects to disk: each file appears whole or not at all.

Layout: ``out_dir/<StudyInstanceUID>/<source SeriesInstanceUID>.<kind>.dcm`` with kind ``sr``,
``heatmap`` or ``overlay``; a comparison SR is ``<current series>.comparison.<prior series>.dcm`` in
the current study's folder. Each object is written to a temporary file in the same folder, flushed
to disk, then renamed over its name, so a killed run leaves either the old file or the new one and
a rerun's check "does the file exist" means "is it complete".
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import pydicom

from medic_ad.dicom_out.common import Algorithm
from medic_ad.dicom_out.comparison import build_comparison_sr, comparison_path
from medic_ad.dicom_out.heatmap import build_heatmap_object
from medic_ad.dicom_out.overlay import build_overlay_capture
from medic_ad.dicom_out.sr import build_sr
from medic_ad.studies.result import StudyResult

__all__ = ["object_path", "save_atomic", "write_comparison_objects", "write_study_objects"]


def object_path(out_dir: Path, study_uid: str, series_uid: str, kind: str) -> Path:
    """Where ``write_study_objects`` puts one object."""
    return Path(out_dir) / study_uid / f"{series_uid}.{kind}.dcm"


def save_atomic(ds: pydicom.Dataset, path: Path) -> Path:
    """Write ``ds`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            ds.save_as(fh, enforce_file_format=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_study_objects(result: StudyResult, sources: Sequence[pydicom.Dataset], out_dir: Path, *,
                        model_name: str, model_version: str, checkpoint_digest: str, heatmaps: bool,
                        overlay: bool = False, frames: Sequence[int | None] | None = None) -> list[Path]:
    """Write the SR, the heatmap Parametric Map (``heatmaps``) and the overlay capture (``overlay``).

    ``sources``: the result's series, one header per slice position, ordered as ``result``'s slice
    indices count them (a multi-frame file's header once per frame); ``frames``: per position, the
    frame number (1-based) in a multi-frame file, else None. All objects are built before any is
    written, so an error leaves nothing new behind. Returns the written paths.
    """
    algorithm = Algorithm(model_name, model_version, checkpoint_digest)
    built = {"sr": build_sr(result, sources, algorithm, frames=frames)}
    if heatmaps:
        built["heatmap"] = build_heatmap_object(result, sources, algorithm, frames=frames)
    if overlay:
        built["overlay"] = build_overlay_capture(result, sources, algorithm, frames=frames)
    return [save_atomic(ds, object_path(out_dir, result.study_uid, result.series_uid, kind))
            for kind, ds in built.items()]


def write_comparison_objects(row: dict, current: Sequence[pydicom.Dataset], prior: Sequence[pydicom.Dataset],
                             out_dir: Path, *, model_name: str, model_version: str, checkpoint_digest: str,
                             current_frames: Sequence[int | None] | None = None,
                             prior_frames: Sequence[int | None] | None = None) -> Path:
    """Write the comparison SR of one ``comparisons.jsonl`` row into the current study; returns its path.

    ``current`` / ``prior``: the two series, one header per slice position, ordered as the row's slice
    indices count them; ``*_frames``: per position, the frame number in a multi-frame file, else None.
    """
    algorithm = Algorithm(model_name, model_version, checkpoint_digest)
    sr = build_comparison_sr(row, current, prior, algorithm, current_frames=current_frames, prior_frames=prior_frames)
    return save_atomic(sr, comparison_path(out_dir, row))
