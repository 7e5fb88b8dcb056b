"""Fixtures of the studies tests; the builders themselves are in ``study_builders.py`` (importable elsewhere)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_builders import BuiltSeries, write_ct_series  # noqa: E402


@pytest.fixture
def archive(tmp_path) -> tuple[Path, list[BuiltSeries]]:
    """A folder with three CT studies (two of one patient, a year apart) in nested, shuffled folders."""
    root = tmp_path / "archive"
    a = write_ct_series(root / "x" / "1", n=5, lesion=(1,), patient_id="PA", study_date="20230101", seed=1)
    b = write_ct_series(root / "x" / "2", n=5, lesion=(1, 2, 3), patient_id="PA", study_date="20240101", seed=2)
    c = write_ct_series(root / "y", n=4, lesion=(), patient_id="PB", study_date="20240505", seed=3)
    return root, [a, b, c]


@pytest.fixture
def dummy():
    from medic_ad.models.dummy import DummyModel

    return DummyModel()
