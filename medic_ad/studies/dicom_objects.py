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


def _source_headers(series: Series, *, pixels_of: int | None = None) -> list[Any]:
    """The series' headers in slice order; slice ``pixels_of`` (the overlay's key slice) read whole."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [pydicom.dcmread(p, stop_before_pixels=i != pixels_of, force=True)
                for i, p in enumerate(series.files())]


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
        without a Frame of Reference (a projection radiograph) no Parametric Map: one log line each.
        """
        if result.status != "ok":
            return []
        if series.kind != "dicom":
            log.info("study %s: no DICOM objects for a %s input (it has no SOP Instance UIDs to reference)",
                     result.study_uid, "NIfTI" if series.kind == "nifti" else "raster image")
            return []
        with_maps = self.heatmaps and result.heatmaps is not None
        sources = _source_headers(series, pixels_of=result.key_slice_index if self.overlay and with_maps else None)
        heatmaps = with_maps and "FrameOfReferenceUID" in sources[0]
        if with_maps and not heatmaps:
            log.info("study %s: no heatmap Parametric Map (the series has no Frame of Reference UID, as "
                     "projection radiographs often do); SR%s written", result.study_uid,
                     " and overlay" if self.overlay else "")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = self.writer(result, sources, self.out_dir, model_name=self.model_name,
                            model_version=self.model_version, checkpoint_digest=self.checkpoint_digest,
                            heatmaps=heatmaps, overlay=self.overlay and with_maps)
        self._store(paths)
        return paths

    def write_comparison(self, row: dict[str, Any], current: Series, prior: Series) -> Path | None:
        """The comparison SR of one ``comparisons.jsonl`` row, stored when asked (raises :class:`StoreError`);
        None for a failed row or a pair that is not two DICOM series."""
        if row.get("status") != "ok" or current.kind != "dicom" or prior.kind != "dicom":
            return None
        path = self.comparison_writer(row, _source_headers(current), _source_headers(prior), self.out_dir,
                                      model_name=self.model_name, model_version=self.model_version,
                                      checkpoint_digest=self.checkpoint_digest)
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
