"""The answers a model gives: one type per question, carrying everything its one forward pass computed.

The model API, the service, the CLI and the REST API pass these same objects along; ``to_dict`` is
their JSON form (maps summarised, never written out as arrays). ``image``/``prior``/``current`` hold
the safe facts about an input that the service adds (format, size, modality; never a name or a
patient field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CHANGE_THRESHOLD", "Comparison", "Detection", "Explanation", "change_map"]

#: |current - prior| anomaly-map difference above which a pixel counts as worse / better in the summary.
CHANGE_THRESHOLD = 0.05


def _round(x: float) -> float:
    return round(float(x), 6)


@dataclass
class Detection:
    """"Is there any abnormality?": the answer (the chosen option verbatim, "Yes." / "No."),
    ``abnormal`` ⇔ ``score >= 0.5``, ``score`` = P(Yes) against P(No) of the first answer token.

    ``anomaly_map``: the fused anomaly map in [0, 1] (float32, the input's H × W) from the same
    forward pass, or None for a model without one (a bare backbone).
    """

    answer: str
    abnormal: bool
    score: float
    anomaly_map: np.ndarray | None = None
    image: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"answer": self.answer, "abnormal": self.abnormal, "score": _round(self.score)}
        if self.image is not None:
            out["image"] = self.image
        return out


@dataclass
class Explanation(Detection):
    """A detection with its heatmap: float32 in [0, 1] at the input's H × W, from the same forward pass."""

    heatmap: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        h = self.heatmap
        if h is not None:
            peak = np.unravel_index(int(np.argmax(h)), h.shape)
            out["heatmap"] = {"min": _round(h.min()), "max": _round(h.max()), "mean": _round(h.mean()),
                              "peak_row_col": [int(peak[0]), int(peak[1])]}
        return out


def change_map(prior_map: np.ndarray, current_map: np.ndarray) -> np.ndarray:
    """current - prior anomaly map, in [-1, 1] at the current map's size (positive: worse now)."""
    prior = np.asarray(prior_map, dtype=np.float32)
    current = np.asarray(current_map, dtype=np.float32)
    if prior.shape != current.shape:
        from PIL import Image

        prior = np.asarray(Image.fromarray(prior, mode="F").resize((current.shape[1], current.shape[0]),
                                                                   Image.BILINEAR), dtype=np.float32)
    return np.clip(current - prior, -1.0, 1.0)


@dataclass
class Comparison:
    """Worsened / improved / no change between a prior and a current study.

    ``answer``: the chosen option verbatim ("C: Worsened"); ``label``: its change; ``probs``: change →
    probability. ``prior_map`` / ``current_map``: each study's anomaly map in [0, 1] at its own size,
    from the same forward pass (None for a model without one).
    """

    answer: str
    label: str
    probs: dict[str, float]
    prior_map: np.ndarray | None = None
    current_map: np.ndarray | None = None
    prior: dict[str, Any] | None = None
    current: dict[str, Any] | None = None

    @property
    def change(self) -> np.ndarray | None:
        """current - prior anomaly map at the current study's size, in [-1, 1]."""
        if self.prior_map is None or self.current_map is None:
            return None
        return change_map(self.prior_map, self.current_map)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "answer": self.answer,
                               "probs": {k: _round(v) for k, v in self.probs.items()}}
        c = self.change
        if c is not None:
            out["change_map"] = {"min": _round(c.min()), "max": _round(c.max()), "mean": _round(c.mean()),
                                 "worse_fraction": _round((c > CHANGE_THRESHOLD).mean()),
                                 "better_fraction": _round((c < -CHANGE_THRESHOLD).mean())}
        for key in ("prior", "current"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out
