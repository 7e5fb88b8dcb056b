"""Sample validation and group-aware splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medic_ad.data.schema import Sample
from medic_ad.data.splits import assert_disjoint_groups, by_split, canonical_split, group_split


def test_sample_defaults_and_coercion() -> None:
    s = Sample(id="x/1", images=["a.png"], dataset="x")
    assert s.images == [Path("a.png")] and s.masks == [None] and s.meta == {}
    assert not s.is_pair and not s.has_mask
    pair = Sample(
        id="x/2",
        images=[np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.float32)],
        masks=[None, np.zeros((4, 4), np.uint8)],
        change="worsened",
        options={"A": "No significant change", "C": "Worsened"},
        answer="C",
        dataset="x",
    )
    assert pair.is_pair and pair.has_mask


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"images": []}, "1 or 2 images"),
        ({"images": ["a", "b", "c"]}, "1 or 2 images"),
        ({"images": "a.png"}, "list of one or two"),
        ({"label": "sick"}, "label must be one of"),
        ({"change": "worse"}, "change must be one of"),
        ({"change": "worsened"}, "needs two images"),
        ({"masks": [None, None]}, "2 masks for 1 images"),
        ({"options": {"A": "x"}, "answer": "B"}, "not one of the options"),
        ({"id": ""}, "non-empty"),
        ({"dataset": ""}, "non-empty"),
        ({"images": [np.zeros((2, 2, 2))]}, "H x W"),
        ({"masks": [np.zeros((2, 2, 3))]}, "H x W"),
        ({"images": [3]}, "path or a numpy array"),
        ({"question": 3}, "must be a string"),
    ],
)
def test_sample_validation(kwargs: dict, error: str) -> None:
    base = {"id": "x/1", "images": ["a.png"], "dataset": "x"}
    with pytest.raises((ValueError, TypeError), match=error):
        Sample(**{**base, **kwargs})


def _samples(n_groups: int, per_group: int) -> list[Sample]:
    out = []
    for g in range(n_groups):
        for k in range(per_group + g % 3):
            label = "abnormal" if g % 2 else "normal"
            out.append(Sample(id=f"t/{g}/{k}", images=[f"{g}_{k}.png"], label=label, dataset="t", group=f"g{g}"))
    return out


def test_group_split_never_splits_a_group_and_is_deterministic() -> None:
    samples = _samples(60, 3)
    parts = group_split(samples, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=7)
    assert_disjoint_groups(parts)
    assert sum(len(v) for v in parts.values()) == len(samples)
    assert all(s.split == name for name, part in parts.items() for s in part)
    again = group_split(samples, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=7)
    assert {k: [s.id for s in v] for k, v in parts.items()} == {k: [s.id for s in v] for k, v in again.items()}
    other = group_split(samples, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=8)
    assert [s.id for s in other["val"]] != [s.id for s in parts["val"]]
    assert len(parts["train"]) == pytest.approx(0.6 * len(samples), rel=0.1)


def test_ungrouped_samples_are_their_own_group() -> None:
    samples = [Sample(id=f"u/{i}", images=["a.png"], dataset="u") for i in range(10)]
    parts = group_split(samples, {"train": 0.5, "val": 0.5}, stratify=False)
    assert len(parts["train"]) == len(parts["val"]) == 5


def test_by_split_and_leak_detection() -> None:
    a = Sample(id="a", images=["a.png"], dataset="d", split="train", group="g1")
    b = Sample(id="b", images=["b.png"], dataset="d", split="val", group="g1")
    with pytest.raises(ValueError, match="g1 in train/val"):
        by_split([a, b])
    with pytest.raises(ValueError, match="has no split"):
        by_split([Sample(id="c", images=["c.png"], dataset="d")])
    with pytest.raises(ValueError, match="fractions"):
        group_split([a], {"train": -1.0})


def test_canonical_split_names() -> None:
    assert [canonical_split(n) for n in ("Train", "valid", "validation", "validate", "val", "test", "dev")] == [
        "train", "val", "val", "val", "val", "test", "dev"
    ]
