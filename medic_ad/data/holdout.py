"""Patient-level separation of training data from every evaluation set, across datasets.

Two datasets can hold the same patient under different names: MIMIC-Diff-VQA's training questions
and MMXU's test questions are both drawn from MIMIC-CXR. Adapters that know a patient write a
dataset-independent key into ``meta["patient"]`` (``mimic-cxr/p<subject>``, ``bmad/<set>/<volume>``);
a sample without one is keyed by its image files, so a training source and an evaluation set that
read the same files still collide. Keys are compared, never logged: reports carry counts and
SHA-1 digests only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medic_ad.data.schema import Sample

__all__ = ["Holdout", "key_digest", "patient_keys"]


def patient_keys(sample: Sample) -> list[str]:
    """The keys under which ``sample`` counts as one patient (its image files when no patient is known)."""
    patient = sample.meta.get("patient")
    if isinstance(patient, str) and patient:
        return [patient]
    return [f"image:{Path(p).resolve()}" for p in sample.images if isinstance(p, Path)]


def key_digest(key: str) -> str:
    """A short stable digest of a patient key, safe to write into summaries."""
    return hashlib.sha1(key.encode()).hexdigest()[:16]


@dataclass
class Holdout:
    """The patient keys of the evaluation sets, and what dropping them cost each training source."""

    keys: set[str] = field(default_factory=set)
    sets: list[dict] = field(default_factory=list)

    def add(self, samples: Iterable[Sample], *, name: str, root: str | None, split: str | None) -> None:
        """Add the patients of one evaluation set."""
        found: set[str] = set()
        n = 0
        for s in samples:
            n += 1
            found.update(patient_keys(s))
        self.keys |= found
        self.sets.append({"name": name, "root": root, "split": split, "samples": n, "patients": len(found)})

    def holds(self, sample: Sample) -> bool:
        """Whether ``sample`` shares a patient with an evaluation set."""
        return bool(self.keys) and any(k in self.keys for k in patient_keys(sample))

    def drop(self, samples: Sequence[Sample]) -> tuple[list[Sample], int]:
        """``samples`` without those of evaluation patients, and how many were dropped."""
        kept = [s for s in samples if not self.holds(s)]
        return kept, len(samples) - len(kept)

    def digests(self) -> list[str]:
        return sorted(key_digest(k) for k in self.keys)
