"""Group-aware splits: no group (patient, near-duplicate cluster) ever spans two splits.

Br35H holds many neighbouring slices of one patient without patient ids; its ``labels.csv`` gives
a near-duplicate ``group`` and a group-wise ``split`` column, which :func:`by_split` honours.
Datasets without a split use :func:`group_split`; samples without a group count as their own group.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from medic_ad.data.schema import Sample

__all__ = ["assert_disjoint_groups", "by_split", "canonical_split", "group_split"]

_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def canonical_split(name: str) -> str:
    """``"train"``/``"val"``/``"test"`` for common spellings (valid, validation, ...); others lower-cased."""
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def _group_of(sample: Sample) -> str:
    return sample.group if sample.group is not None else f"__sample__/{sample.id}"


def by_split(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    """Samples keyed by their own ``split`` field (as the dataset defines it).

    Raises:
        ValueError: some samples have no split, or a group spans two splits.
    """
    out: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.split is None:
            raise ValueError(f"{s.id}: sample has no split; use group_split for this dataset")
        out[s.split].append(s)
    assert_disjoint_groups(out)
    return dict(out)


def group_split(
    samples: Sequence[Sample],
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    *,
    stratify: bool = True,
) -> dict[str, list[Sample]]:
    """Split ``samples`` so that no group lands in two splits.

    Groups are shuffled with ``seed`` and each is given to the split furthest below its target
    sample count, so split sizes follow ``fractions`` as closely as whole groups allow. With
    ``stratify`` this runs separately per majority label (or change label), keeping class balance.
    Samples come back with ``split`` set.

    Args:
        samples: the samples to split.
        fractions: split name -> fraction (normalised to sum 1); default train 0.8 / val 0.2.
        seed: shuffling seed; the same seed gives the same split.
        stratify: balance labels across splits.
    """
    fractions = dict(fractions or {"train": 0.8, "val": 0.2})
    if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"fractions must be non-negative and not all zero, got {fractions}")
    total = sum(fractions.values())
    names = list(fractions)
    share = {n: fractions[n] / total for n in names}

    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[_group_of(s)].append(s)
    strata: dict[str, list[str]] = defaultdict(list)
    for key in sorted(groups):
        members = groups[key]
        if stratify:
            labels = Counter(str(s.change or s.label) for s in members)
            stratum = max(sorted(labels), key=lambda k: labels[k])
        else:
            stratum = ""
        strata[stratum].append(key)

    rng = random.Random(seed)
    assigned: dict[str, list[Sample]] = {n: [] for n in names}
    for stratum in sorted(strata):
        keys = strata[stratum]
        rng.shuffle(keys)
        size = sum(len(groups[k]) for k in keys)
        count = dict.fromkeys(names, 0)
        for key in keys:
            # the split furthest below its target, ties broken by the order of ``fractions``
            target = max(names, key=lambda n: (share[n] * size - count[n], -names.index(n)))
            count[target] += len(groups[key])
            assigned[target].extend(dataclasses.replace(s, split=target) for s in groups[key])
    assert_disjoint_groups(assigned)
    return assigned


def assert_disjoint_groups(splits: Mapping[str, Iterable[Sample]]) -> None:
    """Raise ``ValueError`` naming the groups that appear in more than one split."""
    where: dict[str, set[str]] = defaultdict(set)
    for name, members in splits.items():
        for s in members:
            if s.group is not None:
                where[s.group].add(name)
    leaks = {g: sorted(n) for g, n in where.items() if len(n) > 1}
    if leaks:
        shown = ", ".join(f"{g} in {'/'.join(n)}" for g, n in sorted(leaks.items())[:5])
        raise ValueError(f"{len(leaks)} group(s) span several splits: {shown}")
