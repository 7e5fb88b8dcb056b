"""Longitudinal compare on studies: a patient's prior and current paired by StudyDate, key regions compared.

Pairs come from one run's series (each patient's studies in date order, each with the one before
it) or are named by study UID. A study is represented by its series with the most slices. The
current's key slice (from its ``studies.jsonl`` row) is compared with the prior's slice at the
closest table position (position along the slice normal), so the same region is compared even when
the two series cover different ranges. The patient is matched through a hash held in memory only;
the rows name studies and series by UID, nothing else.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from medic_ad.serve.sanity import SanityError, check_pair
from medic_ad.studies.dataset import decode_slice
from medic_ad.studies.series import Series

if TYPE_CHECKING:
    from medic_ad.models.interface import MedicalVLM

__all__ = ["COMPARISONS", "Pair", "compare_pairs", "comparison_key", "matching_slice", "pair_by_date",
           "pair_named"]

#: the name of the comparison records (``comparisons.jsonl``)
COMPARISONS = "comparisons"


@dataclass(frozen=True)
class Pair:
    prior: Series
    current: Series

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.current.study_uid, self.current.series_uid, self.prior.study_uid, self.prior.series_uid)


def comparison_key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return (str(row["current_study_uid"]), str(row["current_series_uid"]), str(row["prior_study_uid"]),
            str(row["prior_series_uid"]))


def _by_study(series: Sequence[Series]) -> dict[str, Series]:
    """study UID → its series with the most slices (ties: the lowest series UID)."""
    best: dict[str, Series] = {}
    for s in sorted(series, key=lambda s: (-s.n_slices, s.series_uid)):
        best.setdefault(s.study_uid, s)
    return best


def pair_by_date(series: Sequence[Series]) -> list[Pair]:
    """Each patient's studies with a StudyDate, in date order, each paired with the one before it."""
    per_patient: dict[str, list[Series]] = defaultdict(list)
    for s in _by_study(series).values():
        if s.patient_key and s.study_date:
            per_patient[s.patient_key].append(s)
    pairs = []
    for studies in per_patient.values():
        studies.sort(key=lambda s: (s.study_date, s.study_uid))
        pairs += [Pair(a, b) for a, b in zip(studies, studies[1:]) if a.study_date != b.study_date]
    return sorted(pairs, key=lambda p: p.key)


def pair_named(series: Sequence[Series], prior_uid: str, current_uid: str) -> Pair:
    """The pair named by study UIDs; one readable error when either is not among the inputs."""
    studies = _by_study(series)
    for role, uid in (("prior", prior_uid), ("current", current_uid)):
        if uid not in studies:
            raise ValueError(f"--{role} {uid}: no such study among the inputs")
    return Pair(studies[prior_uid], studies[current_uid])


def matching_slice(prior: Series, current: Series, current_index: int) -> tuple[int, str | None]:
    """The prior's slice at the table position closest to the current's slice ``current_index``;
    without positions, the same fraction of the way through the series (and the reason)."""
    target = current.slices[current_index].position
    positions = [s.position for s in prior.slices]
    if target is not None and all(p is not None for p in positions):
        return int(np.argmin([abs(p - target) for p in positions])), None
    frac = current_index / max(1, current.n_slices - 1)
    return int(round(frac * (prior.n_slices - 1))), "prior slice matched by relative index: no slice positions"


def compare_pairs(model: "MedicalVLM", pairs: Sequence[Pair], key_slices: dict[tuple[str, str], int], *,
                  window: tuple[float, float] | None, batch_size: int = 8) -> list[dict[str, Any]]:
    """One ``comparisons.jsonl`` row per pair: the change label and its probabilities, both studies' UIDs
    and the two slices compared; ``failed`` (with the reason) when a slice cannot be read or the current
    study has no key slice."""
    rows: list[dict[str, Any]] = []
    ready: list[tuple[dict[str, Any], Any, Any]] = []
    for pair in pairs:
        row: dict[str, Any] = {
            "current_study_uid": pair.current.study_uid, "current_series_uid": pair.current.series_uid,
            "prior_study_uid": pair.prior.study_uid, "prior_series_uid": pair.prior.series_uid,
            "current_slice_index": None, "prior_slice_index": None, "label": None, "probs": None,
            "status": "failed", "reason": None,
        }
        rows.append(row)
        key = key_slices.get((pair.current.study_uid, pair.current.series_uid))
        if key is None:
            row["reason"] = "the current study has no key slice (it failed or was not run)"
            continue
        prior_index, reason = matching_slice(pair.prior, pair.current, key)
        row.update(current_slice_index=key, prior_slice_index=prior_index, reason=reason)
        try:
            current = decode_slice(pair.current, pair.current.slices[key], window)
            prior = decode_slice(pair.prior, pair.prior.slices[prior_index], window)
        except (OSError, ValueError) as exc:
            row["reason"] = f"cannot read a compared slice ({type(exc).__name__})"
            continue
        try:
            check_pair(prior, current)
        except SanityError as exc:  # its message names codes only (modality, orientation)
            row["reason"] = exc.message
            continue
        ready.append((row, prior, current))
    for start in range(0, len(ready), batch_size):
        chunk = ready[start:start + batch_size]
        results = model.compare([p for _, p, _ in chunk], [c for _, _, c in chunk], batch_size=batch_size)
        for (row, _, _), r in zip(chunk, results):
            row.update(label=r.label, probs={k: round(float(v), 6) for k, v in r.probs.items()}, status="ok")
    return rows
