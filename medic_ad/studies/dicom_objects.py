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

__all__ = ["DicomOutput", "checkpoint_digest"]

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


def _source_headers(series: Series) -> list[Any]:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [pydicom.dcmread(p, stop_before_pixels=True, force=True) for p in series.files()]


@dataclass
class DicomOutput:
    """Writes each finished DICOM study's objects under ``out_dir`` through ``medic_ad.dicom_out``."""

    out_dir: Path
    writer: Callable[..., list[Path]]
    model_name: str
    model_version: str
    checkpoint_digest: str
    heatmaps: bool = False

    @classmethod
    def create(cls, out_dir: Path, *, model_name: str, model_version: str, checkpoint: str | Path | None,
               heatmaps: bool) -> "DicomOutput | None":
        """The output, or None (one log line) when the writers are not installed."""
        try:
            from medic_ad.dicom_out import write_study_objects
        except ImportError:
            log.warning("DICOM output skipped: medic_ad.dicom_out (the SR / Parametric Map writers) is not installed")
            return None
        return cls(out_dir, write_study_objects, model_name, model_version, checkpoint_digest(checkpoint), heatmaps)

    def write(self, result: StudyResult, series: Series) -> list[Path]:
        """The study's objects (the writers write atomically); nothing for a NIfTI or raster series."""
        if series.kind != "dicom" or result.status != "ok":
            return []
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.writer(result, _source_headers(series), self.out_dir, model_name=self.model_name,
                           model_version=self.model_version, checkpoint_digest=self.checkpoint_digest,
                           heatmaps=self.heatmaps and result.heatmaps is not None)
