"""Synthetic control set and constructed longitudinal pairs: determinism, balance, masks, labels."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medic_ad.data.pairs import ChangePairs, apply_acquisition, make_change_pairs, remove_lesion
from medic_ad.data.registry import load_dataset
from medic_ad.data.schema import Sample
from medic_ad.data.synthetic import Acquisition, SyntheticControl


def _arrays(samples: list[Sample]) -> list[np.ndarray]:
    return [a for s in samples for a in (*s.images, *s.masks)]


def test_synthetic_is_deterministic_per_seed_and_index() -> None:
    a, b = SyntheticControl(64, seed=1), SyntheticControl(64, seed=1)
    for x, y in zip(_arrays(a.detection(6)), _arrays(b.detection(6))):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(_arrays(a.pairs(3)), _arrays(b.pairs(3))):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.pairs(9)[4].images[1], b.pairs(5)[4].images[1])  # independent of n
    other = SyntheticControl(64, seed=2).detection(6)
    assert not np.array_equal(other[1].images[0], a.detection(6)[1].images[0])


def test_synthetic_detection_balance_and_masks() -> None:
    samples = SyntheticControl(112, seed=0).detection(101)
    counts = Counter(s.label for s in samples)
    assert abs(counts["abnormal"] - counts["normal"]) <= 1
    for s in samples:
        image, mask = s.images[0], s.masks[0]
        assert image.shape == (112, 112) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert mask.any() == (s.label == "abnormal")
    contrasts = []
    for s in samples:
        if s.label == "abnormal":
            image, mask = s.images[0], s.masks[0].astype(bool)
            ring = np.zeros_like(mask)
            ys, xs = np.nonzero(mask)
            ring[max(ys.min() - 4, 0) : ys.max() + 5, max(xs.min() - 4, 0) : xs.max() + 5] = True
            contrasts.append(abs(image[mask].mean() - image[ring & ~mask].mean()))
    assert np.mean(contrasts) > 0.08  # lesions are visible where their masks say
    assert all(s.label == "abnormal" and s.masks[0].any() for s in SyntheticControl(64).segmentation(5))


def test_synthetic_pairs_balance_and_change_direction() -> None:
    pairs = SyntheticControl(112, seed=0).pairs(60)
    assert Counter(s.change for s in pairs) == {"worsened": 20, "improved": 20, "no change": 20}
    for s in pairs:
        prior_area, current_area = (int(m.sum()) for m in s.masks)
        assert prior_area > 0
        if s.change == "worsened":
            assert current_area > 1.3 * prior_area
        elif s.change == "improved":
            assert current_area < 0.8 * prior_area
        else:
            assert current_area == pytest.approx(prior_area, rel=0.2, abs=6)
        assert s.meta["acquisition"][0] != s.meta["acquisition"][1]
    assert Counter(s.change for s in SyntheticControl(32).pairs(31)).most_common()[-1][1] == 10


def test_synthetic_speed() -> None:
    gen = SyntheticControl(112, seed=0)
    start = time.perf_counter()
    gen.detection(100)
    gen.pairs(50)
    per_second = 200 / (time.perf_counter() - start)
    assert per_second > 60, f"{per_second:.0f} images/s"  # ~400/s on one idle core; loose for shared CI


# ------------------------------------------------------------------ pairs from real masks


def test_remove_lesion_fills_from_the_surroundings() -> None:
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    background = 0.2 + 0.004 * xx + 0.002 * yy
    mask = ((yy - 30) ** 2 + (xx - 34) ** 2 <= 8**2).astype(np.uint8)
    image = np.where(mask, 0.9, background).astype(np.float32)
    out = remove_lesion(image, mask, rng=np.random.default_rng(0))
    inside = mask.astype(bool)
    assert np.abs(out[inside] - background[inside]).mean() < 0.03
    far = np.ones_like(inside)
    far[12:50, 16:54] = False
    np.testing.assert_array_equal(out[far], image[far])  # untouched away from the lesion
    half = remove_lesion(image, mask, rng=np.random.default_rng(0), strength=0.5)
    assert out[inside].mean() < half[inside].mean() < image[inside].mean()
    np.testing.assert_array_equal(remove_lesion(image, np.zeros_like(mask), rng=np.random.default_rng(0)), image)


def test_apply_acquisition_identity_and_alignment() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((32, 40)).astype(np.float32)
    mask = np.zeros((32, 40), np.uint8)
    mask[10:20, 5:15] = 1
    same_image, same_mask = apply_acquisition(image, mask, Acquisition(), rng)
    np.testing.assert_allclose(same_image, image, atol=1e-6)
    np.testing.assert_array_equal(same_mask, mask)
    moved_image, moved_mask = apply_acquisition(image, mask, Acquisition(shift=(0.1, 0.0)), rng)
    assert moved_mask.sum() == mask.sum() and np.nonzero(moved_mask)[1].min() == 5 + 2  # 0.1 * 20 px


def _sources(tmp_path: Path) -> list[Sample]:
    out = []
    for i, centre in enumerate(((20, 20), (40, 30))):
        yy, xx = np.mgrid[0:64, 0:64]
        mask = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= 36).astype(np.uint8)
        image = np.where(mask, 0.8, 0.3).astype(np.float32)
        out.append(Sample(id=f"src/{i}", images=[image], masks=[mask], label="abnormal", dataset="src", split="train"))
    return out


def test_change_pairs_are_labelled_by_construction(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    pairs = ChangePairs(sources, seed=5)
    assert len(pairs) == 6 and [p.change for p in pairs] == ["worsened", "improved", "no change"] * 2
    for p in pairs:
        prior_mask, current_mask = p.masks
        if p.change == "worsened":
            assert not prior_mask.any() and current_mask.any() and p.label == "abnormal"
        elif p.change == "improved":
            assert prior_mask.any() and not current_mask.any() and p.label == "normal"
        else:
            assert prior_mask.any() == current_mask.any()
        assert p.split == "train" and p.group == p.meta["source"] and p.dataset == "src_pairs"
        assert all(img.dtype == np.float32 and img.shape == (64, 64) for img in p.images)
    again = make_change_pairs(sources, seed=5)
    for x, y in zip(_arrays(list(pairs)), _arrays(again)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(pairs[-1].images[0], pairs[5].images[0])
    with pytest.raises(IndexError):
        pairs[6]
    empty = Sample(id="e", images=[np.zeros((8, 8), np.float32)], masks=[np.zeros((8, 8), np.uint8)], dataset="e")
    with pytest.raises(ValueError, match="mask is empty"):
        ChangePairs([empty])


def test_change_pairs_on_real_masks(shared_data: Path) -> None:
    sources = list(load_dataset(shared_data / "br35h_masks", split="val"))[:2]
    pairs = ChangePairs(sources, seed=0, strength=(0.8, 1.0))
    built = list(pairs)
    assert Counter(p.change for p in built) == {"worsened": 2, "improved": 2, "no change": 2}
    for p in built:
        assert p.images[0].shape == p.images[1].shape == p.masks[0].shape
        assert p.group == sources[0].id or p.group == sources[1].id  # br35h_masks rows carry no group
