"""A model with no network that implements the interface: it runs the evaluation and serving paths in tests.

Its answers follow the images' brightness, so pipelines built on it have something real to score
(lm-evaluation-harness keeps such a dummy for the same reason):

* one image: P(first option) = the image's mean grey level in [0, 1] (a bright image reads abnormal);
  its anomaly map and heatmap are the pixels brighter than 0.5;
* two images: the option naming "worsened" when the current image is brighter than the prior by more
  than 0.02, "improved" when darker, else "no change" (found by its words, whatever its letter).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medic_ad.data.templates import ChatExample
from medic_ad.models.interface import Choice, MedicalVLM, load_pil, register_model

__all__ = ["DummyModel"]

_CHANGE_WORDS = {"worsened": ("worse",), "improved": ("improv", "better"), "no change": ("no ", "unchanged", "same")}
_MARGIN = 0.02


@register_model("dummy")
class DummyModel(MedicalVLM):
    """``answers`` overrides the text of every answer (e.g. an unparseable one); ``calls`` counts batches."""

    has_heatmaps = True

    def __init__(self, answers: str | None = None, *, free_answer: str = "The liver.") -> None:
        self.answers = answers
        self.free_answer = free_answer
        self.calls = 0

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", dtype: Any = "auto") -> "DummyModel":
        return cls()

    def choose(self, examples: Sequence[ChatExample], options: Sequence[str], *, max_new_tokens: int = 8,
               force: bool = True, heatmaps: bool = False) -> list[Choice]:
        self.calls += 1
        rows = []
        for ex in examples:
            grey = [np.asarray(load_pil(x).convert("L"), dtype=np.float32) / 255.0 for x in ex.images]
            if len(grey) == 1:
                p = float(np.clip(grey[0].mean(), 1e-4, 1 - 1e-4))
                probs = [p, 1 - p] + [0.0] * (len(options) - 2)
            else:
                probs = _change_probs(float(grey[1].mean() - grey[0].mean()), options)
            chosen = int(np.argmax(probs))
            answer = self.answers if self.answers is not None else options[chosen] if force else self.free_answer
            maps = [(g > 0.5).astype(np.float32) for g in grey]
            rows.append(Choice(answer=answer, chosen=chosen, probs=probs, anomaly_maps=maps,
                               heatmaps=[m.copy() for m in maps] if heatmaps else None))
        return rows

    def answer(self, examples: Sequence[ChatExample], *, max_new_tokens: int = 32) -> list[str]:
        self.calls += 1
        return [self.answers if self.answers is not None else self.free_answer for _ in examples]


def _change_probs(brighter: float, options: Sequence[str]) -> list[float]:
    change = "worsened" if brighter > _MARGIN else "improved" if brighter < -_MARGIN else "no change"
    words = _CHANGE_WORDS[change]
    logits = np.array([5.0 if any(w in o.lower() for w in words) else 0.0 for o in options])
    e = np.exp(logits - logits.max())
    return (e / e.sum()).tolist()
