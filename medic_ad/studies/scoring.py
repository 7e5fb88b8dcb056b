"""Which slices a study's model pass sees, and how their scores make the study's score and key slice."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ScoreRule", "parse_slices", "pick_slices"]


def parse_slices(text: str | int) -> int | None:
    """``"all"`` → None (every slice); ``"N"`` → N evenly spaced slices (N ≥ 1)."""
    if isinstance(text, int) or str(text).strip().lower() != "all":
        try:
            n = int(text)
        except ValueError:
            raise ValueError(f"--slices must be 'all' or a number of slices, got {text!r}") from None
        if n < 1:
            raise ValueError(f"--slices must be at least 1, got {n}")
        return n
    return None


def pick_slices(n_slices: int, count: int | None) -> list[int]:
    """Positions of ``count`` slices evenly spaced over ``n_slices`` (first and last included), or all."""
    if count is None or count >= n_slices:
        return list(range(n_slices))
    if count == 1:
        return [n_slices // 2]
    return sorted({int(round(x)) for x in np.linspace(0, n_slices - 1, count)})


@dataclass(frozen=True)
class ScoreRule:
    """``max``: the highest slice score; ``topk_mean:K``: the mean of the K highest (fewer slices: all).

    The key slice is the highest-scoring slice either way.
    """

    kind: str = "max"
    k: int = 1

    @classmethod
    def parse(cls, text: str) -> "ScoreRule":
        spec = str(text).strip().lower()
        if spec == "max":
            return cls("max", 1)
        name, sep, k = spec.partition(":")
        if name == "topk_mean" and sep:
            try:
                value = int(k)
            except ValueError:
                value = 0
            if value >= 1:
                return cls("topk_mean", value)
        raise ValueError(f"--score must be 'max' or 'topk_mean:K' with K ≥ 1, got {text!r}")

    def __str__(self) -> str:
        return "max" if self.kind == "max" else f"topk_mean:{self.k}"

    def apply(self, scores: list[float]) -> tuple[float, int]:
        """(study score, index into ``scores`` of the key slice)."""
        if not scores:
            raise ValueError("no slice scores")
        arr = np.asarray(scores, dtype=np.float64)
        key = int(np.argmax(arr))  # first of equal maxima: the most inferior / earliest slice
        if self.kind == "max":
            return float(arr[key]), key
        top = np.sort(arr)[::-1][: self.k]
        return float(top.mean()), key
