"""The seam to the DICOM writers (``medic_ad.dicom_out``): SR and heatmap objects for one study.

The writers are optional here: when ``medic_ad.dicom_out`` cannot be imported the job writes no
DICOM and says so in one log line. The writers need the source headers (patient and study modules
are copied from them); they are read at writing time and handed over, never logged or kept.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from medic_ad.studies.result import StudyResult
from medic_ad.studies.series import Series

__all__ = ["DicomOutput", "StoreError", "checkpoint_digest"]

log = logging.getLogger("medic_ad.studies")


def checkpoint_digest(path: str | Path | None) -> str:
    """sha256 over a checkpoint folder's files (names and bytes, sorted); ``"none"`` without a folder."""
    if path is None:
        return "none"
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode())
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def _source_slices(series: Series, *, pixels_of: int | None = None) -> tuple[list[Any], list[int | None]]:
    """Per slice position of the series: its file's header and its frame number (1-based) when the file
    is multi-frame, else None. Each file is read once (a multi-frame file's header stands for all its
    frames); the file of slice ``pixels_of`` (the overlay's key slice) is read whole."""
    import pydicom

    whole = series.slices[pixels_of].path if pixels_of is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        headers = {p: pydicom.dcmread(p, stop_before_pixels=p != whole, force=True) for p in series.files()}
    return [headers[s.path] for s in series.slices], [None if s.index is None else s.index + 1 for s in series.slices]


def _why_no_map(sources: list[Any], frames: list[int | None]) -> str | None:
    """Why no Parametric Map can reference these slices, or None when one can."""
    if "FrameOfReferenceUID" not in sources[0]:
        return "the series has no Frame of Reference UID, as projection radiographs often do"
    if any(f is not None for f in frames):
        from medic_ad.dicom_out.heatmap import frame_positions

        try:
            frame_positions(sources, frames)
        except ValueError as exc:  # its message names frames and attributes, never a value
            return str(exc)
    return None


class StoreError(RuntimeError):
    """The study's objects are written but were not stored; the study is not done (a rerun retries it).
    The message is the DICOMweb client's one line: URL and HTTP status, no patient field."""


@dataclass
class DicomOutput:
    """Writes each finished DICOM study's objects under ``out_dir`` through ``medic_ad.dicom_out`` and,
    with ``store``, sends them on (STOW-RS) before the study counts as done."""

    out_dir: Path
    writer: Callable[..., list[Path]]
    model_name: str
    model_version: str
    checkpoint_digest: str
    heatmaps: bool = False
    overlay: bool = False
    store: Callable[[list[Path]], Any] | None = None
    comparison_writer: Callable[..., Path] | None = None

    @classmethod
    def create(cls, out_dir: Path, *, model_name: str, model_version: str, checkpoint: str | Path | None,
               heatmaps: bool, overlay: bool = False,
               store: Callable[[list[Path]], Any] | None = None) -> "DicomOutput | None":
        """The output, or None (one log line) when the writers are not installed."""
        try:
            from medic_ad.dicom_out import write_comparison_objects, write_study_objects
        except ImportError:
            log.warning("DICOM output skipped: medic_ad.dicom_out (the SR / Parametric Map writers) is not installed")
            return None
        return cls(out_dir, write_study_objects, model_name, model_version, checkpoint_digest(checkpoint), heatmaps,
                   overlay, store, write_comparison_objects)

    def write(self, result: StudyResult, series: Series) -> list[Path]:
        """The study's objects (the writers write atomically), stored when asked; raises :class:`StoreError`.

        A NIfTI volume or a raster image gets none (no SOP Instance UIDs to reference), and a series
        without a Frame of Reference (a projection radiograph), or a multi-frame file that does not
        state each frame's position, no Parametric Map: one log line each. A multi-frame file's
        objects reference its SOP instance and the frames (ReferencedFrameNumber).
        """
        if result.status != "ok":
            return []
        if series.kind != "dicom":
            log.info("study %s: no DICOM objects for a %s input (it has no SOP Instance UIDs to reference)",
                     result.study_uid, "NIfTI" if series.kind == "nifti" else "raster image")
            return []
        with_maps = self.heatmaps and result.heatmaps is not None
        sources, frames = _source_slices(series, pixels_of=result.key_slice_index if self.overlay and with_maps
                                         else None)
        why_not = _why_no_map(sources, frames) if with_maps else None
        heatmaps = with_maps and why_not is None
        if with_maps and not heatmaps:
            log.info("study %s: no heatmap Parametric Map (%s); SR%s written", result.study_uid, why_not,
                     " and overlay" if self.overlay else "")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = self.writer(result, sources, self.out_dir, model_name=self.model_name,
                            model_version=self.model_version, checkpoint_digest=self.checkpoint_digest,
                            heatmaps=heatmaps, overlay=self.overlay and with_maps, frames=frames)
        self._store(paths)
        return paths

    def write_comparison(self, row: dict[str, Any], current: Series, prior: Series) -> Path | None:
        """The comparison SR of one ``comparisons.jsonl`` row, stored when asked (raises :class:`StoreError`);
        None for a failed row or a pair that is not two DICOM series."""
        if row.get("status") != "ok" or current.kind != "dicom" or prior.kind != "dicom":
            return None
        (now, now_frames), (before, before_frames) = _source_slices(current), _source_slices(prior)
        path = self.comparison_writer(row, now, before, self.out_dir, model_name=self.model_name,
                                      model_version=self.model_version, checkpoint_digest=self.checkpoint_digest,
                                      current_frames=now_frames, prior_frames=before_frames)
        self._store([path])
        return path

    def _store(self, paths: list[Path]) -> None:
        if self.store is None or not paths:
            return
        try:
            self.store(paths)
        except Exception as exc:  # DicomWebError's message is one PHI-free line; any other: its type only
            from medic_ad.pacs import DicomWebError

            raise StoreError(str(exc) if isinstance(exc, DicomWebError) else type(exc).__name__) from None
