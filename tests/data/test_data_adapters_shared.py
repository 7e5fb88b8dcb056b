"""Every folder of the real shared data loads through its adapter with the counts its README gives."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from medic_ad.data.registry import detect_format, get_dataset, load_dataset
from medic_ad.data.splits import assert_disjoint_groups, by_split, group_split

# folder -> (format, samples, labels, splits)
EXPECTED = {
    "br35h": ("image_folder", 2328, {"abnormal": 1211, "normal": 1117}, {"train": 1862, "val": 466}),
    "br35h_masks": ("image_mask", 727, {"abnormal": 727}, {"train": 586, "val": 141}),
    "figshare_masks": ("image_mask", 1200, {"abnormal": 1200}, {None: 1200}),
    "head_ct_dev": ("image_folder", 40, {"abnormal": 20, "normal": 20}, {None: 40}),
    "brain_mri_dev": ("image_folder", 40, {"abnormal": 20, "normal": 20}, {None: 40}),
    "covid_cxr_dev": ("image_folder", 10, {"abnormal": 5, "normal": 5}, {None: 10}),
    "cxr_pairs": ("cxr_pairs", 171, {None: 171}, {"train": 140, "val": 31}),
}


def test_every_shared_folder_is_covered(shared_data: Path) -> None:
    folders = {p.name for p in shared_data.iterdir() if p.is_dir()}
    assert folders == set(EXPECTED), "a new shared folder needs its expected counts here"


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_shared_folder_counts(shared_data: Path, folder: str) -> None:
    fmt, total, labels, splits = EXPECTED[folder]
    root = shared_data / folder
    assert detect_format(root) == fmt
    samples = load_dataset(root)
    assert len(samples) == total
    assert samples.report.loaded == total and not samples.report.skipped
    assert Counter(s.label for s in samples) == labels
    assert Counter(s.split for s in samples) == splits
    assert len({s.id for s in samples}) == total
    for s in samples:  # lazy: paths, not pixels
        assert all(isinstance(p, Path) and p.is_file() for p in s.images)
        assert all(m is None or (isinstance(m, Path) and m.is_file()) for m in s.masks)
        assert s.dataset == folder


def test_mask_folders_have_a_mask_per_image(shared_data: Path) -> None:
    for folder in ("br35h_masks", "figshare_masks"):
        samples = load_dataset(shared_data / folder)
        assert all(s.has_mask for s in samples)


def test_split_filter_and_aliases(shared_data: Path) -> None:
    adapter = get_dataset("image_folder")
    assert len(adapter.load(shared_data / "br35h", split="train")) == 1862
    assert len(adapter.load(shared_data / "br35h", split="validation")) == 466


def test_br35h_groups_never_span_two_splits(shared_data: Path) -> None:
    samples = load_dataset(shared_data / "br35h")
    assert len({s.group for s in samples}) == 1145
    splits = by_split(samples)  # raises if the split column let a group leak
    assert {k: len(v) for k, v in splits.items()} == {"train": 1862, "val": 466}
    train_groups = {s.group for s in splits["train"]}
    assert not train_groups & {s.group for s in splits["val"]}

    resplit = group_split(samples, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=3)
    assert_disjoint_groups(resplit)
    sizes = {k: len(v) for k, v in resplit.items()}
    assert sum(sizes.values()) == 2328
    assert sizes["train"] == pytest.approx(0.7 * 2328, rel=0.03)
    assert sizes["test"] == pytest.approx(0.15 * 2328, rel=0.1)
    for part in resplit.values():  # stratified: each split keeps the label balance
        share = sum(s.label == "abnormal" for s in part) / len(part)
        assert share == pytest.approx(1211 / 2328, abs=0.04)


def test_cxr_pairs_meta_and_privacy(shared_data: Path) -> None:
    samples = load_dataset(shared_data / "cxr_pairs")
    assert len({s.group for s in samples}) == 94
    assert all(s.is_pair and s.change is None for s in samples)
    first = samples[0]
    assert set(first.meta) == {"view", "finding", "prior_offset_days", "current_offset_days", "image_license"}
    assert first.meta["view"] in {"AP", "PA", "AP Supine"} and isinstance(first.meta["prior_offset_days"], float)
    with_notes = get_dataset("cxr_pairs").load(shared_data / "cxr_pairs", include_notes=True)
    assert "clinical_notes" in with_notes[0].meta
