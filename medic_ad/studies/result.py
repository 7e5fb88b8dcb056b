"""What one study's prediction is: the record ``medic-ad predict`` writes and the DICOM writers read.

It holds identifiers (UIDs) and model outputs only, never a patient field: it is what goes to
``studies.jsonl``, to logs and to error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["JSONL_FIELDS", "StudyResult"]

#: the columns of one ``studies.jsonl`` row, in order
JSONL_FIELDS = ("study_uid", "series_uid", "n_slices", "score", "abnormal", "key_slice_index", "key_sop_uid",
                "status", "reason")


@dataclass
class StudyResult:
    """One study (one series of it) as the model saw it.

    ``slice_indices``: the positions (in the ordered series) of the slices that were scored;
    ``slice_scores``: P(abnormal) of each of them; ``score``: the study score from them (max or top-k
    mean); ``key_slice_index``: the position of the slice that decided it, ``key_sop_uid`` its SOP
    Instance UID (None for a NIfTI volume). ``heatmaps``: (len(slice_indices), H, W) float32 in [0, 1]
    when asked for. ``status``: ``ok`` or ``failed`` (then ``reason`` says why, in words that carry no
    patient field).
    """

    study_uid: str
    series_uid: str
    n_slices: int
    score: float | None = None
    abnormal: bool | None = None
    key_slice_index: int | None = None
    key_sop_uid: str | None = None
    answer: str | None = None
    slice_indices: list[int] = field(default_factory=list)
    slice_scores: list[float] = field(default_factory=list)
    heatmaps: np.ndarray | None = None
    status: str = "ok"
    reason: str | None = None

    def row(self) -> dict[str, Any]:
        """The ``studies.jsonl`` row: exactly :data:`JSONL_FIELDS`."""
        return {k: getattr(self, k) for k in JSONL_FIELDS}
