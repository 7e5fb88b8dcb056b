"""Mixture sources: the label filter and the control's abnormal fraction."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medic_ad.training.config import DataSource
from medic_ad.training.mixture import load_source


@pytest.fixture()
def labelled_folder(tmp_path):
    """An image_folder tree with 3 normal ('no') and 2 abnormal ('yes') images."""
    rng = np.random.default_rng(0)
    for label, n in (("no", 3), ("yes", 2)):
        (tmp_path / label).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / label / f"{label}{i}.png")
    return tmp_path


@pytest.mark.parametrize("label, n", [("normal", 3), ("abnormal", 2), (None, 5)])
def test_label_keeps_only_that_image_label(labelled_folder, label, n):
    samples = load_source(DataSource(name="image_folder", root=str(labelled_folder), label=label))
    assert len(samples) == n
    if label:
        assert {s.label for s in samples} == {label}


def test_label_that_matches_nothing_is_the_empty_dataset_error(labelled_folder):
    for path in (labelled_folder / "yes").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match="has no samples"):
        load_source(DataSource(name="image_folder", root=str(labelled_folder), label="abnormal"))


def test_unknown_label_and_label_on_the_control_or_pairs_are_clear_errors(labelled_folder):
    with pytest.raises(ValueError, match="label must be one of normal, abnormal"):
        load_source(DataSource(name="image_folder", root=str(labelled_folder), label="tumour"))
    with pytest.raises(ValueError, match="abnormal_fraction"):
        load_source(DataSource(name="synthetic", label="normal", options={"n": 4}))
    with pytest.raises(ValueError, match="pairs are balanced by change"):
        load_source(DataSource(name="change_pairs", root=str(labelled_folder), label="normal"))


def test_control_abnormal_fraction(labelled_folder):
    samples = load_source(DataSource(name="synthetic", options={"n": 8, "size": 32, "abnormal_fraction": 0.25}))
    assert [s.label for s in samples].count("abnormal") == 2
    with pytest.raises(ValueError, match="unknown option"):
        load_source(DataSource(name="synthetic", options={"n": 8, "fraction": 0.25}))
