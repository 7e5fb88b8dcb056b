"""What the service answers for one uploaded study: the study row, the scored slices, their overlays.

:class:`ServedStudy` wraps the archive job's :class:`~medic_ad.studies.result.StudyResult` with
what a person looking at the study needs: the scored slices' pixels (8-bit grey, kept after the
upload's files are deleted) and heatmaps, so any slice's overlay can be drawn again at another
opacity without a model call. It carries UIDs, scores and counts only: no file name, no patient
field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medic_ad.studies.result import StudyResult

__all__ = ["ServedStudy"]


@dataclass
class ServedStudy:
    """``images[k]`` and ``heatmaps[k]`` belong to the series position ``result.slice_indices[k]``.

    ``series_found``: series of the study in the upload (the largest, or the one named, was read);
    ``files_read`` / ``files_skipped``: uploaded files (zip members counted) that were, and were not,
    images of the study; ``notes``: one line each about what was chosen or skipped.
    """

    result: StudyResult
    score_rule: str
    modality: str | None
    images: list[np.ndarray]
    heatmaps: list[np.ndarray] | None = None
    series_found: int = 1
    files_read: int = 0
    files_skipped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> int:
        """Index into the scored slices of the key slice."""
        return self.result.slice_indices.index(self.result.key_slice_index)

    @property
    def verdict(self) -> str:
        return "abnormal" if self.result.abnormal else "normal"

    def slice_title(self, k: int) -> str:
        position, score = self.result.slice_indices[k], self.result.slice_scores[k]
        key = ", key slice" if k == self.key else ""
        return f"slice {position} of 0\u2013{self.result.n_slices - 1}{key}: score {score:.3f}"

    def overlay_png(self, k: int, *, alpha: float = 0.5) -> bytes:
        """PNG: the heatmap of scored slice ``k`` over it, titled with its position and score."""
        from medic_ad.serve.overlay import overlay_png

        if self.heatmaps is None:
            raise ValueError("this study was scored without heatmaps")
        return overlay_png(self.images[k], self.heatmaps[k], alpha=alpha, title=self.slice_title(k))

    def to_dict(self) -> dict[str, Any]:
        """The ``studies.jsonl`` row, then the answer, the per-slice scores and what the upload held."""
        r = self.result
        return {
            **r.row(),
            "answer": r.answer,
            "modality": self.modality,
            "score_rule": self.score_rule,
            "slices": [{"index": p, "score": s} for p, s in zip(r.slice_indices, r.slice_scores)],
            "series_found": self.series_found,
            "files_read": self.files_read,
            "files_skipped": self.files_skipped,
            "notes": list(self.notes),
        }
